//! The order ledger, budgets, and everything else vipd must remember: the
//! only module that sees sled.
//!
//! One tree, keys by prefix (every key is built in `keys.rs`):
//!
//! | key | value |
//! |---|---|
//! | `o/{key}` | [`Order`] (JSON) |
//! | `e/{time}{seq}` | [`EventRecord`] |
//! | `c/{rule}/{account}` | [`CheckState`]: what the last check saw and decided |
//! | `u/{account}` | [`AccountState`]: credential trouble |
//! | `k/{plugin}\0{key}` | a plugin's `vipd.kv` value (see `kv.rs`) |
//! | `t/{account}` | [`StoredToken`]: the latest rotated token pair |
//!
//! An order's record is all a transition writes: orders by state, each
//! account's orders, vendor order ids and budget spend are derived from the
//! orders (`derived.rs`; stores written before kept them as rows, `a/`,
//! `x/` and `b/`, which are read at open and never written again).
//!
//! Writers take one mutex for their read-modify-write, write the order and
//! count the change (the commit thread writes the counter, `seal.rs`); the
//! planned record is then made durable through [`GroupCommit`] before the
//! engine lets the request leave. Open orders are also kept decoded
//! in memory (`resident.rs`), so a transition does not read them back.
//!
//! Files: `open.rs` (opening, seals, damage, backup and restore),
//! `folder.rs` (the state folder: private, and writable before it is read), `plan.rs`
//! (the guards a payment passes), `transitions.rs` (everything after),
//! `records.rs` (the other records and the values transitions exchange),
//! `store.rs` (the [`store::Store`] port, which the rest of vipd holds)
//! and `conformance/` (its suite).

pub(crate) mod change;
pub(crate) mod derived;
mod durable;
mod export;
pub mod folder;
mod keys;
pub mod kv;
mod open;
pub mod order;
pub mod pg;
mod plan;
mod records;
mod resident;
mod seal;
pub mod store;
mod transitions;

use std::path::Path;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use derived::{Derived, Share};
pub use durable::{CommitStats, GroupCommit};
pub use export::Export;
use open::*;
pub use order::{
    Approval, AttemptRecord, AttemptState, BudgetHold, Order, OrderState, Transition, Verification,
    decision_key,
};
pub use records::*;

use crate::model::Budget;
use crate::model::Membership;
use crate::units::Fen;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store could not be read or written: an I/O error, a lost
    /// database connection. Nothing is known to have changed.
    #[error("state store: {0}")]
    Unavailable(String),
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
    /// An operator's answer the order cannot take (approving an order
    /// that does not await approval, or at a price it no longer has).
    #[error("order {key}: {why}")]
    Refused { key: String, why: String },
    /// The store could not make a write durable.
    #[error("state store: {0}")]
    NotDurable(String),
    /// This node may not write: its lease ran out, or a newer start took
    /// its name (a shared store; see `ledger/pg/lease.rs`).
    #[error("state store: this node is fenced off: {0}")]
    Fenced(String),
    /// Opening the store failed (often: another vipd holds it).
    #[error("cannot open the state store at {path}: {reason}")]
    Open { path: String, reason: String },
    /// vipd may not write in the state folder (a read-only mount, another
    /// user's files, a full disk): nothing was read, nothing is damaged.
    #[error(
        "the state folder {path} is not writable: {reason}.\n\
         vipd writes every order there before it pays, so it cannot start. This is not damage:\n\
         the store was not read, and `vipd store restore` or `--accept-damaged-store` are not\n\
         the remedy. Make the folder and the files in it writable by the user vipd runs as\n\
         (a read-only mount? files owned by another user? a full disk?), or point\n\
         daemon.state_dir elsewhere"
    )]
    NotWritable { path: String, reason: String },
    /// The store is damaged or is not the ledger it claims to be: using
    /// it could pay again for orders it forgot.
    #[error(
        "the state store at {path} is damaged: {reason}.\n\
         vipd will not use it: a ledger that forgot orders would pay them again.\n\
         To recover (README, \"A damaged or restored store\"):\n\
         \x20 1. `vipd store verify` says what is wrong;\n\
         \x20 2. `vipd store restore BACKUP` puts back a backup (new orders are then held until released), or\n\
         \x20 3. `vipd run --accept-damaged-store` starts on the store as it is, with every new order held\n\
         \x20    until you have checked the vendor's order list and run `vipd store release`"
    )]
    Damaged { path: String, reason: String },
}

/// What kind of failure a [`LedgerError`] is, whatever the backend: what
/// a caller decides on (an HTTP status, whether to try again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The write contradicts the order's state, or an answer it cannot
    /// take: nothing changed, and trying again will not change that.
    Conflict,
    /// No such order.
    NotFound,
    /// A write may not survive power loss: do not pay on it.
    NotDurable,
    /// What the store holds cannot be trusted (a record that does not
    /// decode, a store that is not the one it claims to be).
    Damaged,
    /// The store could not be reached, opened or written: try again later.
    Unavailable,
    /// This node may no longer write (another took its place).
    Fenced,
}

impl LedgerError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LedgerError::Illegal { .. } | LedgerError::Refused { .. } => ErrorKind::Conflict,
            LedgerError::NotFound(_) => ErrorKind::NotFound,
            LedgerError::NotDurable(_) => ErrorKind::NotDurable,
            LedgerError::Corrupt { .. } | LedgerError::Damaged { .. } => ErrorKind::Damaged,
            LedgerError::Unavailable(_)
            | LedgerError::Open { .. }
            | LedgerError::NotWritable { .. } => ErrorKind::Unavailable,
            LedgerError::Fenced(_) => ErrorKind::Fenced,
        }
    }
}

/// sled's own errors, in the store's words: the engine never sees a sled
/// type.
impl From<sled::Error> for LedgerError {
    fn from(e: sled::Error) -> LedgerError {
        match e {
            sled::Error::Corruption { at, .. } => LedgerError::Corrupt {
                key: at.map_or_else(|| "sled".to_owned(), |at| format!("sled at {at:?}")),
                reason: "sled found its own files corrupt".to_owned(),
            },
            other => LedgerError::Unavailable(other.to_string()),
        }
    }
}

/// What to do when the store fails its check at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Refuse it.
    Normal,
    /// Use it as it is: re-seal it, set aside records that do not decode,
    /// and hold every new order until an operator releases them (the hold
    /// dated `at`, unix seconds).
    AcceptDamaged { at: i64 },
}

/// New orders held after a damaged store was accepted or a backup
/// restored: the ledger may have forgotten orders the vendor billed, so
/// nothing is paid until an operator has compared it with the vendor's
/// records and released the hold (all accounts, or one at a time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Unix seconds.
    pub since: i64,
    /// Why, in words.
    pub reason: String,
    /// Accounts released one by one.
    #[serde(default)]
    pub released: std::collections::BTreeSet<String>,
}

impl Hold {
    /// Why new orders for `account` are held, unless it was released.
    pub fn of(&self, account: &str) -> Option<String> {
        (!self.released.contains(account)).then(|| {
            format!(
                "{} (since {}); check the vendor's orders, then `vipd store release`",
                self.reason,
                crate::timefmt::utc(self.since)
            )
        })
    }
}

/// The store.
pub struct Ledger {
    db: sled::Db,
    commit: GroupCommit,
    /// Serialises read-modify-write sequences (one process owns the store).
    write: Mutex<()>,
    /// What each plugin keeps in and has lately written to `vipd.kv`.
    kv_usage: kv::Usage,
    /// Stamps transitions' milliseconds (the system's, or a test's).
    clock: std::sync::Arc<dyn crate::model::Clock>,
    /// Orders by state, each account's orders, vendor ids and spend:
    /// derived from every order at open, then kept as each order is
    /// written (under the write lock). See `derived.rs`.
    derived: Derived,
    /// The open orders, decoded (see `resident.rs`).
    open_orders: resident::Resident,
    /// Whether the store holds a [`Hold`]: checked before every plan, so
    /// it is read from sled only while there is one.
    hold_stored: std::sync::atomic::AtomicBool,
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
    /// Waits until every write so far is on stable storage.
    pub async fn durable(&self) -> Result<(), LedgerError> {
        self.commit.durable().await.map_err(LedgerError::NotDurable)
    }

    /// Whether the store can make a write durable now: writes a probe
    /// record and waits for it (one group commit). What `/healthz` asks.
    pub async fn probe(&self) -> Result<(), LedgerError> {
        if let Some(e) = self.commit.failure() {
            return Err(LedgerError::NotDurable(e));
        }
        // Any value does (the write is what is probed): the change count.
        let value = self.commit.changes().to_be_bytes();
        self.io(self.db.insert(keys::PROBE, &value[..]))?;
        self.durable().await
    }

    /// Resolves when the store has failed to make writes durable (sticky;
    /// see [`GroupCommit`]).
    pub async fn failed(&self) -> String {
        self.commit.failed().await
    }

    /// This store, stamping transitions with `clock` (a test's; the
    /// system's by default).
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::model::Clock>) -> Ledger {
        self.clock = clock;
        self
    }

    /// Durability waits count as work under tokio's paused time: see
    /// [`GroupCommit::wait_as_work`]. For in-process tests.
    pub fn wait_for_disk_as_work(&self) {
        self.commit.wait_as_work();
    }

    /// Group-commit counters.
    pub(crate) fn commit_stats(&self) -> &CommitStats {
        self.commit.stats()
    }

    /// Writes an order (under the write lock): its record, its share of
    /// what is derived from orders (`was`: its share before; none when
    /// new), then counts the change. One insert, no batch: the commit
    /// thread writes the counter after the changes it counts, so sled's
    /// log never makes the counter durable without them (see `seal.rs`).
    fn write_order(&self, was: Option<&Share>, order: &Order) -> Result<(), LedgerError> {
        self.io(self
            .db
            .insert(keys::order(&order.key).as_bytes(), json(order)))?;
        self.derived.written(was, order);
        self.open_orders.written(order);
        self.commit.count_change();
        Ok(())
    }

    /// The hold on new orders, if there is one.
    pub fn hold(&self) -> Result<Option<Hold>, LedgerError> {
        if !self.hold_stored.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(None);
        }
        match self.db.get(keys::HOLD)? {
            None => Ok(None),
            Some(v) => decode(keys::HOLD, &v).map(Some),
        }
    }

    /// Why new orders for `account` are held, if they are.
    pub fn held(&self, account: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.hold()?.and_then(|h| h.of(account)))
    }

    /// Holds every new order, for `reason`.
    pub fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError> {
        let _guard = self.lock();
        self.hold_stored
            .store(true, std::sync::atomic::Ordering::Release);
        self.io(put_hold(&self.db, now, reason))
    }

    /// Releases the hold for one account, or (`None`) entirely. Returns
    /// what is still held afterwards.
    pub fn release(&self, account: Option<&str>) -> Result<Option<Hold>, LedgerError> {
        let _guard = self.lock();
        let Some(mut hold) = self.hold()? else {
            return Ok(None);
        };
        match account {
            None => {
                self.io(self.db.remove(keys::HOLD))?;
                self.hold_stored
                    .store(false, std::sync::atomic::Ordering::Release);
                Ok(None)
            }
            Some(a) => {
                hold.released.insert(a.to_owned());
                self.io(self.db.insert(keys::HOLD, json(&hold)))?;
                Ok(Some(hold))
            }
        }
    }

    /// A write's result; an I/O error marks the store failed (see
    /// [`Ledger::failed`]): sled does not recover from one until reopened.
    fn io<T>(&self, r: sled::Result<T>) -> Result<T, LedgerError> {
        if let Err(sled::Error::Io(e)) = &r {
            self.commit.fail(&format!("write: {e}"));
        }
        r.map_err(LedgerError::from)
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
        self.io(self.db.insert(key.as_bytes(), json(value)))?;
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
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
