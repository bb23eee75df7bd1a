//! Planning an order: the one place a payment is decided to be allowed,
//! under the key, budget and cross-rule guards.

use super::*;

impl Ledger {
    /// Plans an order: checks the key and the budget, holds `max_price`,
    /// and writes the `planned` record, atomically. The caller must await
    /// [`Ledger::durable`] before sending.
    pub fn plan(&self, req: &PlanRequest, now: i64) -> Result<Result<Order, Refusal>, LedgerError> {
        let _guard = self.lock();
        if let Some(why) = self.held(&req.account)? {
            return Ok(Err(Refusal::Held { why }));
        }
        let existing = self.get(&req.key)?;
        if let Some(o) = &existing {
            if o.state == OrderState::Failed && o.attempts >= req.max_attempts {
                return Ok(Err(Refusal::MaxAttempts {
                    attempts: o.attempts,
                }));
            }
            if !o.may_retry(now, req.max_attempts) {
                return Ok(Err(Refusal::Exists {
                    state: o.state,
                    why: o.last_why().to_owned(),
                }));
            }
        }
        // One period, one payment, across rules too: while another order
        // for this account and membership may have paid (open, or paid and
        // not yet showing), a second key must not pay. This covers two
        // rules over one account, and a manual recharge racing a rule.
        for other in self.orders_of(&req.account)? {
            if other.key != req.key
                && other.membership == req.membership
                && change::unsettled(&other)
            {
                return Ok(Err(Refusal::Exists {
                    state: other.state,
                    why: format!(
                        "order {} (rule {}) for {} {} is not settled and shown yet",
                        other.key, other.rule, req.account, req.membership
                    ),
                }));
            }
        }
        let day = self.derived.spend(&req.rule, &req.day);
        let month = self.derived.spend(&req.rule, &req.month);
        for (period, spend, cap) in [
            (&req.day, day, req.budget.per_day),
            (&req.month, month, req.budget.per_month),
        ] {
            if let Some(cap) = cap {
                if spend.used().0 + req.max_price.0 > cap.0 {
                    return Ok(Err(Refusal::Budget {
                        period: period.clone(),
                        cap,
                        used: spend.used(),
                        price: req.max_price,
                    }));
                }
            }
        }
        let was = existing.as_ref().map(Share::of);
        let (mut order, added) = change::next_attempt(existing, req, now);
        order.stamp_from(added, self.clock.unix_ms());
        self.write_order(was.as_ref(), &order)?;
        Ok(Ok(order))
    }
}
