//! The order ledger, budgets, and everything else vipd must remember: the
//! only module that sees sled.
//!
//! One tree, keys by prefix:
//!
//! | key | value |
//! |---|---|
//! | `o/{key}` | [`Order`] (JSON) |
//! | `a/{account}/{key}` | index: an account's orders |
//! | `x/{provider}/{vendor order id}` | index: the order's key |
//! | `b/{rule}/{period}` | [`Spend`] for a day (`2026-11-21`) or month (`2026-11`) |
//! | `e/{time}{seq}` | [`EventRecord`] |
//! | `c/{rule}/{account}` | [`CheckState`]: what the last check saw and decided |
//! | `u/{account}` | [`AccountState`]: credential trouble |
//! | `k/{plugin}\0{key}` | a plugin's `vipd.kv` value (see `kv.rs`) |
//! | `t/{account}` | [`StoredToken`]: the latest rotated token pair |
//!
//! Writers take one mutex for their read-modify-write and write one atomic
//! batch; the planned record is then made durable through [`GroupCommit`]
//! before the engine lets the request leave.

mod durable;
pub mod kv;
pub mod order;

use std::path::Path;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use durable::{CommitStats, GroupCommit};
pub use order::{BudgetHold, Order, OrderState, Transition, Verification, decision_key};

use crate::config::Budget;
use crate::units::Fen;
use crate::upstream::vipinfo::Membership;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// sled failed (I/O, corruption it detected).
    #[error("state store: {0}")]
    Store(#[from] sled::Error),
    /// A value could not be read back.
    #[error("state store: record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// No order under that key.
    #[error("no order with key {0}")]
    NotFound(String),
    /// A transition the state machine does not allow.
    #[error("order {key} is {from}; it cannot become {to}")]
    Illegal {
        key: String,
        from: OrderState,
        to: OrderState,
    },
    /// The store could not make a write durable.
    #[error("state store: {0}")]
    Durability(String),
    /// Opening the store failed (often: another vipd holds it).
    #[error("cannot open the state store at {path}: {reason}")]
    Open { path: String, reason: String },
}

/// Money counted against a rule in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Held for orders whose cost is not settled.
    pub reserved: Fen,
    /// Paid.
    pub settled: Fen,
}

impl Spend {
    /// What counts against a cap.
    pub fn used(self) -> Fen {
        Fen(self.reserved.0 + self.settled.0)
    }
}

/// Something that happened, kept for `status` and for saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unix seconds.
    pub at: i64,
    /// The event name (`budget_exceeded`, `order_unknown`, ...).
    pub kind: String,
    /// The account concerned.
    pub account: Option<String>,
    /// The rule concerned.
    pub rule: Option<String>,
    /// The order concerned.
    pub key: Option<String>,
    /// What happened, in words.
    pub detail: String,
}

/// What the last check of one account under one rule saw and decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    /// When it ran.
    pub checked_at: Option<i64>,
    /// The end it read.
    pub observed_end: Option<i64>,
    /// The decision, in words.
    pub decision: String,
    /// The standing plugin veto of a due renewal, so that a veto repeated
    /// at every check is recorded as an event once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veto: Option<String>,
}

/// Per-account state that outlives a check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Inside a streak of credential failures (the event fired once).
    pub auth_failing: bool,
    /// The last read error, if the last read failed.
    pub last_error: Option<String>,
}

/// An account's latest token pair, written (and made durable) before the
/// new access token is used: QQ refresh tokens work once, so a rotated
/// pair that is lost is a grant that is lost.
///
/// The store lives in the state folder (mode 0700 under systemd); these
/// values are never shown by any command or API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds when the access token expires.
    pub expires_at: Option<i64>,
    /// Seconds the access token was granted for.
    pub lifetime: Option<i64>,
    /// Unix seconds of the rotation.
    pub rotated_at: i64,
    /// Hash of the configured pair this grant descends from: when the
    /// operator configures a new grant, it wins over the stored one.
    pub grant: String,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("expires_at", &self.expires_at)
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

/// A request to plan (or re-plan) an order.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub key: String,
    pub rule: String,
    pub account: String,
    pub membership: Membership,
    pub observed_end: Option<i64>,
    pub product: String,
    pub provider: String,
    pub max_price: Fen,
    pub max_attempts: u32,
    pub budget: Budget,
    /// Budget day and month of `now` in the daemon's timezone.
    pub day: String,
    pub month: String,
    /// Why it is being paid, for the history.
    pub why: String,
}

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An order under this key exists and may not be re-sent now.
    Exists { state: OrderState, why: String },
    /// The key has used all its attempts.
    MaxAttempts { attempts: u32 },
    /// Paying would pass a cap.
    Budget {
        period: String,
        cap: Fen,
        used: Fen,
        price: Fen,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Exists { state, why } => {
                write!(f, "an order for this period is {state} ({why})")
            }
            Refusal::MaxAttempts { attempts } => {
                write!(f, "all {attempts} attempts for this period are used")
            }
            Refusal::Budget {
                period,
                cap,
                used,
                price,
            } => {
                write!(
                    f,
                    "budget {period}: {used} used of {cap}; {price} more would pass it"
                )
            }
        }
    }
}

/// What an attempt's reply means for the order (from the engine).
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// Paid now (10000, or 10024 in debug mode with `price = Some(0)`).
    Succeeded {
        price: Option<Fen>,
        vendor_orderid: Option<String>,
        verify_deadline: i64,
    },
    /// Accepted; billed; the result comes by callback.
    Pending {
        price: Option<Fen>,
        vendor_orderid: Option<String>,
    },
    /// Possibly paid.
    Unknown,
    /// Not paid; `retry_at` when it may be retried.
    Failed { retry_at: Option<i64> },
}

/// The store.
pub struct Ledger {
    db: sled::Db,
    commit: GroupCommit,
    /// Serialises read-modify-write sequences (one process owns the store).
    write: Mutex<()>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

/// Reads a stored record back; an unreadable one names its key.
fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, LedgerError> {
    serde_json::from_slice(bytes).map_err(|e| LedgerError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("ledger records always serialize")
}

/// How long [`Ledger::open`] waits for a store that is still locked.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Ledger {
    /// Opens (or creates) the store in `dir`. Fails if another process
    /// holds it (after [`LOCK_WAIT`]).
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        let open_err = |reason: String| LedgerError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            // sled's default page cache is 1 GiB; the ledger's working set
            // is a few MB even with 10,000 accounts.
            .cache_capacity(16 << 20);
        // sled closes its file (and so drops its lock) when its last
        // background task lets go, which can be a little after the last
        // handle is dropped: a store reopened at once in the same process
        // can find it still locked. So the lock is tried for a moment.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(|e| open_err(e.to_string()))?,
            }
        };
        let file =
            std::fs::File::open(dir.join("db")).map_err(|e| open_err(format!("db file: {e}")))?;
        // The directory entries of a fresh store must be durable too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let commit = GroupCommit::start(db.clone(), file).map_err(|e| open_err(e.to_string()))?;
        Ok(Ledger {
            db,
            commit,
            write: Mutex::new(()),
        })
    }

    /// Waits until every write so far is on stable storage.
    pub async fn durable(&self) -> Result<(), LedgerError> {
        self.commit.durable().await.map_err(LedgerError::Durability)
    }

    /// Group-commit counters.
    pub fn commit_stats(&self) -> &CommitStats {
        self.commit.stats()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, LedgerError> {
        match self.db.get(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
        }
    }

    /// Stores one JSON record outside the write lock: for records no
    /// invariant ties to others (a check's state, an account's token and
    /// credentials, an event).
    fn write<T: Serialize>(&self, key: &str, value: &T) -> Result<(), LedgerError> {
        self.db.insert(key.as_bytes(), json(value))?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, LedgerError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// The order under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Order>, LedgerError> {
        self.read(&format!("o/{key}"))
    }

    /// The order whose key starts with `prefix`, if exactly one does.
    pub fn find(&self, prefix: &str) -> Result<Order, LedgerError> {
        let mut it = self.db.scan_prefix(format!("o/{prefix}").as_bytes());
        let first = it.next().transpose()?;
        let second = it.next().transpose()?;
        match (first, second) {
            (Some((k, v)), None) => decode(&k, &v),
            (Some(_), Some(_)) => Err(LedgerError::NotFound(format!(
                "{prefix} (several keys start so; give more of it)"
            ))),
            _ => Err(LedgerError::NotFound(prefix.to_owned())),
        }
    }

    /// Every order, optionally in one state.
    pub fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError> {
        let mut all: Vec<Order> = self.scan("o/")?;
        if let Some(s) = state {
            all.retain(|o| o.state == s);
        }
        all.sort_by_key(|o| (o.created_at, o.key.clone()));
        Ok(all)
    }

    /// Orders by state, decoding only each record's state (no list of
    /// orders is built: cheap to poll with many thousands of orders).
    pub fn count_by_state(
        &self,
    ) -> Result<std::collections::BTreeMap<OrderState, usize>, LedgerError> {
        #[derive(Deserialize)]
        struct StateOnly {
            state: OrderState,
        }
        let mut counts: std::collections::BTreeMap<OrderState, usize> =
            OrderState::ALL.iter().map(|s| (*s, 0)).collect();
        for item in self.db.scan_prefix(b"o/") {
            let (k, v) = item?;
            let s: StateOnly = decode(&k, &v)?;
            *counts.entry(s.state).or_default() += 1;
        }
        Ok(counts)
    }

    /// Every order of one account.
    pub fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(format!("a/{account}/").as_bytes()) {
            let (k, _) = item?;
            let k = String::from_utf8_lossy(&k);
            if let Some(key) = k.rsplit('/').next() {
                if let Some(order) = self.get(key)? {
                    out.push(order);
                }
            }
        }
        Ok(out)
    }

    /// The key of the order the vendor calls `vendor_orderid`.
    pub fn key_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<String>, LedgerError> {
        Ok(self
            .db
            .get(format!("x/{provider}/{vendor_orderid}").as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// What a rule has spent in a period.
    pub fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError> {
        Ok(self
            .read(&format!("b/{rule}/{period}"))?
            .unwrap_or_default())
    }

    /// Plans an order: checks the key and the budget, holds `max_price`,
    /// and writes the `planned` record, atomically. The caller must await
    /// [`Ledger::durable`] before sending.
    pub fn plan(&self, req: &PlanRequest, now: i64) -> Result<Result<Order, Refusal>, LedgerError> {
        let _guard = self.lock();
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
            let unsettled = other.state.is_open()
                || matches!(
                    other.verification,
                    Verification::Waiting { .. } | Verification::Unverified { .. }
                );
            if other.key != req.key
                && other.membership == req.membership
                && unsettled
                && other.state != OrderState::Failed
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
        let day = self.spend(&req.rule, &req.day)?;
        let month = self.spend(&req.rule, &req.month)?;
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
        let mut order = existing.unwrap_or_else(|| Order {
            key: req.key.clone(),
            rule: req.rule.clone(),
            account: req.account.clone(),
            membership: req.membership,
            observed_end: req.observed_end,
            product: req.product.clone(),
            provider: req.provider.clone(),
            state: OrderState::Planned,
            attempts: 0,
            max_price: req.max_price,
            price: None,
            vendor_orderid: None,
            hold: None,
            spent: Fen::ZERO,
            charged_to: None,
            retry_at: None,
            last_outcome: None,
            verification: Verification::None,
            created_at: now,
            updated_at: now,
            history: Vec::new(),
        });
        order.attempts += 1;
        order.retry_at = None;
        order.max_price = req.max_price;
        order.hold = Some(BudgetHold {
            day: req.day.clone(),
            month: req.month.clone(),
            amount: req.max_price,
        });
        order.enter(
            OrderState::Planned,
            now,
            format!("attempt {}: {}", order.attempts, req.why),
        );
        let mut batch = sled::Batch::default();
        batch.insert(
            format!("a/{}/{}", order.account, order.key).as_bytes(),
            &[][..],
        );
        for (period, mut spend) in [(&req.day, day), (&req.month, month)] {
            spend.reserved.0 += req.max_price.0;
            batch.insert(format!("b/{}/{period}", req.rule).as_bytes(), json(&spend));
        }
        batch.insert(format!("o/{}", order.key).as_bytes(), json(&order));
        self.db.apply_batch(batch)?;
        Ok(Ok(order))
    }

    /// Reads, changes and writes one order with its budget effects, under
    /// the write lock, as one batch.
    fn modify<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut Order, &mut Effects) -> Result<R, LedgerError>,
    ) -> Result<(Order, R), LedgerError> {
        let _guard = self.lock();
        let mut order = self
            .get(key)?
            .ok_or_else(|| LedgerError::NotFound(key.to_owned()))?;
        let mut fx = Effects::default();
        let r = f(&mut order, &mut fx)?;
        let mut batch = sled::Batch::default();
        if let Some(hold) = &fx.budget_periods {
            for period in [&hold.day, &hold.month] {
                let mut spend = self.spend(&order.rule, period)?;
                spend.reserved.0 = (spend.reserved.0 + fx.reserved_delta.0).max(0);
                spend.settled.0 = (spend.settled.0 + fx.settled_delta.0).max(0);
                batch.insert(
                    format!("b/{}/{period}", order.rule).as_bytes(),
                    json(&spend),
                );
            }
        }
        if let Some(id) = &fx.vendor_index {
            batch.insert(
                format!("x/{}/{id}", order.provider).as_bytes(),
                order.key.as_bytes(),
            );
        }
        batch.insert(format!("o/{}", order.key).as_bytes(), json(&order));
        self.db.apply_batch(batch)?;
        Ok((order, r))
    }

    /// `planned` → `sent`, just before the request leaves. The caller must
    /// await [`Ledger::durable`] before sending: after a crash, `sent`
    /// means "may have left" and becomes `unknown`.
    pub fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError> {
        self.modify(key, |o, _| {
            expect_state(o, &[OrderState::Planned], OrderState::Sent)?;
            o.enter(OrderState::Sent, now, "request leaving");
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// Records what an attempt's reply means.
    pub fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: &str,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Order, LedgerError> {
        self.modify(key, |o, fx| {
            let to = match &result {
                AttemptResult::Succeeded { .. } => OrderState::Succeeded,
                AttemptResult::Pending { .. } => OrderState::Pending,
                AttemptResult::Unknown => OrderState::Unknown,
                AttemptResult::Failed { .. } => OrderState::Failed,
            };
            expect_state(o, &[OrderState::Sent], to)?;
            o.last_outcome = Some(outcome.to_owned());
            match result {
                AttemptResult::Succeeded {
                    price,
                    vendor_orderid,
                    verify_deadline,
                } => {
                    settle_hold(o, fx, price);
                    index_vendor(o, fx, vendor_orderid);
                    o.verification = Verification::Waiting {
                        deadline: verify_deadline,
                    };
                }
                AttemptResult::Pending {
                    price,
                    vendor_orderid,
                } => {
                    settle_hold(o, fx, price);
                    index_vendor(o, fx, vendor_orderid);
                }
                AttemptResult::Unknown => {}
                AttemptResult::Failed { retry_at } => {
                    release_hold(o, fx);
                    o.retry_at = retry_at;
                }
            }
            o.enter(to, now, format!("{outcome}: {detail}"));
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// Settles an order by evidence: a callback, the membership end moving,
    /// or an operator. Returns `None` (and changes nothing) when the order
    /// was already settled: a repeated callback is not a second transition.
    pub fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError> {
        let (order, changed) = self.modify(key, |o, fx| {
            if !o.state.is_open() {
                return Ok(false);
            }
            match &settlement {
                Settlement::Paid {
                    price,
                    verify_deadline,
                    why,
                } => {
                    if o.hold.is_some() {
                        settle_hold(o, fx, *price);
                    } else if let Some(p) = price {
                        // Pending orders were settled at the reply's price
                        // (or max); the callback may state the real one.
                        if *p != o.spent {
                            fx.budget_periods = o.charged_to.clone();
                            fx.settled_delta = Fen(p.0 - o.spent.0);
                            o.spent = *p;
                            o.price = Some(*p);
                        }
                    }
                    if o.verification == Verification::None {
                        o.verification = Verification::Waiting {
                            deadline: *verify_deadline,
                        };
                    }
                    o.enter(OrderState::Succeeded, now, why.clone());
                }
                Settlement::NotPaid { retry_at, why } => {
                    if o.hold.is_some() {
                        release_hold(o, fx);
                    } else if o.spent > Fen::ZERO {
                        fx.budget_periods = o.charged_to.take();
                        fx.settled_delta = Fen(-o.spent.0);
                        o.spent = Fen::ZERO;
                    }
                    o.retry_at = *retry_at;
                    o.enter(OrderState::Failed, now, why.clone());
                }
            }
            Ok(true)
        })?;
        Ok(changed.then_some(order))
    }

    /// An operator says a paid order whose renewal never showed was in
    /// fact not delivered: it becomes `failed`, its spending is refunded to
    /// the budget, and its key may be retried. Only for `unverified` orders.
    pub fn refute_unverified(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        self.modify(key, |o, fx| {
            if o.state != OrderState::Succeeded
                || !matches!(o.verification, Verification::Unverified { .. })
            {
                return Err(LedgerError::Illegal {
                    key: o.key.clone(),
                    from: o.state,
                    to: OrderState::Failed,
                });
            }
            if o.spent > Fen::ZERO {
                fx.budget_periods = o.charged_to.take();
                fx.settled_delta = Fen(-o.spent.0);
                o.spent = Fen::ZERO;
            }
            o.retry_at = Some(now);
            o.enter(OrderState::Failed, now, why);
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// Records the verification of a paid order.
    pub fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError> {
        self.modify(key, |o, _| {
            o.verification = v;
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// Start-up recovery: `sent` orders may have left, so they become
    /// `unknown`; `planned` orders never left, so they become `failed` and
    /// may be retried at once. Returns the orders changed.
    pub fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        let mut changed = Vec::new();
        for o in self.orders(None)? {
            match o.state {
                OrderState::Sent => {
                    let (o, ()) = self.modify(&o.key, |o, _| {
                        o.enter(
                            OrderState::Unknown,
                            now,
                            "the daemon stopped while the request was in flight; it may have been paid",
                        );
                        Ok(())
                    })?;
                    changed.push(o);
                }
                OrderState::Planned => {
                    let (o, ()) = self.modify(&o.key, |o, fx| {
                        release_hold(o, fx);
                        o.retry_at = Some(now);
                        o.enter(
                            OrderState::Failed,
                            now,
                            "the daemon stopped before the request left; not paid",
                        );
                        Ok(())
                    })?;
                    changed.push(o);
                }
                _ => {}
            }
        }
        Ok(changed)
    }

    /// Appends an event (not made durable by itself).
    pub fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError> {
        let seq = self.db.generate_id()?;
        self.write(&format!("e/{:016x}{seq:016x}", ev.at.max(0)), ev)
    }

    /// Drops the events recorded before `before` (unix seconds) and returns
    /// how many. Orders and their transition histories are never pruned:
    /// the event log is what explains them, and it is kept for
    /// `daemon.event_retention`. Keys start with the event's time, so the
    /// old ones are one range at the front; they go in batches.
    pub fn prune_events(&self, before: i64) -> Result<usize, LedgerError> {
        let end = format!("e/{:016x}", before.max(0));
        let mut pruned = 0;
        loop {
            let keys = self
                .db
                .range(b"e/".as_slice()..end.as_bytes())
                .keys()
                .take(1024)
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Ok(pruned);
            }
            let mut batch = sled::Batch::default();
            for k in &keys {
                batch.remove(k.clone());
            }
            self.db.apply_batch(batch)?;
            pruned += keys.len();
        }
    }

    /// The latest `limit` events, newest last.
    pub fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"e/").rev().take(limit) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        out.reverse();
        Ok(out)
    }

    /// What the last check of (rule, account) saw.
    pub fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError> {
        Ok(self
            .read(&format!("c/{rule}/{account}"))?
            .unwrap_or_default())
    }

    /// Records what a check saw and decided.
    pub fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError> {
        self.write(&format!("c/{rule}/{account}"), state)
    }

    /// The account's stored token pair, if it was ever rotated.
    pub fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError> {
        self.read(&format!("t/{account}"))
    }

    /// Stores a rotated token pair (make it durable before using it).
    pub fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError> {
        self.write(&format!("t/{account}"), token)
    }

    /// An account's credential state.
    pub fn account_state(&self, account: &str) -> Result<AccountState, LedgerError> {
        Ok(self.read(&format!("u/{account}"))?.unwrap_or_default())
    }

    /// Records an account's credential state.
    pub fn put_account_state(
        &self,
        account: &str,
        state: &AccountState,
    ) -> Result<(), LedgerError> {
        self.write(&format!("u/{account}"), state)
    }
}

/// How an open order is settled.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Money moved; the renewal is bought.
    Paid {
        price: Option<Fen>,
        verify_deadline: i64,
        why: String,
    },
    /// No money moved (or it was refunded).
    NotPaid { retry_at: Option<i64>, why: String },
}

/// Budget changes a modification makes.
#[derive(Debug, Default)]
struct Effects {
    budget_periods: Option<BudgetHold>,
    reserved_delta: Fen,
    settled_delta: Fen,
    vendor_index: Option<String>,
}

fn expect_state(o: &Order, from: &[OrderState], to: OrderState) -> Result<(), LedgerError> {
    if from.contains(&o.state) {
        Ok(())
    } else {
        Err(LedgerError::Illegal {
            key: o.key.clone(),
            from: o.state,
            to,
        })
    }
}

/// The hold becomes spending at `price` (or the held max when unknown).
fn settle_hold(o: &mut Order, fx: &mut Effects, price: Option<Fen>) {
    if let Some(hold) = o.hold.take() {
        let paid = price.unwrap_or(hold.amount);
        fx.reserved_delta = Fen(-hold.amount.0);
        fx.settled_delta = paid;
        o.charged_to = Some(hold.clone());
        fx.budget_periods = Some(hold);
        o.spent = paid;
        o.price = price.or(o.price);
    }
}

/// The hold is given back: nothing was paid.
fn release_hold(o: &mut Order, fx: &mut Effects) {
    if let Some(hold) = o.hold.take() {
        fx.reserved_delta = Fen(-hold.amount.0);
        fx.budget_periods = Some(hold);
    }
}

fn index_vendor(o: &mut Order, fx: &mut Effects, vendor_orderid: Option<String>) {
    if let Some(id) = vendor_orderid.filter(|s| !s.is_empty()) {
        o.vendor_orderid = Some(id.clone());
        fx.vendor_index = Some(id);
    }
}

#[cfg(test)]
mod tests;
