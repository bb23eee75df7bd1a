//! An order's transitions after it is planned, in sled: each reads the
//! order under the write lock, applies its change (`change.rs`, the same
//! for every store) and writes the order alone. What each does to the
//! budget is what its attempts say (see `derived.rs`).

use super::*;
use crate::model::OutcomeClass;

impl Ledger {
    /// Reads, changes and writes one order, under the write lock. Its
    /// budget effects and vendor ids follow from the order itself (see
    /// `derived.rs`), so this is one insert, never a batch.
    fn modify<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut Order) -> Result<R, LedgerError>,
    ) -> Result<(Order, R), LedgerError> {
        let _guard = self.lock();
        let mut order = self
            .get(key)?
            .ok_or_else(|| LedgerError::NotFound(key.to_owned()))?;
        let was = Share::of(&order);
        let r = change::apply(&mut order, self.clock.unix_ms(), f)?;
        self.write_order(Some(&was), &order)?;
        Ok((order, r))
    }

    /// `planned` → `sent`, just before the request leaves. The caller must
    /// await [`Ledger::durable`] before sending: after a crash, `sent`
    /// means "may have left" and becomes `unknown`.
    pub fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError> {
        self.modify(key, |o| change::mark_sent(o, now))
            .map(|(o, ())| o)
    }

    /// Records what the current attempt's reply means.
    ///
    /// The attempt must be `sent`. The order follows it while the order is
    /// `sent` too; if a callback for an earlier attempt settled the order
    /// meanwhile (the vendor billed that one after all), only the attempt
    /// is recorded, and a billed reply is counted as a second payment.
    pub fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: OutcomeClass,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError> {
        self.modify(key, |o| {
            change::record_reply(o, now, outcome, detail, result)
        })
        .map(|(order, conflict)| Recorded { order, conflict })
    }

    /// Settles the current attempt by evidence (the membership end moved)
    /// or an operator. Returns `None` (and changes nothing) when the order
    /// was already settled.
    pub fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError> {
        Ok(self.settle_attempt(key, None, now, settlement)?.changed())
    }

    /// Settles one attempt of an order: `attempt` names it (a callback
    /// names it through the vendor's order id), `None` means the current
    /// one.
    ///
    /// - A payment for an attempt already paid, or a refusal for one
    ///   already not paid, is a repeat: nothing changes.
    /// - A payment is always recorded and counted in the budget, whatever
    ///   the order's state: money the vendor took is money spent. When the
    ///   ledger had that attempt as not paid, or another attempt is paid
    ///   too, the result says so ([`Settled::Changed::conflict`]).
    /// - A refusal changes the order only when it names the current
    ///   attempt of an open order; for an earlier attempt it is recorded
    ///   on that attempt alone. A refusal for a paid attempt is a
    ///   contradiction: nothing changes, and the caller alerts.
    pub fn settle_attempt(
        &self,
        key: &str,
        attempt: Option<u32>,
        now: i64,
        settlement: Settlement,
    ) -> Result<Settled, LedgerError> {
        let (order, result) = self.modify(key, |o| {
            change::settle_attempt(o, attempt, now, &settlement)
        })?;
        Ok(Settled::of(order, result))
    }

    /// An operator says a paid order whose renewal never showed was in
    /// fact not delivered: it becomes `failed`, its spending is refunded to
    /// the budget, and its key may be retried. Only for `unverified` orders.
    pub fn refute_unverified(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        self.modify(key, |o| change::refute(o, now, why))
            .map(|(o, ())| o)
    }

    /// A `pending` order whose callback did not come in time becomes
    /// `unknown`: possibly paid (its money stays counted), never re-sent,
    /// resolved by evidence, a late callback, or an operator.
    pub fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        self.modify(key, |o| change::callback_overdue(o, now, why))
            .map(|(o, ())| o)
    }

    /// Answers an order awaiting approval (see [`OrderStore::answer`](super::store::OrderStore::answer)).
    pub fn answer(&self, key: &str, now: i64, answer: &Answer) -> Result<Order, LedgerError> {
        self.modify(key, |o| change::answer(o, now, answer))
            .map(|(o, ())| o)
    }

    /// Records the verification of a paid order.
    pub fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError> {
        self.modify(key, |o| {
            o.verification = v;
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// The attempt a vendor order id names: `(key, attempt)`. Orders
    /// written before attempts were recorded name only the key; it stands
    /// for the order's current attempt.
    pub fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<VendorOrder>, LedgerError> {
        Ok(self.derived.vendor_order(provider, vendor_orderid))
    }

    /// Binds a vendor order id to the current attempt of `key` (a callback
    /// matched by its target, whose reply was lost), so that the same
    /// callback delivered again finds the same attempt.
    pub fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError> {
        self.modify(key, |o| Ok(change::bind_vendor_order(o, vendor_orderid)))
            .map(|(_, n)| n)
    }

    /// Start-up recovery: `sent` orders may have left, so they become
    /// `unknown`; `planned` orders never left, so they become `failed` and
    /// may be retried at once. Returns the orders changed.
    pub fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        let mut changed = Vec::new();
        for o in self.orders(None)? {
            if matches!(o.state, OrderState::Sent | OrderState::Planned) {
                let (o, ()) = self.modify(&o.key, |o| {
                    change::recover(o, now);
                    Ok(())
                })?;
                changed.push(o);
            }
        }
        Ok(changed)
    }
}
