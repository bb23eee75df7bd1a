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
        if let Some(refusal) = existing
            .as_ref()
            .and_then(|o| change::refuses_retry(o, req, now))
        {
            return Ok(Err(refusal));
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
        let own = |period: &str| {
            let spend = self.derived.spend(&req.rule, period);
            change::without_own_hold(existing.as_ref(), period, spend)
        };
        let (day, month) = (own(&req.day), own(&req.month));
        if let Some(refusal) = change::over_budget(req, day, month) {
            return Ok(Err(refusal));
        }
        let approval = change::needs_approval(existing.as_ref(), req, day, month);
        let was = existing.as_ref().map(Share::of);
        let (mut order, added) = change::next_attempt(existing, req, now, approval);
        order.stamp_from(added, self.clock.unix_ms());
        self.write_order(was.as_ref(), &order)?;
        Ok(Ok(order))
    }
}
