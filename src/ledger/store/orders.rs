//! Orders and their transitions: the role that moves money. Each
//! transition is one read-modify-write of one order under its key, atomic
//! with its budget and index changes; [`OrderStore::durable`] waits until
//! every transition made before it survives power loss. Holds on new
//! orders (after a damaged store was accepted or a backup restored) live
//! here too: the plan is what they stop.

use std::collections::BTreeMap;

use crate::ledger::{
    AttemptResult, Hold, Ledger, LedgerError, Order, OrderState, PlanRequest, Recorded, Refusal,
    Settled, Settlement, Spend, VendorOrder, Verification,
};
use crate::model::OutcomeClass;

/// Orders, their transitions and the budget they hold.
#[async_trait::async_trait]
pub trait OrderStore: Send + Sync {
    /// Records a new order (or the next attempt of a failed one) as
    /// `planned` and holds its `max_price` against the budget; refuses a
    /// key already billed or in flight, a membership another rule has an
    /// unsettled order for, a budget that would be exceeded, and attempts
    /// past `max_attempts`. Two answers of two kinds: the outer error is
    /// the store failing (nothing is known to be written); the inner
    /// [`Refusal`] is a guard saying no (nothing written, and asking again
    /// will not change it until the world does).
    async fn plan(
        &self,
        req: &PlanRequest,
        now: i64,
    ) -> Result<Result<Order, Refusal>, LedgerError>;
    /// Waits until every write made before this call is durable.
    async fn durable(&self) -> Result<(), LedgerError>;
    /// Waits until every write of the order `key` made before this call
    /// (its plan among them) is durable; other orders' writes may not be
    /// yet. The paying path's wait: a store that can tell one order's
    /// writes from the others' (PostgreSQL) spares it waiting for them.
    async fn durable_order(&self, _key: &str) -> Result<(), LedgerError> {
        self.durable().await
    }
    /// `planned` → `sent`: the request is leaving.
    async fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError>;
    /// Records what the vendor replied to the current attempt.
    async fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: OutcomeClass,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError>;
    /// Settles the current attempt (`None` when it was already settled).
    async fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError>;
    /// Settles attempt `attempt` (the current one for `None`): a repeat
    /// changes nothing, a contradiction is reported, not applied.
    async fn settle_attempt(
        &self,
        key: &str,
        attempt: Option<u32>,
        now: i64,
        settlement: Settlement,
    ) -> Result<Settled, LedgerError>;
    /// An operator says an `unverified` paid order was never delivered:
    /// `failed`, its money back in the budget, retryable.
    async fn refute_unverified(&self, key: &str, now: i64, why: &str)
    -> Result<Order, LedgerError>;
    /// A `pending` order's callback did not come in time: `unknown`.
    async fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError>;
    /// Answers an order awaiting approval: approved (paid at the next
    /// plan under its key), declined or expired (`failed`, its money back
    /// in the budget, never retried). [`LedgerError::Refused`] when it
    /// cannot take the answer; then nothing changed.
    async fn answer(
        &self,
        key: &str,
        now: i64,
        answer: &crate::ledger::Answer,
    ) -> Result<Order, LedgerError>;
    /// Sets what the membership reads said about a paid order.
    async fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError>;
    /// The order key and attempt a vendor order id belongs to.
    async fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<VendorOrder>, LedgerError>;
    /// Binds a vendor order id to the current attempt of `key`.
    async fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError>;
    /// After a restart: `sent` becomes `unknown` (possibly paid, never
    /// re-sent), `planned` becomes retryable; returns the changed orders.
    async fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError>;
    /// One order.
    async fn get(&self, key: &str) -> Result<Option<Order>, LedgerError>;
    /// The order whose key starts with `prefix`, if exactly one does.
    async fn find(&self, prefix: &str) -> Result<Order, LedgerError>;
    /// Every order, or those in `state`.
    async fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError>;
    /// An account's orders.
    async fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError>;
    /// How many orders are in each state.
    async fn count_by_state(&self) -> Result<BTreeMap<OrderState, usize>, LedgerError>;
    /// How many paid orders never showed their renewal (verification
    /// `unverified`).
    async fn count_unverified(&self) -> Result<usize, LedgerError>;
    /// What a rule has held and spent in a period (`2026-11-21`, `2026-11`).
    async fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError>;
    /// Holds every new order, for `reason`: a new hold replaces the old
    /// one, and accounts released from it are held again.
    async fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError>;
    /// Why new orders for `account` are held, if they are.
    async fn held(&self, account: &str) -> Result<Option<String>, LedgerError>;
    /// Releases the hold for one account, or (`None`) entirely; returns
    /// what is still held afterwards.
    async fn release(&self, account: Option<&str>) -> Result<Option<Hold>, LedgerError>;
}

// sled's answers are ready at once, but for the waits on its group commit.
sled_at_once! {
    OrderStore {
        fn plan(&self, req: &PlanRequest, now: i64) -> Result<Result<Order, Refusal>, LedgerError>;
        fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError>;
        fn record_attempt(&self, key: &str, now: i64, outcome: OutcomeClass, detail: &str, result: AttemptResult) -> Result<Recorded, LedgerError>;
        fn settle(&self, key: &str, now: i64, settlement: Settlement) -> Result<Option<Order>, LedgerError>;
        fn settle_attempt(&self, key: &str, attempt: Option<u32>, now: i64, settlement: Settlement) -> Result<Settled, LedgerError>;
        fn refute_unverified(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError>;
        fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError>;
        fn answer(&self, key: &str, now: i64, answer: &crate::ledger::Answer) -> Result<Order, LedgerError>;
        fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError>;
        fn attempt_of_vendor_order(&self, provider: &str, vendor_orderid: &str) -> Result<Option<VendorOrder>, LedgerError>;
        fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError>;
        fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError>;
        fn get(&self, key: &str) -> Result<Option<Order>, LedgerError>;
        fn find(&self, prefix: &str) -> Result<Order, LedgerError>;
        fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError>;
        fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError>;
        fn count_by_state(&self) -> Result<BTreeMap<OrderState, usize>, LedgerError>;
        fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError>;
        fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError>;
        fn held(&self, account: &str) -> Result<Option<String>, LedgerError>;
        fn release(&self, account: Option<&str>) -> Result<Option<Hold>, LedgerError>;
    }
    async fn durable(&self) -> Result<(), LedgerError> {
        Ledger::durable(self).await
    }
    async fn count_unverified(&self) -> Result<usize, LedgerError> {
        Ok(self.derived.unverified())
    }
}
