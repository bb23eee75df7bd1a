//! Renewals that wait for a person (README "Approvals").
//!
//! The ledger plans a renewal as `awaiting_approval` when its rule's
//! budget says so (`approve_above`, `approve_when_budget_left_below`) or a
//! plugin's `before_recharge` asks (`ledger/change/approval.rs` decides;
//! `pay.rs` announces `approval_required`). From there:
//!
//! - an operator answers ([`answer`]: the CLI offline, or the admin API
//!   through [`Engine::answer_approval`], which also wakes the pair so an
//!   approved renewal is paid at once, through every guard of a plan);
//! - each check of the pair ([`Engine::watch_approvals`]) escalates as the
//!   membership's end comes within each of the rule's `escalate` steps,
//!   and when the end passes unapproved the order expires
//!   (`renewal_unapproved`), as it does, quietly, when the end moved
//!   without it.

use std::sync::Arc;
use std::time::Duration;

use super::check::log_transition;
use super::events::{Event, EventKind, record};
use super::manual::Operator;
use super::{Engine, ResolveError};
use crate::config::{Account, Config, Rule};
use crate::ledger::store::Store;
use crate::ledger::{Answer, CheckState, LedgerError, Order, OrderState};

/// Answers the order whose key starts with `key_prefix`. An approval is
/// for the price its rule's product has now: when the order was planned
/// at another, it is refused, and the next check plans it at the new
/// price for approval again.
pub async fn answer(
    store: &dyn Store,
    config: &Config,
    key_prefix: &str,
    approve: bool,
    who: Operator<'_>,
    now: i64,
) -> Result<(Order, Event), ResolveError> {
    let Operator { by, why } = who.checked()?;
    let order = store.find(key_prefix).await?;
    let answer = if approve {
        let Some(rule) = config.rule(&order.rule) else {
            return Err(ResolveError::NotResolvable(format!(
                "order {}: rule {} is no longer configured; decline it instead",
                order.key, order.rule
            )));
        };
        Answer::Approve {
            by: by.to_owned(),
            why: why.to_owned(),
            price: rule.product.max_price,
        }
    } else {
        Answer::Decline {
            by: by.to_owned(),
            why: why.to_owned(),
        }
    };
    let answered = store.answer(&order.key, now, &answer).await?;
    store.durable_order(&answered.key).await?;
    log_transition(&answered);
    let (kind, detail) = if approve {
        (
            EventKind::RenewalApproved,
            format!("approved by {by}: {why}"),
        )
    } else {
        (
            EventKind::RenewalDeclined,
            format!("declined by {by}: {why}; not paid"),
        )
    };
    let event = Event::new(kind, now, detail)
        .order(&answered)
        .said_by(by, why);
    record(store, &event).await;
    Ok((answered, event))
}

impl Engine {
    /// [`answer`], in the running daemon: plugins hear of it, and an
    /// approved renewal's pair is checked at once (its plan pays it).
    pub(crate) async fn answer_approval(
        self: &Arc<Self>,
        key_prefix: &str,
        approve: bool,
        who: Operator<'_>,
    ) -> Result<Order, ResolveError> {
        let rt = self.runtime();
        let now = self.clock.unix();
        let config = &rt.config;
        let (order, event) = answer(&**self.store(), config, key_prefix, approve, who, now).await?;
        rt.hooks.notify(event);
        if order.state == OrderState::AwaitingApproval && order.approval.is_some() {
            self.follow_up(&order.rule, &order.account, Duration::ZERO);
        }
        Ok(order)
    }

    /// Watches this pair's orders awaiting approval, at a check that read
    /// `end`: escalates as the end comes within each of the rule's steps
    /// (once each, recorded in `next`), and expires an order whose end
    /// passed unapproved (`renewal_unapproved`) or moved without it.
    /// `orders` are the account's orders when just read.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn watch_approvals(
        &self,
        rule: &Rule,
        account: &Account,
        end: Option<i64>,
        now: i64,
        orders: Option<&[Order]>,
        next_check: i64,
        prev: &CheckState,
        next: &mut CheckState,
    ) {
        let read;
        let orders = match orders {
            Some(orders) => orders,
            None => match self.store.orders_of(&account.name).await {
                Ok(orders) => {
                    read = orders;
                    &read
                }
                Err(e) => {
                    tracing::warn!(account = %account.name, error = %e, "cannot read the account's orders to watch approvals");
                    next.escalated = prev.escalated.clone();
                    return;
                }
            },
        };
        let awaiting = orders.iter().filter(|o| {
            o.state == OrderState::AwaitingApproval
                && *o.rule == *rule.name
                && o.membership == rule.membership
        });
        for order in awaiting {
            let Some(old_end) = order.observed_end else {
                // Planned for a membership that had none: no end to count
                // down to; it waits for an answer.
                continue;
            };
            if old_end <= now && old_end > order.created_at {
                let why = format!(
                    "not approved before the membership ended at {}; not paid",
                    crate::timefmt::utc(old_end)
                );
                self.expire(order, EventKind::RenewalUnapproved, why, now)
                    .await;
            } else if end.is_some_and(|e| e > old_end) {
                let why = format!(
                    "not needed: the membership's end moved to {} without it; not paid",
                    crate::timefmt::utc(end.unwrap_or_default())
                );
                self.expire(order, EventKind::OrderSettled, why, now).await;
            } else {
                self.escalate(rule, order, (old_end, now, next_check), prev, next)
                    .await;
            }
        }
    }

    /// Raises `approval_escalated` when the order's end has come within
    /// more of the rule's steps than at the last check; wakes a check at
    /// the next step when the regular one (`next_check`) comes later.
    async fn escalate(
        &self,
        rule: &Rule,
        order: &Order,
        (end, now, next_check): (i64, i64, i64),
        prev: &CheckState,
        next: &mut CheckState,
    ) {
        let left = end - now;
        let within = |left: i64| {
            rule.escalate
                .iter()
                .filter(|step| left <= step.as_secs() as i64)
                .count() as u32
        };
        let passed = within(left);
        // Steps already passed when it was planned were said by
        // `approval_required`.
        let fired = prev
            .escalated
            .as_ref()
            .filter(|(key, _)| *key == order.key)
            .map_or(0, |(_, n)| *n)
            .max(within(end - order.created_at));
        next.escalated = Some((order.key.clone(), passed.max(fired)));
        if passed > fired {
            let step = rule.escalate[passed as usize - 1];
            let mut ev = Event::new(
                EventKind::ApprovalEscalated,
                now,
                format!(
                    "still awaits approval and the membership ends {} ({}), within {}: approve or decline `vipd orders approve {} --reason …`",
                    crate::timefmt::relative(left),
                    crate::timefmt::utc(end),
                    crate::units::HumanDuration(step),
                    order.key
                ),
            )
            .order(order);
            ev.reason = Some(format!(
                "within {} of the end",
                crate::units::HumanDuration(step)
            ));
            self.emit(ev).await;
        }
        // The next step's moment, when it comes before the next check.
        if let Some(step) = rule.escalate.get(passed as usize) {
            let moment = end - step.as_secs() as i64;
            if moment > now && moment < next_check {
                let delay = Duration::from_secs((moment - now) as u64);
                self.follow_up(&rule.name, &order.account, delay);
            }
        }
    }

    /// The order is not paid after all: `failed`, its money released.
    async fn expire(&self, order: &Order, kind: EventKind, why: String, now: i64) {
        let expired = match self
            .store
            .answer(&order.key, now, &Answer::Expire { why: why.clone() })
            .await
        {
            Ok(o) => o,
            // Answered meanwhile (an approval on another node, say): the
            // next check sees what it became.
            Err(LedgerError::Refused { why, .. }) => {
                tracing::info!(order = %order.key, "not expired: {why}");
                return;
            }
            Err(e) => {
                tracing::error!(order = %order.key, error = %e, "cannot expire the order awaiting approval");
                return;
            }
        };
        if let Err(e) = self.store.durable_order(&expired.key).await {
            tracing::warn!(order = %expired.key, error = %e, "the expired order is not yet on disk");
        }
        log_transition(&expired);
        self.emit(Event::new(kind, now, why).order(&expired)).await;
    }
}
