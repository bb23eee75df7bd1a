//! The store of orders as a port: every transition the engine makes on
//! an order, budget, check state or event, in one trait. The sled
//! [`Ledger`] implements it today; a second backend (PostgreSQL, issue 14)
//! implements it too and must pass the same conformance suite
//! (`conformance.rs`: one key at most one billed order, planned durable
//! before send, recovery, the cross-rule guard, budgets, refunds, events).
//!
//! Each transition is one read-modify-write of one order under its key,
//! atomic with its budget and index changes; [`Store::durable`] waits
//! until every transition made before it survives power loss.
//!
//! The methods are synchronous, as sled's are (microseconds, no network).
//! A networked backend needs them asynchronous: that is a mechanical change
//! here, in the suite and at the engine's call sites, left for the issue
//! that brings one. The engine still holds the concrete `Ledger`; moving it
//! onto this trait is the next step.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use super::{
    AttemptResult, CheckState, EventRecord, Ledger, LedgerError, Order, OrderState, PlanRequest,
    Recorded, Refusal, Settled, Settlement, Spend, Verification,
};
use crate::model::OutcomeClass;

/// A boxed future: [`Store::durable`] is the one waiting method.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything the engine needs from a store of orders.
pub trait Store: Send + Sync {
    /// Records a new order (or the next attempt of a failed one) as
    /// `planned` and holds its `max_price` against the budget; refuses a
    /// key already billed or in flight, a membership another rule has an
    /// unsettled order for, a budget that would be exceeded, and attempts
    /// past `max_attempts`.
    fn plan(&self, req: &PlanRequest, now: i64) -> Result<Result<Order, Refusal>, LedgerError>;
    /// Waits until every transition made before this call is durable.
    fn durable(&self) -> BoxFuture<'_, Result<(), LedgerError>>;
    /// `planned` → `sent`: the request is leaving.
    fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError>;
    /// Records what the vendor replied to the current attempt.
    fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: OutcomeClass,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError>;
    /// Settles the current attempt (`None` when it was already settled).
    fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError>;
    /// Settles attempt `attempt` (the current one for `None`): a repeat
    /// changes nothing, a contradiction is reported, not applied.
    fn settle_attempt(
        &self,
        key: &str,
        attempt: Option<u32>,
        now: i64,
        settlement: Settlement,
    ) -> Result<Settled, LedgerError>;
    /// An operator says an `unverified` paid order was never delivered:
    /// `failed`, its money back in the budget, retryable.
    fn refute_unverified(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError>;
    /// A `pending` order's callback did not come in time: `unknown`.
    fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError>;
    /// Sets what the membership reads said about a paid order.
    fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError>;
    /// The order key and attempt a vendor order id belongs to.
    fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<(String, Option<u32>)>, LedgerError>;
    /// Binds a vendor order id to the current attempt of `key`.
    fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError>;
    /// After a restart: `sent` becomes `unknown` (possibly paid, never
    /// re-sent), `planned` becomes retryable; returns the changed orders.
    fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError>;
    /// One order.
    fn get(&self, key: &str) -> Result<Option<Order>, LedgerError>;
    /// Every order, or those in `state`.
    fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError>;
    /// An account's orders.
    fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError>;
    /// How many orders are in each state.
    fn count_by_state(&self) -> Result<BTreeMap<OrderState, usize>, LedgerError>;
    /// What a rule has held and spent in a period (`2026-11-21`, `2026-11`).
    fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError>;
    /// Appends to the event log.
    fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError>;
    /// Drops events older than `before` (never orders); how many went.
    fn prune_events(&self, before: i64) -> Result<usize, LedgerError>;
    /// The latest `limit` events, oldest first.
    fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError>;
    /// What the last check of a pair saw and decided.
    fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError>;
    /// Stores a pair's check state.
    fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError>;
}

impl Store for Ledger {
    fn plan(&self, req: &PlanRequest, now: i64) -> Result<Result<Order, Refusal>, LedgerError> {
        Ledger::plan(self, req, now)
    }
    fn durable(&self) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(Ledger::durable(self))
    }
    fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError> {
        Ledger::mark_sent(self, key, now)
    }
    fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: OutcomeClass,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError> {
        Ledger::record_attempt(self, key, now, outcome, detail, result)
    }
    fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError> {
        Ledger::settle(self, key, now, settlement)
    }
    fn settle_attempt(
        &self,
        key: &str,
        attempt: Option<u32>,
        now: i64,
        settlement: Settlement,
    ) -> Result<Settled, LedgerError> {
        Ledger::settle_attempt(self, key, attempt, now, settlement)
    }
    fn refute_unverified(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        Ledger::refute_unverified(self, key, now, why)
    }
    fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        Ledger::callback_overdue(self, key, now, why)
    }
    fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError> {
        Ledger::set_verification(self, key, v)
    }
    fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<(String, Option<u32>)>, LedgerError> {
        Ledger::attempt_of_vendor_order(self, provider, vendor_orderid)
    }
    fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError> {
        Ledger::bind_vendor_order(self, key, vendor_orderid)
    }
    fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        Ledger::recover(self, now)
    }
    fn get(&self, key: &str) -> Result<Option<Order>, LedgerError> {
        Ledger::get(self, key)
    }
    fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError> {
        Ledger::orders(self, state)
    }
    fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        Ledger::orders_of(self, account)
    }
    fn count_by_state(&self) -> Result<BTreeMap<OrderState, usize>, LedgerError> {
        Ledger::count_by_state(self)
    }
    fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError> {
        Ledger::spend(self, rule, period)
    }
    fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError> {
        Ledger::record_event(self, ev)
    }
    fn prune_events(&self, before: i64) -> Result<usize, LedgerError> {
        Ledger::prune_events(self, before)
    }
    fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError> {
        Ledger::events(self, limit)
    }
    fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError> {
        Ledger::check_state(self, rule, account)
    }
    fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError> {
        Ledger::put_check_state(self, rule, account, state)
    }
}
