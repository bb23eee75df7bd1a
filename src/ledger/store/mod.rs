//! The store as a port: everything the engine, the admin API and the
//! plugins' `vipd.kv` need to remember, in one trait. The engine holds an
//! `Arc<dyn Store>` and never names sled. The sled [`Ledger`] implements
//! it today; a second backend (PostgreSQL) implements it too and
//! must pass the same conformance suite (`conformance/`: one key at most
//! one billed order, planned durable before send, recovery, the cross-rule
//! guard, budgets, refunds, events).
//!
//! Each order transition is one read-modify-write of one order under its
//! key, atomic with its budget and index changes; [`Store::durable`] waits
//! until every transition made before it survives power loss.
//!
//! The methods are asynchronous so that a networked backend can wait on
//! its database without blocking the runtime. sled answers in
//! microseconds without waiting, so its futures are ready at once; only
//! [`Store::durable`] and [`Store::probe`] wait (for the group commit).

use std::collections::BTreeMap;

use super::kv::{KvError, KvQuota};
use super::{
    AccountState, AttemptResult, CheckState, EventRecord, Ledger, LedgerError, Order, OrderState,
    PlanRequest, Recorded, Refusal, Settled, Settlement, Spend, StoredToken, Verification,
};
use crate::model::OutcomeClass;

/// A plugin's `vipd.kv` value: JSON.
pub type KvValue = serde_json::Value;

/// Everything vipd needs from a store.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // ---- orders ----

    /// Records a new order (or the next attempt of a failed one) as
    /// `planned` and holds its `max_price` against the budget; refuses a
    /// key already billed or in flight, a membership another rule has an
    /// unsettled order for, a budget that would be exceeded, and attempts
    /// past `max_attempts`.
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
    ) -> Result<Option<(String, Option<u32>)>, LedgerError>;
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

    // ---- holds on new orders (after a damaged store or a restore) ----

    /// Holds every new order, for `reason`: a new hold replaces the old
    /// one, and accounts released from it are held again.
    async fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError>;
    /// Why new orders for `account` are held, if they are.
    async fn held(&self, account: &str) -> Result<Option<String>, LedgerError>;
    /// Releases the hold for one account, or (`None`) entirely; returns
    /// what is still held afterwards.
    async fn release(&self, account: Option<&str>) -> Result<Option<super::Hold>, LedgerError>;

    // ---- events ----

    /// Appends to the event log.
    async fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError>;
    /// Drops events older than `before` (never orders); how many went.
    async fn prune_events(&self, before: i64) -> Result<usize, LedgerError>;
    /// The latest `limit` events, oldest first.
    async fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError>;

    // ---- what checks and accounts remember ----

    /// What the last check of a pair saw and decided.
    async fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError>;
    /// Stores a pair's check state.
    async fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError>;
    /// The account's rotated token pair, if it was ever rotated.
    async fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError>;
    /// Stores a rotated token pair (make it durable before using it).
    async fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError>;
    /// An account's credential state.
    async fn account_state(&self, account: &str) -> Result<AccountState, LedgerError>;
    /// Records an account's credential state.
    async fn put_account_state(
        &self,
        account: &str,
        state: &AccountState,
    ) -> Result<(), LedgerError>;

    // ---- plugins' vipd.kv ----

    /// The live value of a plugin's `key`, if any.
    async fn kv_get(&self, plugin: &str, key: &str, now: i64) -> Result<Option<KvValue>, KvError>;
    /// Stores `value` under `key`, for `ttl` seconds when given, within the
    /// plugin's `quota`.
    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: KvValue,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<(), KvError>;
    /// Removes `key`; whether it held a live value.
    async fn kv_del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError>;
    /// Adds `by` to the integer under `key`, atomically; the new value.
    async fn kv_incr(
        &self,
        plugin: &str,
        key: &str,
        by: i64,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<i64, KvError>;
    /// Seconds until `key` expires: `None` when absent, `Some(None)` when
    /// it never expires.
    async fn kv_ttl(
        &self,
        plugin: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<Option<i64>>, KvError>;

    // ---- health and copies ----

    /// Whether a write can be made durable now (what `/healthz` asks).
    async fn probe(&self) -> Result<(), LedgerError>;
    /// Resolves when the store has failed for good and must not be used
    /// to pay (sticky).
    async fn failed(&self) -> String;
    /// A consistent backup, in this store's own format (what
    /// `GET /api/store/backup` serves).
    async fn backup(&self) -> Result<Vec<u8>, LedgerError>;
    // ---- several nodes on one store ----

    /// Whether this node may check (rule, account) now. A store of one
    /// node: always.
    async fn claim(&self, _rule: &str, _account: &str) -> Result<bool, LedgerError> {
        Ok(true)
    }
    /// While running: what nodes that died left in flight, recovered as
    /// [`Store::recover`] does at start. A store of one node: nothing.
    async fn take_over(&self, _now: i64) -> Result<Vec<Order>, LedgerError> {
        Ok(Vec::new())
    }
    /// The nodes sharing this store. A store of one node: none.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, LedgerError> {
        Ok(Vec::new())
    }

    /// Durability work so far, for `/metrics` (zero where not counted).
    fn commits(&self) -> Commits {
        Commits::default()
    }
}

/// A node sharing the store: its lease and how many pairs it checks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub fence: i64,
    /// Seconds left on its lease (negative: ran out).
    pub lease_left: f64,
    /// The (rule, account) pairs it holds.
    pub claims: i64,
}

/// How often writers waited for durability and how many commits answered
/// them: one commit answers every wait queued before it (group commit),
/// so waits / commits is the batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commits {
    /// Waits for durability asked for.
    pub waits: u64,
    /// Commits run (sled: a flush and an fsync).
    pub commits: u64,
}

/// sled: every method but `durable`, `probe` and `failed` is ready at once.
#[async_trait::async_trait]
impl Store for Ledger {
    async fn plan(
        &self,
        req: &PlanRequest,
        now: i64,
    ) -> Result<Result<Order, Refusal>, LedgerError> {
        Ledger::plan(self, req, now)
    }
    async fn durable(&self) -> Result<(), LedgerError> {
        Ledger::durable(self).await
    }
    async fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError> {
        Ledger::mark_sent(self, key, now)
    }
    async fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: OutcomeClass,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError> {
        Ledger::record_attempt(self, key, now, outcome, detail, result)
    }
    async fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError> {
        Ledger::settle(self, key, now, settlement)
    }
    async fn settle_attempt(
        &self,
        key: &str,
        attempt: Option<u32>,
        now: i64,
        settlement: Settlement,
    ) -> Result<Settled, LedgerError> {
        Ledger::settle_attempt(self, key, attempt, now, settlement)
    }
    async fn refute_unverified(
        &self,
        key: &str,
        now: i64,
        why: &str,
    ) -> Result<Order, LedgerError> {
        Ledger::refute_unverified(self, key, now, why)
    }
    async fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        Ledger::callback_overdue(self, key, now, why)
    }
    async fn answer(
        &self,
        key: &str,
        now: i64,
        answer: &crate::ledger::Answer,
    ) -> Result<Order, LedgerError> {
        Ledger::answer(self, key, now, answer)
    }
    async fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError> {
        Ledger::set_verification(self, key, v)
    }
    async fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<(String, Option<u32>)>, LedgerError> {
        Ledger::attempt_of_vendor_order(self, provider, vendor_orderid)
    }
    async fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError> {
        Ledger::bind_vendor_order(self, key, vendor_orderid)
    }
    async fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        Ledger::recover(self, now)
    }
    async fn get(&self, key: &str) -> Result<Option<Order>, LedgerError> {
        Ledger::get(self, key)
    }
    async fn find(&self, prefix: &str) -> Result<Order, LedgerError> {
        Ledger::find(self, prefix)
    }
    async fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError> {
        Ledger::orders(self, state)
    }
    async fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        Ledger::orders_of(self, account)
    }
    async fn count_by_state(&self) -> Result<BTreeMap<OrderState, usize>, LedgerError> {
        Ledger::count_by_state(self)
    }
    async fn count_unverified(&self) -> Result<usize, LedgerError> {
        Ok(self.derived.unverified())
    }
    async fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError> {
        Ledger::spend(self, rule, period)
    }
    async fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError> {
        Ledger::hold_all(self, now, reason)
    }
    async fn held(&self, account: &str) -> Result<Option<String>, LedgerError> {
        Ledger::held(self, account)
    }
    async fn release(&self, account: Option<&str>) -> Result<Option<super::Hold>, LedgerError> {
        Ledger::release(self, account)
    }
    async fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError> {
        Ledger::record_event(self, ev)
    }
    async fn prune_events(&self, before: i64) -> Result<usize, LedgerError> {
        Ledger::prune_events(self, before)
    }
    async fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError> {
        Ledger::events(self, limit)
    }
    async fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError> {
        Ledger::check_state(self, rule, account)
    }
    async fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError> {
        Ledger::put_check_state(self, rule, account, state)
    }
    async fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError> {
        Ledger::stored_token(self, account)
    }
    async fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError> {
        Ledger::put_token(self, account, token)
    }
    async fn account_state(&self, account: &str) -> Result<AccountState, LedgerError> {
        Ledger::account_state(self, account)
    }
    async fn put_account_state(
        &self,
        account: &str,
        state: &AccountState,
    ) -> Result<(), LedgerError> {
        Ledger::put_account_state(self, account, state)
    }
    async fn kv_get(&self, plugin: &str, key: &str, now: i64) -> Result<Option<KvValue>, KvError> {
        Ledger::kv_get(self, plugin, key, now)
    }
    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: KvValue,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<(), KvError> {
        Ledger::kv_set(self, plugin, key, value, ttl, now, quota)
    }
    async fn kv_del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError> {
        Ledger::kv_del(self, plugin, key, now)
    }
    async fn kv_incr(
        &self,
        plugin: &str,
        key: &str,
        by: i64,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<i64, KvError> {
        Ledger::kv_incr(self, plugin, key, by, ttl, now, quota)
    }
    async fn kv_ttl(
        &self,
        plugin: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<Option<i64>>, KvError> {
        Ledger::kv_ttl(self, plugin, key, now)
    }
    async fn probe(&self) -> Result<(), LedgerError> {
        Ledger::probe(self).await
    }
    async fn failed(&self) -> String {
        Ledger::failed(self).await
    }
    fn commits(&self) -> Commits {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.commit_stats();
        Commits {
            waits: stats.requests.load(Relaxed),
            commits: stats.fsyncs.load(Relaxed),
        }
    }
    async fn backup(&self) -> Result<Vec<u8>, LedgerError> {
        let mut out = Vec::new();
        // A large store takes a while to copy: keep other tasks running.
        let copy = move || Ledger::backup(self, &mut out).map(|_| out);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(copy)
        } else {
            copy()
        }
    }
}
