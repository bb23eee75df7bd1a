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
mod seal;
pub mod store;

use std::path::Path;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use durable::{CommitStats, GroupCommit};
pub use order::{
    AttemptRecord, AttemptState, BudgetHold, Order, OrderState, Transition, Verification,
    decision_key,
};

use crate::model::Budget;
use crate::model::Membership;
use crate::units::Fen;

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

/// What to do when the store fails its check at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Refuse it.
    Normal,
    /// Use it as it is: re-seal it, set aside records that do not decode,
    /// and hold every new order until an operator releases them.
    AcceptDamaged,
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

/// The ledger id.
const ID_KEY: &[u8] = b"m/id";
/// The change counter (u64, big-endian).
const SEQ_KEY: &[u8] = b"m/seq";
/// The [`Hold`], when there is one.
const HOLD_KEY: &[u8] = b"m/hold";
/// Where records that did not decode are set aside.
const QUARANTINE: &str = "q/";

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn stored_id(db: &sled::Db) -> Result<Option<[u8; 16]>, LedgerError> {
    Ok(db
        .get(ID_KEY)?
        .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok()))
}

fn read_seq(db: &sled::Db) -> Result<u64, LedgerError> {
    Ok(db
        .get(SEQ_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Why the store does not match its seal or holds unreadable records.
fn check(db: &sled::Db, seal: Option<&seal::Seal>) -> Option<String> {
    let id = match stored_id(db) {
        Ok(id) => id,
        Err(e) => return Some(e.to_string()),
    };
    let seq = match read_seq(db) {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    match (seal, id) {
        // A store sealed for the first time (new, or written by an older
        // vipd) that stopped before its seal was written: no change was
        // counted under its id, so none can have been lost.
        (None, Some(_)) if seq == 0 => {}
        (None, Some(id)) => {
            return Some(format!(
                "the seal file is missing beside ledger {} (deleted, or the store was copied without it)",
                seal::hex(&id)
            ));
        }
        (Some(s), None) => {
            return Some(format!(
                "the store has no ledger id but its seal names ledger {}: its db file was deleted or replaced",
                seal::hex(&s.id)
            ));
        }
        (Some(s), Some(id)) if s.id != id => {
            return Some(format!(
                "the store is ledger {} but its seal names ledger {}",
                seal::hex(&id),
                seal::hex(&s.id)
            ));
        }
        (Some(s), Some(_)) if seq < s.seq => {
            return Some(format!(
                "the store holds changes up to #{seq} but #{} were made durable: writes were lost (a damaged or truncated file, or an older copy put back)",
                s.seq
            ));
        }
        _ => {}
    }
    unreadable(db).first().map(|(k, why)| {
        format!(
            "record {} does not decode: {why}",
            String::from_utf8_lossy(k)
        )
    })
}

/// Records of orders, budgets and indexes that do not decode.
fn unreadable(db: &sled::Db) -> Vec<(sled::IVec, String)> {
    let mut bad = Vec::new();
    for prefix in ["o/", "b/"] {
        for item in db.scan_prefix(prefix.as_bytes()) {
            match item {
                Err(e) => bad.push((sled::IVec::from(prefix.as_bytes()), e.to_string())),
                Ok((k, v)) => {
                    let ok = if prefix == "o/" {
                        serde_json::from_slice::<Order>(&v).map(|_| ())
                    } else {
                        serde_json::from_slice::<Spend>(&v).map(|_| ())
                    };
                    if let Err(e) = ok {
                        bad.push((k, e.to_string()));
                    }
                }
            }
        }
    }
    bad
}

/// Makes a damaged store usable: unreadable records set aside under `q/`,
/// an id if it lost its own, and every new order held.
fn accept_damaged(db: &sled::Db, reason: &str) -> Result<[u8; 16], LedgerError> {
    for (k, why) in unreadable(db) {
        tracing::error!(record = %String::from_utf8_lossy(&k), "setting aside a record that does not decode: {why}");
        if let Some(v) = db.remove(&k)? {
            let mut q = QUARANTINE.as_bytes().to_vec();
            q.extend_from_slice(&k);
            db.insert(q, v)?;
        }
    }
    let id = match stored_id(db)? {
        Some(id) => id,
        None => {
            let id = seal::new_id();
            db.insert(ID_KEY, &id[..])?;
            id
        }
    };
    put_hold(
        db,
        crate::model::now_unix(),
        &format!("damaged store accepted: {reason}"),
    )?;
    Ok(id)
}

/// Holds every new order from `since`, for `reason` (none released yet).
fn put_hold(db: &sled::Db, since: i64, reason: &str) -> sled::Result<()> {
    let hold = Hold {
        since,
        reason: reason.to_owned(),
        released: Default::default(),
    };
    db.insert(HOLD_KEY, json(&hold)).map(|_| ())
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
    /// New orders are held (see [`Hold`]).
    Held { why: String },
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
            Refusal::Held { why } => write!(f, "new orders are held: {why}"),
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
    /// What each plugin keeps in and has lately written to `vipd.kv`.
    kv_usage: kv::Usage,
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
    /// holds it (after [`LOCK_WAIT`]), and refuses a damaged store (see
    /// `seal.rs`) with [`LedgerError::Damaged`].
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, OpenMode::Normal)
    }

    /// [`Ledger::open`], choosing what to do with a damaged store.
    pub fn open_with(dir: &Path, mode: OpenMode) -> Result<Ledger, LedgerError> {
        let open_err = |reason: String| LedgerError::Open {
            path: dir.display().to_string(),
            reason,
        };
        let damaged = |reason: String| LedgerError::Damaged {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let seal_path = dir.join("seal");
        let seal = seal::read(&seal_path);
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
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    return Err(open_err(
                        "another process holds it (a vipd already running with this state_dir? \
                         `vipd status` asks a running one)"
                            .into(),
                    ));
                }
                // Anything else sled refuses is damage it found itself.
                Err(e) => return Err(damaged(format!("the store cannot be read: {e}"))),
                Ok(db) => break db,
            }
        };
        let problem = match &seal {
            Err(why) => Some(why.clone()),
            Ok(seal) => check(&db, seal.as_ref()),
        };
        let ledger_id = match (problem, mode) {
            (None, _) => match stored_id(&db)? {
                Some(id) => id,
                None => {
                    // A new store, or one an older vipd wrote: give it an id.
                    if db.scan_prefix(b"o/").next().is_some() {
                        tracing::info!(store = %dir.display(), "sealing a store written before stores were sealed");
                    }
                    let id = seal::new_id();
                    db.insert(ID_KEY, &id[..])?;
                    id
                }
            },
            (Some(reason), OpenMode::Normal) => return Err(damaged(reason)),
            (Some(reason), OpenMode::AcceptDamaged) => {
                tracing::error!(store = %dir.display(), "accepting a damaged store: {reason}; every new order is held until `vipd store release`");
                accept_damaged(&db, &reason)?
            }
        };
        db.flush()?;
        let file =
            std::fs::File::open(dir.join("db")).map_err(|e| open_err(format!("db file: {e}")))?;
        file.sync_all()
            .map_err(|e| open_err(format!("db file: {e}")))?;
        let sealer = seal::SealWriter::create(&seal_path, ledger_id, read_seq(&db)?)
            .map_err(|e| open_err(format!("seal: {e}")))?;
        // The directory entries of a fresh store must be durable too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let commit =
            GroupCommit::start(db.clone(), file, sealer).map_err(|e| open_err(e.to_string()))?;
        Ok(Ledger {
            db,
            commit,
            write: Mutex::new(()),
            kv_usage: kv::Usage::default(),
        })
    }

    /// Checks the store in `dir` without opening it for writing: what
    /// `vipd store verify` prints. `Ok` with a summary, or the damage.
    pub fn verify(dir: &Path) -> Result<String, LedgerError> {
        if !dir.join("db").exists() && !dir.join("seal").exists() {
            return Err(LedgerError::Open {
                path: dir.display().to_string(),
                reason: "there is no store here".into(),
            });
        }
        let l = Ledger::open(dir)?;
        let counts = l.count_by_state()?;
        let held = l.hold()?;
        let total: usize = counts.values().sum();
        Ok(format!(
            "store {} is sound: ledger {}, {} changes, {total} orders ({}){}",
            dir.display(),
            seal::hex(&stored_id(&l.db)?.unwrap_or_default()),
            read_seq(&l.db)?,
            counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", "),
            match held {
                Some(h) => format!(
                    "; new orders HELD since {}: {}",
                    crate::timefmt::utc(h.since),
                    h.reason
                ),
                None => String::new(),
            }
        ))
    }

    /// Writes a backup: a JSON header line, then one line per record
    /// (`{"k": hex, "v": hex}`). Orders and budgets are copied under the
    /// write lock, so the backup is one consistent point of the ledger.
    /// Returns the number of records.
    pub fn backup(&self, out: &mut impl std::io::Write) -> Result<usize, LedgerError> {
        let io = |e: std::io::Error| LedgerError::Durability(format!("writing the backup: {e}"));
        let _guard = self.lock();
        let header = serde_json::json!({
            "vipd_backup": 1,
            "ledger": seal::hex(&stored_id(&self.db)?.unwrap_or_default()),
            "seq": read_seq(&self.db)?,
            "taken_at": crate::model::now_unix(),
        });
        writeln!(out, "{header}").map_err(io)?;
        let mut n = 0;
        for item in self.db.iter() {
            let (k, v) = item?;
            if k.starts_with(b"m/") {
                continue;
            }
            let line = serde_json::json!({
                "k": crate::units::hex_lower(&k),
                "v": crate::units::hex_lower(&v),
            });
            writeln!(out, "{line}").map_err(io)?;
            n += 1;
        }
        out.flush().map_err(io)?;
        Ok(n)
    }

    /// Makes a new store in `dir` (which must hold none) from a backup.
    /// The restored ledger may be older than the vendor's reality, so
    /// every new order is held until an operator releases them.
    pub fn restore(dir: &Path, input: impl std::io::BufRead) -> Result<String, LedgerError> {
        let bad = |line: usize, why: String| LedgerError::Corrupt {
            key: format!("backup line {line}"),
            reason: why,
        };
        if dir.join("db").exists() || dir.join("seal").exists() {
            return Err(LedgerError::Open {
                path: dir.display().to_string(),
                reason: "a store is already there; move it aside first (it may be needed to find out what was paid)".into(),
            });
        }
        let mut lines = input.lines().enumerate();
        let header: serde_json::Value = match lines.next() {
            Some((_, Ok(l))) => serde_json::from_str(&l).map_err(|e| bad(1, e.to_string()))?,
            _ => return Err(bad(1, "empty backup".into())),
        };
        if header["vipd_backup"] != 1 {
            return Err(bad(
                1,
                "not a vipd backup (no `vipd_backup: 1` header)".into(),
            ));
        }
        let taken_at = header["taken_at"].as_i64().unwrap_or(0);
        let seq = header["seq"].as_u64().unwrap_or(0);
        let ledger = Ledger::open(dir)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for (i, line) in lines {
            let line = line.map_err(|e| bad(i + 1, e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            #[derive(Deserialize)]
            struct Record {
                k: String,
                v: String,
            }
            let r: Record = serde_json::from_str(&line).map_err(|e| bad(i + 1, e.to_string()))?;
            let k = unhex(&r.k).ok_or_else(|| bad(i + 1, "k is not hex".into()))?;
            let v = unhex(&r.v).ok_or_else(|| bad(i + 1, "v is not hex".into()))?;
            if k.starts_with(b"m/") {
                continue;
            }
            batch.insert(k, v);
            n += 1;
        }
        batch.insert(SEQ_KEY, &seq.max(1).to_be_bytes()[..]);
        ledger.db.apply_batch(batch)?;
        if let Some((k, why)) = unreadable(&ledger.db).first() {
            return Err(bad(
                0,
                format!(
                    "record {} does not decode: {why}",
                    String::from_utf8_lossy(k)
                ),
            ));
        }
        ledger.hold_all(
            crate::model::now_unix(),
            &format!(
                "restored from a backup taken at {}: orders paid since may be missing",
                crate::timefmt::utc(taken_at)
            ),
        )?;
        ledger
            .commit
            .durable_blocking()
            .map_err(LedgerError::Durability)?;
        Ok(format!(
            "restored {n} records from a backup taken at {} into {}; every new order is held until `vipd store release`",
            crate::timefmt::utc(taken_at),
            dir.display()
        ))
    }

    /// Waits until every write so far is on stable storage.
    pub async fn durable(&self) -> Result<(), LedgerError> {
        self.commit.durable().await.map_err(LedgerError::Durability)
    }

    /// Whether the store can make a write durable now: writes a probe
    /// record and waits for it (one group commit). What `/healthz` asks.
    pub async fn probe(&self) -> Result<(), LedgerError> {
        if let Some(e) = self.commit.failure() {
            return Err(LedgerError::Durability(e));
        }
        self.io(self
            .db
            .insert(b"m/probe", &crate::model::now_unix().to_be_bytes()[..]))?;
        self.durable().await
    }

    /// Resolves when the store has failed to make writes durable (sticky;
    /// see [`GroupCommit`]).
    pub async fn failed(&self) -> String {
        self.commit.failed().await
    }

    /// Durability waits count as work under tokio's paused time: see
    /// [`GroupCommit::wait_as_work`]. For in-process tests.
    pub fn wait_for_disk_as_work(&self) {
        self.commit.wait_as_work();
    }

    /// Group-commit counters.
    pub fn commit_stats(&self) -> &CommitStats {
        self.commit.stats()
    }

    /// Adds the change counter's next value to a batch that changes an
    /// order or a budget (under the write lock). See `seal.rs`.
    fn count_change(&self, batch: &mut sled::Batch) -> Result<(), LedgerError> {
        let next = read_seq(&self.db)? + 1;
        batch.insert(SEQ_KEY, &next.to_be_bytes()[..]);
        Ok(())
    }

    /// The hold on new orders, if there is one.
    pub fn hold(&self) -> Result<Option<Hold>, LedgerError> {
        match self.db.get(HOLD_KEY)? {
            None => Ok(None),
            Some(v) => decode(HOLD_KEY, &v).map(Some),
        }
    }

    /// Why new orders for `account` are held, if they are.
    pub fn held(&self, account: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .hold()?
            .filter(|h| !h.released.contains(account))
            .map(|h| {
                format!(
                    "{} (since {}); check the vendor's orders, then `vipd store release`",
                    h.reason,
                    crate::timefmt::utc(h.since)
                )
            }))
    }

    /// Holds every new order, for `reason`.
    pub fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError> {
        let _guard = self.lock();
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
                self.io(self.db.remove(HOLD_KEY))?;
                Ok(None)
            }
            Some(a) => {
                hold.released.insert(a.to_owned());
                self.io(self.db.insert(HOLD_KEY, json(&hold)))?;
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
            attempt_log: Vec::new(),
        });
        if order.attempts > 0 {
            // Records of earlier attempts (made up for old orders).
            order.attempt_mut(order.attempts);
        }
        order.attempts += 1;
        order.retry_at = None;
        order.max_price = req.max_price;
        let hold = BudgetHold {
            day: req.day.clone(),
            month: req.month.clone(),
            amount: req.max_price,
        };
        order.attempt_log.push(AttemptRecord {
            n: order.attempts,
            state: AttemptState::Planned,
            vendor_orderid: None,
            spent: Fen::ZERO,
            periods: hold.clone(),
        });
        order.hold = Some(hold);
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
        self.count_change(&mut batch)?;
        self.io(self.db.apply_batch(batch))?;
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
        // Two changes to one period in one batch must add up, not overwrite.
        let mut spends: Vec<(String, Spend)> = Vec::new();
        for change in &fx.budget {
            for period in [&change.periods.day, &change.periods.month] {
                if period.is_empty() {
                    continue;
                }
                let at = match spends.iter().position(|(p, _)| p == period) {
                    Some(i) => i,
                    None => {
                        spends.push((period.clone(), self.spend(&order.rule, period)?));
                        spends.len() - 1
                    }
                };
                let spend = &mut spends[at].1;
                spend.reserved.0 = (spend.reserved.0 + change.reserved.0).max(0);
                spend.settled.0 = (spend.settled.0 + change.settled.0).max(0);
            }
        }
        for (period, spend) in spends {
            batch.insert(
                format!("b/{}/{period}", order.rule).as_bytes(),
                json(&spend),
            );
        }
        if let Some((n, id)) = &fx.vendor_index {
            batch.insert(
                format!("x/{}/{id}", order.provider).as_bytes(),
                format!("{}#{n}", order.key).as_bytes(),
            );
        }
        order.spent = Fen(order.attempt_log.iter().map(|a| a.spent.0).sum());
        batch.insert(format!("o/{}", order.key).as_bytes(), json(&order));
        self.count_change(&mut batch)?;
        self.io(self.db.apply_batch(batch))?;
        Ok((order, r))
    }

    /// `planned` → `sent`, just before the request leaves. The caller must
    /// await [`Ledger::durable`] before sending: after a crash, `sent`
    /// means "may have left" and becomes `unknown`.
    pub fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError> {
        self.modify(key, |o, _| {
            expect_state(o, &[OrderState::Planned], OrderState::Sent)?;
            o.attempt_mut(o.attempts).state = AttemptState::Sent;
            o.enter(OrderState::Sent, now, "request leaving");
            Ok(())
        })
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
        outcome: &str,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError> {
        self.modify(key, |o, fx| {
            let to = match &result {
                AttemptResult::Succeeded { .. } => OrderState::Succeeded,
                AttemptResult::Pending { .. } => OrderState::Pending,
                AttemptResult::Unknown => OrderState::Unknown,
                AttemptResult::Failed { .. } => OrderState::Failed,
            };
            let n = o.attempts;
            if o.attempt_mut(n).state != AttemptState::Sent {
                return Err(LedgerError::Illegal {
                    key: o.key.clone(),
                    from: o.state,
                    to,
                });
            }
            let follows = o.state == OrderState::Sent;
            let mut conflict = None;
            o.last_outcome = Some(outcome.to_owned());
            match result {
                AttemptResult::Succeeded {
                    price,
                    vendor_orderid,
                    verify_deadline,
                } => {
                    charge(o, n, fx, price);
                    index_vendor(o, n, fx, vendor_orderid);
                    o.attempt_mut(n).state = AttemptState::Paid;
                    conflict = billed_twice(o, n);
                    if follows {
                        o.verification = Verification::Waiting {
                            deadline: verify_deadline,
                        };
                    }
                }
                AttemptResult::Pending {
                    price,
                    vendor_orderid,
                } => {
                    charge(o, n, fx, price);
                    index_vendor(o, n, fx, vendor_orderid);
                    o.attempt_mut(n).state = AttemptState::Pending;
                }
                AttemptResult::Unknown => o.attempt_mut(n).state = AttemptState::Unknown,
                AttemptResult::Failed { retry_at } => {
                    refund(o, n, fx);
                    o.attempt_mut(n).state = AttemptState::NotPaid;
                    if follows {
                        o.retry_at = retry_at;
                    }
                }
            }
            if follows {
                o.enter(to, now, format!("{outcome}: {detail}"));
            } else {
                let state = o.state;
                o.enter(
                    state,
                    now,
                    format!(
                        "attempt {n} answered after the order was settled: {outcome}: {detail}"
                    ),
                );
            }
            Ok(conflict)
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
        Ok(match self.settle_attempt(key, None, now, settlement)? {
            Settled::Changed { order, .. } => Some(order),
            Settled::Repeated | Settled::Contradicted { .. } => None,
        })
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
        let (order, result) = self.modify(key, |o, fx| {
            let current = o.attempts;
            let n = attempt.unwrap_or(current);
            if n == 0 || n > current {
                return Ok(Err(format!(
                    "attempt {n} does not exist (the order has {current})"
                )));
            }
            let was = o.attempt_mut(n).state;
            match &settlement {
                Settlement::Paid {
                    price,
                    verify_deadline,
                    why,
                } => {
                    if was == AttemptState::Paid {
                        // The order itself may still be open when the
                        // current attempt was answered 10000 earlier.
                        return Ok(Ok(None));
                    }
                    if matches!(was, AttemptState::Planned) {
                        return Ok(Err(format!("attempt {n} was never sent")));
                    }
                    charge(o, n, fx, *price);
                    o.attempt_mut(n).state = AttemptState::Paid;
                    let conflict = if let Some(twice) = billed_twice(o, n) {
                        Some(twice)
                    } else if was == AttemptState::NotPaid {
                        Some(format!(
                            "the vendor billed attempt {n}, which the ledger had as not paid; counted in the budget"
                        ))
                    } else {
                        None
                    };
                    if o.state != OrderState::Succeeded {
                        o.retry_at = None;
                        if o.verification == Verification::None {
                            o.verification = Verification::Waiting {
                                deadline: *verify_deadline,
                            };
                        }
                        let why = if n == current {
                            why.clone()
                        } else {
                            format!("{why}; for attempt {n} of {current}")
                        };
                        o.enter(OrderState::Succeeded, now, why);
                    } else {
                        o.enter(
                            OrderState::Succeeded,
                            now,
                            format!("{why}; attempt {n} paid as well"),
                        );
                    }
                    Ok(Ok(Some(conflict)))
                }
                Settlement::NotPaid { retry_at, why } => match was {
                    AttemptState::NotPaid | AttemptState::Planned => Ok(Ok(None)),
                    AttemptState::Paid => Ok(Err(format!(
                        "attempt {n} is recorded as paid; the vendor now says: {why}"
                    ))),
                    AttemptState::Sent | AttemptState::Pending | AttemptState::Unknown => {
                        refund(o, n, fx);
                        o.attempt_mut(n).state = AttemptState::NotPaid;
                        if n == current && o.state.is_open() {
                            o.retry_at = *retry_at;
                            o.enter(OrderState::Failed, now, why.clone());
                        } else {
                            let state = o.state;
                            o.enter(state, now, format!("attempt {n}: {why}"));
                        }
                        Ok(Ok(Some(None)))
                    }
                },
            }
        })?;
        Ok(match result {
            Ok(Some(conflict)) => Settled::Changed { order, conflict },
            Ok(None) => Settled::Repeated,
            Err(why) => Settled::Contradicted { order, why },
        })
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
            for n in o.paid_attempts() {
                refund(o, n, fx);
                o.attempt_mut(n).state = AttemptState::NotPaid;
            }
            o.retry_at = Some(now);
            o.enter(OrderState::Failed, now, why);
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// A `pending` order whose callback did not come in time becomes
    /// `unknown`: possibly paid (its money stays counted), never re-sent,
    /// resolved by evidence, a late callback, or an operator.
    pub fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        self.modify(key, |o, _| {
            expect_state(o, &[OrderState::Pending], OrderState::Unknown)?;
            let n = o.attempts;
            o.attempt_mut(n).state = AttemptState::Unknown;
            o.enter(OrderState::Unknown, now, why);
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

    /// The attempt a vendor order id names: `(key, attempt)`. Entries
    /// written before attempts were recorded name only the key; they
    /// stand for the order's current attempt.
    pub fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<(String, Option<u32>)>, LedgerError> {
        Ok(self
            .key_of_vendor_order(provider, vendor_orderid)?
            .map(|v| {
                match v
                    .rsplit_once('#')
                    .and_then(|(k, n)| Some((k, n.parse().ok()?)))
                {
                    Some((k, n)) => (k.to_owned(), Some(n)),
                    None => (v, None),
                }
            }))
    }

    /// Binds a vendor order id to the current attempt of `key` (a callback
    /// matched by its target, whose reply was lost), so that the same
    /// callback delivered again finds the same attempt.
    pub fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError> {
        self.modify(key, |o, fx| {
            let n = o.attempts;
            index_vendor(o, n, fx, Some(vendor_orderid.to_owned()));
            Ok(n)
        })
        .map(|(_, n)| n)
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
                        o.attempt_mut(o.attempts).state = AttemptState::Unknown;
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
                        let n = o.attempts;
                        refund(o, n, fx);
                        o.attempt_mut(n).state = AttemptState::NotPaid;
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
            self.io(self.db.apply_batch(batch))?;
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

/// What [`Ledger::record_attempt`] did.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The order after the reply.
    pub order: Order,
    /// Set when the reply billed an attempt while another attempt of the
    /// same period is paid already: the money is counted, and an operator
    /// must hear about it.
    pub conflict: Option<String>,
}

/// What settling an attempt did ([`Ledger::settle_attempt`]).
#[derive(Debug)]
pub enum Settled {
    /// The attempt (and perhaps the order) changed. `conflict` says how
    /// the vendor's word contradicts the ledger (an attempt recorded as
    /// not paid was billed, or a second attempt of one period was paid):
    /// the money is counted, and an operator must hear about it.
    Changed {
        order: Order,
        conflict: Option<String>,
    },
    /// The attempt already stood so (a re-delivered or replayed callback).
    Repeated,
    /// The vendor's word contradicts a paid attempt, or names no attempt
    /// that was sent: nothing changes.
    Contradicted { order: Order, why: String },
}

/// When attempt `n`, just paid, is not the only paid attempt of its
/// order: the period was billed twice. One rule for replies and callbacks.
fn billed_twice(o: &Order, n: u32) -> Option<String> {
    let other = o.paid_attempts().into_iter().find(|m| *m != n)?;
    Some(format!(
        "the period is billed twice: attempt {n} and attempt {other} are both paid"
    ))
}

/// Budget changes a modification makes.
#[derive(Debug, Default)]
struct Effects {
    budget: Vec<BudgetChange>,
    /// `(attempt, vendor order id)` to index.
    vendor_index: Option<(u32, String)>,
}

/// One change to a rule's spend in the periods of one plan.
#[derive(Debug)]
struct BudgetChange {
    periods: BudgetHold,
    reserved: Fen,
    settled: Fen,
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

/// Attempt `n` was billed at `price` (or, when the vendor did not say, at
/// what it was counted at already, else the held maximum). The current
/// attempt's hold, if still there, becomes spending.
fn charge(o: &mut Order, n: u32, fx: &mut Effects, price: Option<Fen>) {
    let hold = if n == o.attempts { o.hold.take() } else { None };
    let a = o.attempt_mut(n);
    let counted = a.spent;
    let paid = price.unwrap_or(if counted > Fen::ZERO {
        counted
    } else {
        a.periods.amount
    });
    a.spent = paid;
    let periods = a.periods.clone();
    fx.budget.push(BudgetChange {
        reserved: Fen(-hold.as_ref().map_or(0, |h| h.amount.0)),
        settled: Fen(paid.0 - counted.0),
        periods: hold.clone().unwrap_or(periods),
    });
    if let Some(h) = hold {
        o.charged_to = Some(h);
    }
    o.price = Some(paid);
}

/// Attempt `n` was not billed (or was refunded): its hold and spending go
/// back to the budget.
fn refund(o: &mut Order, n: u32, fx: &mut Effects) {
    let hold = if n == o.attempts { o.hold.take() } else { None };
    let a = o.attempt_mut(n);
    let counted = std::mem::replace(&mut a.spent, Fen::ZERO);
    let periods = a.periods.clone();
    if hold.is_some() || counted > Fen::ZERO {
        fx.budget.push(BudgetChange {
            reserved: Fen(-hold.as_ref().map_or(0, |h| h.amount.0)),
            settled: Fen(-counted.0),
            periods: hold.unwrap_or(periods),
        });
    }
}

fn index_vendor(o: &mut Order, n: u32, fx: &mut Effects, vendor_orderid: Option<String>) {
    if let Some(id) = vendor_orderid.filter(|s| !s.is_empty()) {
        o.vendor_orderid = Some(id.clone());
        o.attempt_mut(n).vendor_orderid = Some(id.clone());
        fx.vendor_index = Some((n, id));
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
