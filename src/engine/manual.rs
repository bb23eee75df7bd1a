//! Manual orders (`vipd recharge`, `POST /api/recharge`, `vipd.recharge`):
//! an operator's payment, on its own terms (`Terms::manual`) and through
//! the same steps and guards as a rule's.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use super::decide::Decision;
use super::terms::{Decided, Terms};
use crate::ledger::LedgerError;
use crate::upstream::vipinfo::VipInfoError;

/// Why a manual order was not paid. Callers branch on it: the admin API
/// answers 404 for a name it does not know, 502 when the vendor could not
/// be read, 503 when the store failed, 409 when nothing was due or paid.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("no account named {0}")]
    NoAccount(String),
    #[error("no product named {0}")]
    NoProduct(String),
    #[error("cannot read memberships: {0}")]
    Read(#[from] VipInfoError),
    #[error(transparent)]
    Store(#[from] LedgerError),
    #[error("not renewing: {0}")]
    NotRenewing(String),
    #[error("not paid; see the log for why")]
    NotPaid,
}

impl Engine {
    /// One manual renewal (`vipd recharge`) under the rule name `manual`:
    /// the same ledger key rules, provider gate and guards as the daemon,
    /// without a budget (an operator is spending on purpose).
    pub async fn manual_recharge(
        self: &Arc<Self>,
        account: &str,
        product: &str,
        dry_run: bool,
    ) -> Result<String, ManualError> {
        let rt = self.runtime();
        let acct = rt
            .config
            .account(account)
            .ok_or_else(|| ManualError::NoAccount(account.to_owned()))?;
        let prod = rt
            .config
            .products
            .get(product)
            .ok_or_else(|| ManualError::NoProduct(product.to_owned()))?;
        let terms = Terms::manual(&rt.config, prod);
        let end = self.read(&rt, acct).await?.end(prod.extends);
        let now = self.clock.unix();
        let decision = self.decide_now(&rt, &terms, acct, prod, end, now).await?;
        let Decision::Renew { .. } = decision else {
            return Err(ManualError::NotRenewing(decision.describe()));
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
            .renew(
                &rt,
                &terms,
                acct,
                prod,
                Decided {
                    observed_end: end,
                    why: format!("manual: {why}"),
                    check_slot: None,
                },
            )
            .await
        {
            Some(o) => {
                // No rule checks manual orders: follow this one up until
                // it is settled and verified (see `check_manual`).
                self.follow_up(super::MANUAL_RULE, &acct.name, Duration::from_secs(1));
                Ok(format!("order {} {}: {}", o.key, o.state, o.last_why()))
            }
            None => Err(ManualError::NotPaid),
        }
    }
}
