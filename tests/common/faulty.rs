//! A store that fails when a test says so: the sled ledger behind the
//! `Store` port, with its durability waits made to fail from the `n`th
//! (a disk that fills or an `fsync` that errors, at a chosen moment), and
//! its reads of orders (`get`, `orders_of`) made to fail while a test
//! says so.
//! Everything else is the ledger's own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vipd::ledger::kv::{KvError, KvQuota, Ttl};
use vipd::ledger::store::{KvStore, KvValue, NodeStore, OrderStore, RecordStore};
use vipd::ledger::{
    AccountState, Answer, AttemptResult, CheckState, EventRecord, Hold, Ledger, LedgerError, Order,
    OrderState, PlanRequest, Recorded, Refusal, Settled, Settlement, Spend, StoredToken,
    VendorOrder, Verification,
};
use vipd::model::OutcomeClass;

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<Ledger>,
    /// Durability waits so far.
    durables: AtomicUsize,
    /// Waits from this one on (1-based) fail.
    fail_from: usize,
    /// Whether reads of orders fail now.
    reads_fail: AtomicBool,
}

impl FaultyStore {
    /// `inner`, whose `fail_from`th durability wait and every later one
    /// fail.
    pub fn new(inner: Arc<Ledger>, fail_from: usize) -> FaultyStore {
        FaultyStore {
            inner,
            durables: AtomicUsize::new(0),
            fail_from,
            reads_fail: AtomicBool::new(false),
        }
    }

    /// From now on, reads of orders fail (`true`) or work (`false`).
    pub fn fail_reads(&self, fail: bool) {
        self.reads_fail.store(fail, Ordering::SeqCst);
    }

    fn read_fault(&self) -> Result<(), LedgerError> {
        match self.reads_fail.load(Ordering::SeqCst) {
            true => Err(LedgerError::Unavailable("read failed (test fault)".into())),
            false => Ok(()),
        }
    }

    /// How many durability waits were asked for.
    pub fn durables(&self) -> usize {
        self.durables.load(Ordering::SeqCst)
    }
}

impl FaultyStore {
    async fn durable_or_fault(&self) -> Result<(), LedgerError> {
        let n = self.durables.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.fail_from {
            return Err(LedgerError::NotDurable(format!(
                "fsync failed (test fault at wait {n})"
            )));
        }
        OrderStore::durable(&*self.inner).await
    }
}

/// Forwards a role's methods to the ledger unchanged. (One macro makes
/// the whole impl, so that `async_trait` sees every method.)
macro_rules! forward {
    ($role:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $out:ty;)* } $($own:item)*) => {
        #[async_trait::async_trait]
        impl $role for FaultyStore {
            $($own)*
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $out {
                    $role::$name(&*self.inner $(, $arg)*).await
                }
            )*
        }
    };
}

// Orders: `durable` may fail, and reads of orders while a test says so.
forward! {
    OrderStore {
        fn plan(&self, req: &PlanRequest, now: i64) -> Result<Result<Order, Refusal>, LedgerError>;
        fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError>;
        fn record_attempt(&self, key: &str, now: i64, outcome: OutcomeClass, detail: &str, result: AttemptResult) -> Result<Recorded, LedgerError>;
        fn settle(&self, key: &str, now: i64, settlement: Settlement) -> Result<Option<Order>, LedgerError>;
        fn settle_attempt(&self, key: &str, attempt: Option<u32>, now: i64, settlement: Settlement) -> Result<Settled, LedgerError>;
        fn refute_unverified(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError>;
        fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError>;
        fn answer(&self, key: &str, now: i64, answer: &Answer) -> Result<Order, LedgerError>;
        fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError>;
        fn attempt_of_vendor_order(&self, provider: &str, vendor_orderid: &str) -> Result<Option<VendorOrder>, LedgerError>;
        fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError>;
        fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError>;
        fn find(&self, prefix: &str) -> Result<Order, LedgerError>;
        fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError>;
        fn count_by_state(&self) -> Result<BTreeMap<OrderState, usize>, LedgerError>;
        fn count_unverified(&self) -> Result<usize, LedgerError>;
        fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError>;
        fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError>;
        fn held(&self, account: &str) -> Result<Option<String>, LedgerError>;
        fn release(&self, account: Option<&str>) -> Result<Option<Hold>, LedgerError>;
    }
    async fn durable(&self) -> Result<(), LedgerError> {
        self.durable_or_fault().await
    }
    async fn get(&self, key: &str) -> Result<Option<Order>, LedgerError> {
        self.read_fault()?;
        OrderStore::get(&*self.inner, key).await
    }
    async fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        self.read_fault()?;
        OrderStore::orders_of(&*self.inner, account).await
    }
}

forward! {
    RecordStore {
        fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError>;
        fn prune_events(&self, before: i64) -> Result<usize, LedgerError>;
        fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError>;
        fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError>;
        fn put_check_state(&self, rule: &str, account: &str, state: &CheckState) -> Result<(), LedgerError>;
        fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError>;
        fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError>;
        fn account_state(&self, account: &str) -> Result<AccountState, LedgerError>;
        fn put_account_state(&self, account: &str, state: &AccountState) -> Result<(), LedgerError>;
    }
}

forward! {
    KvStore {
        fn kv_get(&self, plugin: &str, key: &str, now: i64) -> Result<Option<KvValue>, KvError>;
        fn kv_set(&self, plugin: &str, key: &str, value: KvValue, ttl: Option<i64>, now: i64, quota: KvQuota) -> Result<(), KvError>;
        fn kv_del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError>;
        fn kv_incr(&self, plugin: &str, key: &str, by: i64, ttl: Option<i64>, now: i64, quota: KvQuota) -> Result<i64, KvError>;
        fn kv_ttl(&self, plugin: &str, key: &str, now: i64) -> Result<Ttl, KvError>;
    }
}

forward! {
    NodeStore {
        fn probe(&self) -> Result<(), LedgerError>;
        fn failed(&self) -> String;
        fn backup(&self, now: i64) -> Result<Vec<u8>, LedgerError>;
    }
}
