//! Manual orders (`vipd recharge`, `POST /api/recharge`, `vipd.recharge`):
//! an operator's payment, on its own terms (`Terms::manual`) and through
//! the same steps and guards as a rule's.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use super::decide::Decision;
use super::terms::Terms;

impl Engine {
    /// One manual renewal (`vipd recharge`) under the rule name `manual`:
    /// the same ledger key rules, provider gate and guards as the daemon,
    /// without a budget (an operator is spending on purpose).
    pub async fn manual_recharge(
        self: &Arc<Self>,
        account: &str,
        product: &str,
        dry_run: bool,
    ) -> Result<String, String> {
        let rt = self.runtime();
        let acct = rt
            .config
            .account(account)
            .ok_or_else(|| format!("no account named {account}"))?;
        let prod = rt
            .config
            .products
            .get(product)
            .ok_or_else(|| format!("no product named {product}"))?;
        let terms = Terms::manual(&rt.config, prod);
        let end = self
            .read(&rt, acct)
            .await
            .map_err(|e| format!("cannot read memberships: {e}"))?
            .end(prod.extends);
        let now = self.clock.unix();
        let decision = self
            .decide_now(&rt, &terms, acct, prod, end, now)
            .await
            .map_err(|e| e.to_string())?;
        let Decision::Renew { .. } = decision else {
            return Err(format!("not renewing: {}", decision.describe()));
        };
        // The rule's own words would name its stand-in window.
        let why = match end {
            Some(end) if end > now => format!(
                "{} ends {}",
                prod.extends,
                crate::timefmt::relative(end - now)
            ),
            Some(end) => format!(
                "{} lapsed {}",
                prod.extends,
                crate::timefmt::relative(end - now)
            ),
            None => format!("no {} membership", prod.extends),
        };
        if dry_run || self.dry_run {
            return Ok(format!(
                "dry run: would renew {} for {account} with {product} ({why})",
                prod.extends
            ));
        }
        match self
            .renew(&rt, &terms, acct, prod, end, format!("manual: {why}"))
            .await
        {
            Some(o) => {
                // No rule checks manual orders: follow this one up until
                // it is settled and verified (see `check_manual`).
                self.follow_up(super::MANUAL_RULE, &acct.name, Duration::from_secs(1));
                Ok(format!("order {} {}: {}", o.key, o.state, o.last_why()))
            }
            None => Err("not paid; see the log for why".into()),
        }
    }
}
