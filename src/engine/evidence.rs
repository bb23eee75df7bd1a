//! Evidence: what a membership read says about open and paid orders. An
//! end that moved past what the order expects settles it (and verifies
//! a paid one); a paid order whose end never moves is `unverified` by its
//! deadline, alerted, and never paid again on its own.

use std::time::Duration;

use super::check::{callback_within, log_transition};
use super::decide::{self, Verdict};
use super::events::{Event, EventKind};
use super::{Engine, Runtime};
use crate::config::Account;
use crate::ledger::{LedgerError, Order, OrderState, Settlement, Verification};
use crate::model::Membership;

impl Engine {
    /// Settles or verifies this account's open orders for `membership`
    /// with the end just read: evidence that a renewal happened. The
    /// account's orders as read, when the evidence changed none of them
    /// (the decision that follows weighs them without reading again).
    pub(super) async fn settle_by_evidence(
        &self,
        rt: &Runtime,
        account: &Account,
        membership: Membership,
        end: Option<i64>,
        now: i64,
    ) -> Result<Option<Vec<Order>>, LedgerError> {
        let orders = self.store.orders_of(&account.name).await?;
        let mut changed = false;
        for order in &orders {
            if order.membership != membership
                || matches!(
                    order.state,
                    OrderState::Planned | OrderState::Sent | OrderState::Failed
                )
            {
                continue;
            }
            let Some(product) = rt.config.products.get(&order.product) else {
                continue;
            };
            let expected = decide::expected_end(
                order.observed_end,
                order.created_at,
                product.adds.as_secs() as i64,
            );
            let moved = end.is_some_and(|e| e >= expected);
            let verify_within = rt.config.verify_within(&order.rule).as_secs() as i64;
            let within = callback_within(rt, &order.provider);
            let verdict = decide::evidence(
                order.state,
                &order.verification,
                moved,
                order.updated_at,
                now,
                within,
            );
            changed |= !matches!(verdict, Verdict::Nothing);
            match verdict {
                Verdict::Paid => {
                    let why = format!(
                        "evidence: {membership} end moved to {} (expected at least {})",
                        crate::timefmt::utc(end.unwrap_or(0)),
                        crate::timefmt::utc(expected)
                    );
                    if let Some(o) = self
                        .store
                        .settle(
                            &order.key,
                            now,
                            Settlement::Paid {
                                price: None,
                                verify_deadline: now + verify_within,
                                why: why.clone(),
                            },
                        )
                        .await?
                    {
                        self.emit(
                            Event::new(EventKind::OrderSettled, now, format!("succeeded by {why}"))
                                .order(&o),
                        )
                        .await;
                        self.verified(&o, end.unwrap_or(0), now).await?;
                    }
                }
                Verdict::CallbackOverdue => {
                    let why = format!(
                        "no callback within {} (callback.within) and {membership} still ends {}; possibly paid, not re-sending",
                        crate::units::HumanDuration(Duration::from_secs(within as u64)),
                        end.map_or("never".into(), crate::timefmt::utc),
                    );
                    let o = self.store.callback_overdue(&order.key, now, &why).await?;
                    log_transition(&o);
                    self.emit(
                        Event::new(
                            EventKind::OrderUnknown,
                            now,
                            format!(
                                "{why}; resolve by evidence or `vipd orders resolve {}`",
                                o.key
                            ),
                        )
                        .order(&o),
                    )
                    .await;
                }
                Verdict::Verified => self.verified(order, end.unwrap_or(0), now).await?,
                Verdict::Unverified => {
                    self.store
                        .set_verification(&order.key, Verification::Unverified { at: now })
                        .await?;
                    let mut ev = Event::new(
                        EventKind::RenewalUnverified,
                        now,
                        format!(
                            "paid, but {membership} still ends {} (expected at least {}); not paying again",
                            end.map_or("never".into(), crate::timefmt::utc),
                            crate::timefmt::utc(expected),
                        ),
                    )
                    .order(order);
                    ev.new_end = end;
                    self.emit(ev).await;
                }
                Verdict::Nothing => {}
            }
        }
        Ok((!changed).then_some(orders))
    }

    async fn verified(&self, order: &Order, new_end: i64, now: i64) -> Result<(), LedgerError> {
        self.store
            .set_verification(&order.key, Verification::Verified { at: now, new_end })
            .await?;
        let mut ev = Event::new(
            EventKind::RenewalVerified,
            now,
            format!(
                "{} now ends {}",
                order.membership,
                crate::timefmt::utc(new_end),
            ),
        )
        .order(order);
        ev.new_end = Some(new_end);
        ev.state = Some(OrderState::Succeeded.as_str().to_owned());
        self.emit(ev).await;
        Ok(())
    }
}
