//! Opening a store: the seal and change counter checked, a damaged store
//! refused or accepted and held, backups and restores.

use super::*;

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) fn stored_id(db: &sled::Db) -> Result<Option<[u8; 16]>, LedgerError> {
    Ok(db
        .get(keys::ID)?
        .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok()))
}

pub(super) fn read_seq(db: &sled::Db) -> Result<u64, LedgerError> {
    Ok(db
        .get(keys::SEQ)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Why the store does not match its seal or holds unreadable records;
/// when it is sound, what is derived from its orders (from the same pass
/// that decodes every record, so opening reads each order once).
pub(super) fn check(db: &sled::Db, seal: Option<&seal::Seal>) -> Result<Derived, String> {
    let id = stored_id(db).map_err(|e| e.to_string())?;
    let seq = read_seq(db).map_err(|e| e.to_string())?;
    match (seal, id) {
        // A store sealed for the first time (new, or written by an older
        // vipd) that stopped before its seal was written: no change was
        // counted under its id, so none can have been lost.
        (None, Some(_)) if seq == 0 => {}
        (None, Some(id)) => {
            return Err(format!(
                "the seal file is missing beside ledger {} (deleted, or the store was copied without it)",
                seal::hex(&id)
            ));
        }
        (Some(s), None) => {
            return Err(format!(
                "the store has no ledger id but its seal names ledger {}: its db file was deleted or replaced",
                seal::hex(&s.id)
            ));
        }
        (Some(s), Some(id)) if s.id != id => {
            return Err(format!(
                "the store is ledger {} but its seal names ledger {}",
                seal::hex(&id),
                seal::hex(&s.id)
            ));
        }
        (Some(s), Some(_)) if seq < s.seq => {
            return Err(format!(
                "the store holds changes up to #{seq} but #{} were made durable: writes were lost (a damaged or truncated file, or an older copy put back)",
                s.seq
            ));
        }
        _ => {}
    }
    let (bad, derived) = scan_records(db);
    match bad.first() {
        Some((k, why)) => Err(format!(
            "record {} does not decode: {why}",
            String::from_utf8_lossy(k)
        )),
        None => Ok(derived),
    }
}

/// Records of orders, budgets and indexes that do not decode.
pub(super) fn unreadable(db: &sled::Db) -> Vec<(sled::IVec, String)> {
    scan_records(db).0
}

/// Decodes every order (and an older store's spend and vendor rows): those
/// that do not decode, and what is derived from the orders that do.
fn scan_records(db: &sled::Db) -> (Vec<(sled::IVec, String)>, Derived) {
    let mut bad = Vec::new();
    let derived = Derived::default();
    // Orders first: an older store's vendor rows only fill gaps.
    for prefix in [keys::ORDERS, keys::LEGACY_SPEND, keys::LEGACY_VENDOR] {
        for item in db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = match item {
                Err(e) => {
                    bad.push((sled::IVec::from(prefix.as_bytes()), e.to_string()));
                    continue;
                }
                Ok(kv) => kv,
            };
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let ok = match prefix {
                keys::ORDERS => serde_json::from_slice::<Order>(&v).map(|o| derived.opened(&o)),
                keys::LEGACY_SPEND => serde_json::from_slice::<Spend>(&v).map(|spend| {
                    if let Some((rule, period)) = name.rsplit_once('/') {
                        derived.legacy_spend(rule, period, spend);
                    }
                }),
                _ => {
                    if let Some((provider, id)) = name.split_once('/') {
                        derived.legacy_vendor(provider, id, &String::from_utf8_lossy(&v));
                    }
                    Ok(())
                }
            };
            if let Err(e) = ok {
                bad.push((k, e.to_string()));
            }
        }
    }
    (bad, derived)
}

/// Makes a damaged store usable: unreadable records set aside under `q/`,
/// an id if it lost its own, and every new order held.
pub(super) fn accept_damaged(
    db: &sled::Db,
    reason: &str,
    at: i64,
) -> Result<[u8; 16], LedgerError> {
    for (k, why) in unreadable(db) {
        tracing::error!(record = %String::from_utf8_lossy(&k), "setting aside a record that does not decode: {why}");
        if let Some(v) = db.remove(&k)? {
            let mut q = keys::QUARANTINE.as_bytes().to_vec();
            q.extend_from_slice(&k);
            db.insert(q, v)?;
        }
    }
    let id = match stored_id(db)? {
        Some(id) => id,
        None => {
            let id = seal::new_id();
            db.insert(keys::ID, &id[..])?;
            id
        }
    };
    put_hold(db, at, &format!("damaged store accepted: {reason}"))?;
    Ok(id)
}

/// Holds every new order from `since`, for `reason` (none released yet).
pub(super) fn put_hold(db: &sled::Db, since: i64, reason: &str) -> sled::Result<()> {
    let hold = Hold {
        since,
        reason: reason.to_owned(),
        released: Default::default(),
    };
    db.insert(keys::HOLD, json(&hold)).map(|_| ())
}

impl Ledger {
    /// Opens (or creates) the store in `dir`. Fails if another process
    /// holds it (after [`LOCK_WAIT`]), and refuses a damaged store (see
    /// `seal.rs`) with [`LedgerError::Damaged`].
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, OpenMode::Normal)
    }

    /// [`Ledger::open`], choosing what to do with a damaged store.
    pub(crate) fn open_with(dir: &Path, mode: OpenMode) -> Result<Ledger, LedgerError> {
        let open_err = |reason: String| LedgerError::Open {
            path: dir.display().to_string(),
            reason,
        };
        let damaged = |reason: String| LedgerError::Damaged {
            path: dir.display().to_string(),
            reason,
        };
        folder::prepare(dir)?;
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
                Err(e) if folder::refused_write(&e) => {
                    return Err(LedgerError::NotWritable {
                        path: dir.display().to_string(),
                        reason: e.to_string(),
                    });
                }
                // Anything else sled refuses is damage it found itself.
                Err(e) => return Err(damaged(format!("the store cannot be read: {e}"))),
                Ok(db) => break db,
            }
        };
        let checked = match &seal {
            Err(why) => Err(why.clone()),
            Ok(seal) => check(&db, seal.as_ref()),
        };
        let (ledger_id, derived) = match (checked, mode) {
            (Ok(derived), _) => match stored_id(&db)? {
                Some(id) => (id, derived),
                None => {
                    // A new store, or one an older vipd wrote: give it an id.
                    if db.scan_prefix(keys::ORDERS).next().is_some() {
                        tracing::info!(store = %dir.display(), "sealing a store written before stores were sealed");
                    }
                    let id = seal::new_id();
                    db.insert(keys::ID, &id[..])?;
                    (id, derived)
                }
            },
            (Err(reason), OpenMode::Normal) => return Err(damaged(reason)),
            (Err(reason), OpenMode::AcceptDamaged { at }) => {
                tracing::error!(store = %dir.display(), "accepting a damaged store: {reason}; every new order is held until `vipd store release`");
                let id = accept_damaged(&db, &reason, at)?;
                // What was set aside is not counted.
                (id, scan_records(&db).1)
            }
        };
        db.flush()?;
        let file =
            std::fs::File::open(dir.join("db")).map_err(|e| open_err(format!("db file: {e}")))?;
        file.sync_all()
            .map_err(|e| open_err(format!("db file: {e}")))?;
        let changes = read_seq(&db)?;
        let hold_stored = db.contains_key(keys::HOLD)?;
        let sealer = seal::SealWriter::create(&seal_path, ledger_id, changes)
            .map_err(|e| open_err(format!("seal: {e}")))?;
        // sled made its files with the process's umask.
        if let Err(e) = folder::make_private(dir) {
            tracing::warn!(store = %dir.display(), error = %e, "cannot make the store's files private (0600)");
        }
        // The directory entries of a fresh store must be durable too. A
        // file system that cannot sync a directory at all says EINVAL (its
        // entries are as durable as it makes them); any other failure
        // means the store's files may not survive power loss: refused.
        match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                return Err(open_err(format!("syncing the folder: {e}")));
            }
            _ => {}
        }
        let commit = GroupCommit::start(db.clone(), file, changes, sealer)
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Ledger {
            db,
            commit,
            write: Mutex::new(()),
            kv_usage: kv::Usage::default(),
            open_orders: resident::Resident::default(),
            hold_stored: std::sync::atomic::AtomicBool::new(hold_stored),
            clock: std::sync::Arc::new(crate::model::SystemClock),
            derived,
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
            l.commit.changes(),
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
    /// `now` (unix seconds) is the backup's `taken_at`.
    pub fn backup(&self, out: &mut impl std::io::Write, now: i64) -> Result<usize, LedgerError> {
        let io = |e: std::io::Error| LedgerError::NotDurable(format!("writing the backup: {e}"));
        let _guard = self.lock();
        let header = serde_json::json!({
            "vipd_backup": 1,
            "ledger": seal::hex(&stored_id(&self.db)?.unwrap_or_default()),
            "seq": self.commit.changes(),
            "taken_at": now,
        });
        writeln!(out, "{header}").map_err(io)?;
        let mut n = 0;
        for item in self.db.iter() {
            let (k, v) = item?;
            if k.starts_with(keys::META.as_bytes()) {
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
    /// The hold is dated `now` (unix seconds).
    pub fn restore(
        dir: &Path,
        input: impl std::io::BufRead,
        now: i64,
    ) -> Result<String, LedgerError> {
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
            if k.starts_with(keys::META.as_bytes()) {
                continue;
            }
            batch.insert(k, v);
            n += 1;
        }
        batch.insert(keys::SEQ, &seq.max(1).to_be_bytes()[..]);
        ledger.db.apply_batch(batch)?;
        ledger.commit.count_at_least(seq.max(1));
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
            now,
            &format!(
                "restored from a backup taken at {}: orders paid since may be missing",
                crate::timefmt::utc(taken_at)
            ),
        )?;
        ledger
            .commit
            .durable_blocking()
            .map_err(LedgerError::NotDurable)?;
        Ok(format!(
            "restored {n} records from a backup taken at {} into {}; every new order is held until `vipd store release`",
            crate::timefmt::utc(taken_at),
            dir.display()
        ))
    }
}
