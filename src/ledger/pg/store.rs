//! The PostgreSQL store as one node sees it: the [`Store`] port over the
//! shared tables, this node's lease kept alive, and its share of the
//! (rule, account) pairs.
//!
//! - **Lease.** Taken at open (a new fence), renewed every third of its
//!   length. A renewal the database refuses means the lease is gone (it
//!   ran out while the node was cut off, or a newer start took the name):
//!   [`NodeStore::failed`] resolves and the daemon exits, to be restarted
//!   under a new fence (`keep.rs`). While the database cannot be reached,
//!   every write fails (each checks the lease in its own statement), so
//!   nothing is paid; `/healthz` says why.
//! - **Pairs.** Each pair has a preferred node among those whose lease
//!   holds ([`lease::preferred`]); a node checks a pair only when it is
//!   the preferred one and holds the pair's claim in the database. A node
//!   that dies stops renewing; when its lease runs out it drops out of
//!   every node's list and its pairs' claims are free to take.
//! - **Take-over.** [`NodeStore::take_over`] recovers what dead nodes left in
//!   flight: `sent` becomes `unknown` (never re-sent), `planned` retryable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::batch::Batcher;
use super::keep::{Live, keep_lease, look_at_nodes};
use super::lease::{self, Lease};
use super::seen::Seen;
use super::{PgError, PgKv, PgOrders, PgRecords, db, pool_err};
use crate::ledger::VendorOrder;
use crate::ledger::kv::Ttl;
use crate::ledger::kv::{KvError, KvQuota};
use crate::ledger::store::{
    Commits, KvStore, KvValue, NodeInfo, NodeStore, OrderStore, RecordStore,
};
use crate::ledger::{
    AccountState, AttemptResult, CheckState, EventRecord, Hold, LedgerError, Order, OrderState,
    PlanRequest, Recorded, Refusal, Settled, Settlement, Spend, StoredToken, Verification, change,
};
use crate::model::OutcomeClass;

/// How a node reaches the shared ledger.
#[derive(Clone)]
pub struct PgConfig {
    /// A libpq connection string or URL. Holds the password: never
    /// printed.
    pub url: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// Connections this node keeps at most.
    pub pool_size: usize,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("node", &self.node)
            .field("lease", &self.lease)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// One node's view of a PostgreSQL ledger.
pub struct PgStore {
    pool: Pool,
    lease: Lease,
    orders: PgOrders,
    records: PgRecords,
    kv: PgKv,
    live: Arc<Mutex<Live>>,
    /// What this node keeps so as not to ask again (`seen.rs`): the pairs
    /// it claimed (so that it gives back those it no longer prefers
    /// without asking the database about the others), their check states,
    /// the hold, account states read with their tokens.
    seen: Seen,
    claims: Batcher<lease::Claims>,
    lost: watch::Receiver<Option<String>>,
    _renewal: DropGuard,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The connection settings: connections give up after 5 s, and TCP
/// keepalives find a peer that vanished.
fn settings(cfg: &PgConfig) -> Result<tokio_postgres::Config, PgError> {
    let mut pg: tokio_postgres::Config = cfg
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Config(e.to_string()))?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .application_name(format!("vipd {}", cfg.node));
    Ok(pg)
}

/// A pool for the node's reads and writes.
pub fn pool(cfg: &PgConfig) -> Result<Pool, PgError> {
    pool_of(cfg, settings(cfg)?)
}

/// A pool whose commits do not wait for the WAL flush, for records that
/// move no money (check and account states).
fn relaxed_pool(cfg: &PgConfig) -> Result<Pool, PgError> {
    let mut pg = settings(cfg)?;
    let options = match pg.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=off"),
        _ => "-c synchronous_commit=off".to_owned(),
    };
    pg.options(&options);
    pool_of(cfg, pg)
}

fn pool_of(cfg: &PgConfig, pg: tokio_postgres::Config) -> Result<Pool, PgError> {
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    Pool::builder(manager)
        .max_size(cfg.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}

impl PgStore {
    /// Connects, migrates the schema (under its lock), takes this node's
    /// lease with a new fence and starts renewing it.
    pub async fn open(cfg: &PgConfig) -> Result<PgStore, PgError> {
        let pool = pool(cfg)?;
        let lease = {
            let mut client = pool.get().await.map_err(PgError::from_pool)?;
            let raw: &mut tokio_postgres::Client = &mut client;
            let applied = super::migrate(raw).await?;
            if !applied.is_empty() {
                tracing::info!(versions = ?applied, "PostgreSQL schema migrated");
            }
            lease::acquire(&**client, &cfg.node, cfg.lease).await?
        };
        tracing::info!(node = %lease.node, fence = lease.fence, "lease taken on the shared ledger");
        let live = Arc::new(Mutex::new(Live::default()));
        let (lost_tx, lost) = watch::channel(None);
        let stop = CancellationToken::new();
        tokio::spawn(keep_lease(
            settings(cfg)?,
            lease.clone(),
            cfg.lease,
            live.clone(),
            lost_tx,
            stop.clone(),
        ));
        let relaxed = relaxed_pool(cfg)?;
        let store = PgStore {
            orders: PgOrders::new(pool.clone(), relaxed.clone(), lease.clone()),
            records: PgRecords::new(pool.clone(), relaxed),
            kv: PgKv::new(pool.clone()),
            claims: Batcher::start(pool.clone(), lease::Claims(lease.clone())),
            pool,
            lease,
            live,
            seen: Seen::default(),
            lost,
            _renewal: stop.drop_guard(),
        };
        store.refresh_live().await?;
        Ok(store)
    }

    /// This node's lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    async fn refresh_live(&self) -> Result<(), PgError> {
        let client = self.pool.get().await.map_err(PgError::from_pool)?;
        look_at_nodes(&**client, &self.live).await
    }
}

fn unsupported_backup() -> LedgerError {
    LedgerError::NotDurable(
        "the PostgreSQL store is backed up by PostgreSQL (pg_dump, or the server's own \
         backups), not by vipd"
            .into(),
    )
}

#[async_trait::async_trait]
impl OrderStore for PgStore {
    async fn plan(
        &self,
        req: &PlanRequest,
        now: i64,
    ) -> Result<Result<Order, Refusal>, LedgerError> {
        self.orders.plan(req, now).await
    }
    /// Every write but a plan under no cap waits for its own WAL flush;
    /// such a plan is durable once a flushed commit started after it
    /// ([`PgOrders::durable`]).
    async fn durable(&self) -> Result<(), LedgerError> {
        self.orders.durable(None).await
    }
    async fn durable_order(&self, key: &str) -> Result<(), LedgerError> {
        self.orders.durable(Some(key)).await
    }
    async fn answer(
        &self,
        key: &str,
        now: i64,
        answer: &crate::ledger::Answer,
    ) -> Result<Order, LedgerError> {
        self.orders
            .modify(key, |o| change::answer(o, now, answer))
            .await
            .map(|(o, ())| o)
    }
    async fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError> {
        self.orders
            .modify(key, |o| change::mark_sent(o, now))
            .await
            .map(|(o, ())| o)
    }
    async fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: OutcomeClass,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError> {
        self.orders
            .modify(key, |o| {
                change::record_reply(o, now, outcome, detail, result.clone())
            })
            .await
            .map(|(order, conflict)| Recorded { order, conflict })
    }
    async fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError> {
        Ok(self
            .settle_attempt(key, None, now, settlement)
            .await?
            .changed())
    }
    async fn settle_attempt(
        &self,
        key: &str,
        attempt: Option<u32>,
        now: i64,
        settlement: Settlement,
    ) -> Result<Settled, LedgerError> {
        let (order, result) = self
            .orders
            .modify(key, |o| {
                change::settle_attempt(o, attempt, now, &settlement)
            })
            .await?;
        Ok(Settled::of(order, result))
    }
    async fn refute_unverified(
        &self,
        key: &str,
        now: i64,
        why: &str,
    ) -> Result<Order, LedgerError> {
        self.orders
            .modify(key, |o| change::refute(o, now, why))
            .await
            .map(|(o, ())| o)
    }
    async fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        self.orders
            .modify(key, |o| change::callback_overdue(o, now, why))
            .await
            .map(|(o, ())| o)
    }
    async fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError> {
        self.orders
            .modify(key, |o| {
                o.verification = v.clone();
                Ok(())
            })
            .await
            .map(|(o, ())| o)
    }
    async fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<VendorOrder>, LedgerError> {
        self.orders
            .attempt_of_vendor_order(provider, vendor_orderid)
            .await
    }
    async fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError> {
        self.orders
            .modify(key, |o| Ok(change::bind_vendor_order(o, vendor_orderid)))
            .await
            .map(|(_, n)| n)
    }
    /// At start: what this node's earlier starts, and dead nodes, left in
    /// flight (an earlier start's fence is no longer its name's).
    async fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        self.orders.recover_orphans(now).await
    }
    async fn get(&self, key: &str) -> Result<Option<Order>, LedgerError> {
        self.orders.get(key).await
    }
    async fn find(&self, prefix: &str) -> Result<Order, LedgerError> {
        self.orders.find(prefix).await
    }
    async fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError> {
        self.orders.orders(state).await
    }
    async fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        self.orders.orders_of(account).await
    }
    async fn count_by_state(&self) -> Result<BTreeMap<OrderState, usize>, LedgerError> {
        self.orders.count_by_state().await
    }
    async fn count_unverified(&self) -> Result<usize, LedgerError> {
        self.orders.count_unverified().await
    }
    async fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError> {
        self.orders.spend(rule, period).await
    }
    async fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError> {
        self.seen.forget_hold();
        self.records.hold_all(now, reason).await
    }
    /// From the hold read within the last second: the plan that would pay
    /// reads it again in its own statement.
    async fn held(&self, account: &str) -> Result<Option<String>, LedgerError> {
        let hold = match self.seen.hold() {
            Some(hold) => hold,
            None => {
                let hold = self.records.hold().await?;
                self.seen.keep_hold(hold.clone());
                hold
            }
        };
        Ok(hold.and_then(|h| h.of(account)))
    }
    async fn release(&self, account: Option<&str>) -> Result<Option<Hold>, LedgerError> {
        self.seen.forget_hold();
        self.records.release(account).await
    }
}

#[async_trait::async_trait]
impl RecordStore for PgStore {
    async fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError> {
        self.records.record_event(ev).await
    }
    async fn prune_events(&self, before: i64) -> Result<usize, LedgerError> {
        self.records.prune_events(before).await
    }
    async fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError> {
        self.records.events(limit).await
    }
    /// A pair this node holds: as it last wrote or read it.
    async fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError> {
        if let Some(state) = self.seen.check(rule, account) {
            return Ok(state);
        }
        let state = self.records.check_state(rule, account).await?;
        self.seen.keep_check(rule, account, &state);
        Ok(state)
    }
    async fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError> {
        self.records.put_check_state(rule, account, state).await?;
        self.seen.keep_check(rule, account, state);
        Ok(())
    }
    /// Read with the account's state and its orders, which the check
    /// asks for next.
    async fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError> {
        let started = self.orders.read_starts();
        let read = self.records.account_read(account).await?;
        if let Some(state) = read.state {
            self.seen.keep_account(account, state);
        }
        self.orders.keep_read(account, started, read.orders);
        Ok(read.token)
    }
    async fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError> {
        self.records.put_token(account, token).await
    }
    async fn account_state(&self, account: &str) -> Result<AccountState, LedgerError> {
        match self.seen.take_account(account) {
            Some(state) => Ok(state),
            None => self.records.account_state(account).await,
        }
    }
    async fn put_account_state(
        &self,
        account: &str,
        state: &AccountState,
    ) -> Result<(), LedgerError> {
        self.seen.take_account(account);
        self.records.put_account_state(account, state).await
    }
}

#[async_trait::async_trait]
impl KvStore for PgStore {
    async fn kv_get(&self, plugin: &str, key: &str, now: i64) -> Result<Option<KvValue>, KvError> {
        self.kv.get(plugin, key, now).await
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
        self.kv.set(plugin, key, value, ttl, now, quota).await
    }
    async fn kv_del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError> {
        self.kv.del(plugin, key, now).await
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
        self.kv.incr(plugin, key, by, ttl, now, quota).await
    }
    async fn kv_ttl(&self, plugin: &str, key: &str, now: i64) -> Result<Ttl, KvError> {
        self.kv.ttl(plugin, key, now).await
    }
}

#[async_trait::async_trait]
impl NodeStore for PgStore {
    fn commits(&self) -> Commits {
        self.orders.commits()
    }
    /// Also folds the spend changes appended since the last time (any
    /// node may: each change is folded once).
    async fn take_over(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        self.orders.fold_spend().await?;
        self.orders.recover_orphans(now).await
    }
    /// The database answers and this node's lease holds.
    async fn probe(&self) -> Result<(), LedgerError> {
        if let Some(why) = self.lost.borrow().clone() {
            return Err(LedgerError::Fenced(why));
        }
        let client = self.pool.get().await.map_err(pool_err)?;
        lease::check(&client, &self.lease).await
    }
    async fn failed(&self) -> String {
        let mut lost = self.lost.clone();
        let why = match lost.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            // The renewal task is gone only when the store is dropped.
            None => std::future::pending().await,
        }
    }
    async fn backup(&self, _now: i64) -> Result<Vec<u8>, LedgerError> {
        Err(unsupported_backup())
    }
    /// This node checks a pair when it is the pair's preferred node among
    /// the live ones and holds the pair's claim; a claim it holds for a
    /// pair it no longer prefers (a node joined) is given back once no
    /// order of the pair it wrote is unsettled. The
    /// database is asked once a pair, while the claim stays this node's.
    async fn claim(&self, rule: &str, account: &str) -> Result<bool, LedgerError> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .names(Instant::now());
        let mine = lease::preferred(&live, rule, account).is_none_or(|p| p == self.lease.node);
        let held = self.seen.holds(rule, account);
        if !mine && !held {
            return Ok(false);
        }
        // A claim this node holds stays its own while its lease holds (a
        // claim moves only when its holder's lease has run out), so it is
        // not asked for again. Should the lease be gone unnoticed, the
        // check that follows pays nothing: every write checks the lease.
        if mine && held && self.lost.borrow().is_none() {
            return Ok(true);
        }
        // A pair this node paid for and that is not settled stays its
        // own until it is, though another node is preferred now: the node
        // that paid follows its payment up, and the pair is not checked
        // again from the start elsewhere.
        if held && self.lost.borrow().is_none() && self.orders.in_flight(rule, account) {
            return Ok(true);
        }
        let got = if mine {
            let claimed = self
                .claims
                .write((rule.to_owned(), account.to_owned()))
                .await?;
            // A pair never checked has no row: its state is the default.
            claimed.map(|state| match state {
                Some(v) => serde_json::from_value(v).ok(),
                None => Some(CheckState::default()),
            })
        } else {
            let client = self.pool.get().await.map_err(pool_err)?;
            lease::release(&client, &self.lease, rule, account)
                .await
                .map_err(db)?;
            None
        };
        let mine = got.is_some();
        self.seen.claimed(rule, account, got);
        Ok(mine)
    }
    async fn nodes(&self) -> Result<Vec<NodeInfo>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        lease::nodes(&**client).await.map_err(db)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
