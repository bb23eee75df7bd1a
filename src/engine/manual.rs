//! Manual orders (`vipd recharge`, `POST /api/recharge`, `vipd.recharge`):
//! an operator's payment, on its own terms (`Terms::manual`) and through
//! the same steps and guards as a rule's.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use super::decide::Decision;
use super::terms::{Decided, Terms};
use crate::config::Product;
use crate::ledger::LedgerError;
use crate::units::HumanDuration;
use crate::upstream::vipinfo::VipInfoError;

/// Why a manual order was not paid. Callers branch on it: the admin API
/// answers 404 for a name it does not know, 502 when the vendor could not
/// be read, 503 when the store failed, 409 when nothing was due or paid,
/// 422 when no reason was given.
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
    /// The membership is not due (or, asked `ahead`, more than one period
    /// from due): says when it will be.
    #[error("not due: {0}")]
    NotDue(String),
    #[error("not renewing: {0}")]
    NotRenewing(String),
    #[error("not paid; see the log for why")]
    NotPaid,
    /// Asked without a reason.
    #[error("{0}")]
    NoReason(String),
}

/// Who makes a manual write (resolve, approve, decline, recharge,
/// release, restore) and why, as recorded with it: the admin token's name
/// or the Unix user, and their reason, which money-moving writes require.
#[derive(Debug, Clone, Copy)]
pub struct Operator<'a> {
    pub by: &'a str,
    pub why: &'a str,
}

impl<'a> Operator<'a> {
    /// Itself with its reason trimmed, or why it cannot write: no reason.
    pub fn checked(self) -> Result<Operator<'a>, super::ResolveError> {
        let why = self.why.trim();
        if why.is_empty() {
            return Err(super::ResolveError::NotResolvable(
                "a reason is required (`--reason TEXT`, or `reason` in the request)".into(),
            ));
        }
        Ok(Operator { by: self.by, why })
    }
}

/// One manual order, as the CLI, the admin API or a plugin asks for it.
#[derive(Debug, Clone, Copy)]
pub struct ManualOrder<'a> {
    pub account: &'a str,
    pub product: &'a str,
    /// Decide and say, never pay.
    pub dry_run: bool,
    /// Pay before the membership is due: at most one period (the
    /// product's `adds`) before it would be.
    pub ahead: bool,
    /// Who asks, and why (recorded in the order's history).
    pub who: Operator<'a>,
}

impl Engine {
    /// One manual renewal (`vipd recharge`) under the rule name `manual`:
    /// the same ledger key rules, provider gate and guards as the daemon,
    /// under the `manual.budget` caps. A membership that is not due is
    /// refused unless the order is `ahead`, and then only within one
    /// period of due: an order repeated in a loop pays once, never a
    /// period after period.
    pub async fn manual_recharge(
        self: &Arc<Self>,
        order: ManualOrder<'_>,
    ) -> Result<String, ManualError> {
        let ManualOrder {
            account,
            product,
            dry_run,
            ahead,
            who,
        } = order;
        let Operator { by, why: reason } = who
            .checked()
            .map_err(|e| ManualError::NoReason(e.to_string()))?;
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
        let due = rt.config.manual_window(account, prod.extends);
        let terms = Terms::manual(&rt.config, prod, due, ahead);
        let end = self.read(&rt, acct).await?.end(prod.extends);
        let read_at = tokio::time::Instant::now();
        let now = self.clock.unix();
        let decision = self
            .decide_now(&rt, &terms, acct, prod, end, now, None)
            .await?;
        if let Decision::NotDue { .. } = decision {
            return Err(ManualError::NotDue(not_due(
                prod,
                end.unwrap_or(now),
                now,
                due,
                ahead,
            )));
        }
        let Decision::Renew { .. } = decision else {
            return Err(ManualError::NotRenewing(decision.describe()));
        };
        // The rule's own words would name its stand-in window.
        let why = match end {
            Some(end) if end > now => format!(
                "{} ends {}{}",
                prod.extends,
                crate::timefmt::relative(end - now),
                if ahead { ", paid ahead" } else { "" }
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
                    why: format!("manual, by {by}: {reason}; {why}"),
                    check_slot: None,
                    read_at,
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

/// Why a manual order for a membership ending at `end` is refused, and
/// when it would be taken: due within `due` of the end, or one period
/// earlier when asked `ahead`.
fn not_due(prod: &Product, end: i64, now: i64, due: Duration, ahead: bool) -> String {
    let due_at = end - due.as_secs() as i64;
    let ahead_at = due_at - prod.adds.as_secs() as i64;
    let ends = format!(
        "{} ends {}",
        prod.extends,
        crate::timefmt::relative(end - now)
    );
    let window = format!("renew_before {}", HumanDuration(due));
    let period = HumanDuration(prod.adds);
    if ahead {
        format!(
            "{ends}, more than one period ahead: `ahead` pays at most one period ({period}) \
             before due, from {}; due at {} ({window})",
            crate::timefmt::utc(ahead_at),
            crate::timefmt::utc(due_at),
        )
    } else {
        format!(
            "{ends}; due at {} ({window}); to pay before then, ask ahead \
             (`vipd recharge --ahead`, {{\"ahead\": true}}, `ahead = true` in Lua): \
             at most one period ({period}) early, from {}",
            crate::timefmt::utc(due_at),
            crate::timefmt::utc(ahead_at),
        )
    }
}

/// Releases held orders (`vipd store release`, the admin API), for one
/// account or (`None`) all, recorded in the event log as
/// `store_released` with who and why. Returns what stays held.
pub async fn release(
    store: &dyn crate::ledger::store::Store,
    account: Option<&str>,
    who: Operator<'_>,
    now: i64,
) -> Result<Option<crate::ledger::Hold>, super::ResolveError> {
    let Operator { by, why } = who.checked()?;
    let left = store.release(account).await?;
    let what = match account {
        Some(a) => format!("new orders for {a} released"),
        None => "every held order released".to_owned(),
    };
    tracing::warn!(account, by, "{what}: {why}");
    let record = crate::ledger::EventRecord {
        at: now,
        kind: "store_released".into(),
        account: account.map(str::to_owned),
        rule: None,
        key: None,
        detail: format!("{what} by {by}: {why}"),
    };
    store.record_event(&record).await?;
    store.durable().await?;
    Ok(left)
}
