//! The plugins' key-value store (`vipd.kv`): one namespace per plugin,
//! values as JSON, optional expiry. Lives in the ledger's tree under
//! `k/{plugin}\0{key}` so it shares the store's durability and lock.
//!
//! Each plugin has a [`KvQuota`]: the bytes it may keep (keys plus JSON
//! values, expired values included until a full namespace sweeps them)
//! and the bytes it may write per minute, so that no plugin can fill the
//! disk the ledger needs or wear it out with rewrites.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Ledger, LedgerError, decode, json};

/// The longest key a plugin may use, in bytes.
pub(crate) const MAX_KEY: usize = 256;
/// The largest value a plugin may store, in bytes of JSON.
pub(crate) const MAX_VALUE: usize = 64 << 10;

/// One stored value (the same bytes in every store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) v: serde_json::Value,
    /// Unix seconds after which the value is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) exp: Option<i64>,
}

impl Entry {
    pub(super) fn live(self, now: i64) -> Option<Entry> {
        match self.exp {
            Some(exp) if exp <= now => None,
            _ => Some(self),
        }
    }

    /// The entry's bytes; refused when larger than [`MAX_VALUE`].
    pub(super) fn encode(&self, key: &str) -> Result<Vec<u8>, KvError> {
        let bytes = json(self);
        if bytes.len() > MAX_VALUE {
            return Err(KvError::ValueTooLarge {
                key: key.to_owned(),
                len: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// What `incr` by `by` makes of `old` (the live entry under `key`, if
    /// any): absent counts as 0 and takes `ttl`; the expiry stays the
    /// first one.
    pub(super) fn incremented(
        old: Option<Entry>,
        key: &str,
        by: i64,
        ttl: Option<i64>,
        now: i64,
    ) -> Result<(i64, Entry), KvError> {
        let (n, exp) = match old {
            None => (0, ttl.map(|t| now + t)),
            Some(Entry { v, exp }) => match v.as_i64() {
                Some(n) => (n, exp),
                None => {
                    return Err(KvError::NotAnInteger {
                        key: key.to_owned(),
                        found: v.to_string().chars().take(40).collect(),
                    });
                }
            },
        };
        let new = n.checked_add(by).ok_or_else(|| KvError::Overflow {
            key: key.to_owned(),
        })?;
        Ok((new, Entry { v: new.into(), exp }))
    }
}

/// What one plugin may keep and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    /// Bytes of keys and values kept in its namespace.
    pub stored: u64,
    /// Bytes of keys and values written per minute.
    pub written_per_minute: u64,
}

impl KvQuota {
    /// The same figure for both: `plugins.kv_mb`.
    pub const fn of_bytes(bytes: u64) -> KvQuota {
        KvQuota {
            stored: bytes,
            written_per_minute: bytes,
        }
    }
}

/// Per plugin: bytes stored (counted from the store on first use) and
/// bytes written in the current minute.
#[derive(Debug, Default)]
pub(super) struct Usage(Mutex<HashMap<String, PluginUsage>>);

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PluginUsage>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A plugin's bytes kept, and written in the minute `minute`.
#[derive(Debug, Clone, Copy)]
pub(super) struct PluginUsage {
    pub(super) stored: u64,
    pub(super) minute: i64,
    pub(super) written: u64,
}

impl PluginUsage {
    /// Counts writes from zero again in a new minute.
    pub(super) fn roll(&mut self, now: i64) {
        let minute = now.div_euclid(60);
        if self.minute != minute {
            self.minute = minute;
            self.written = 0;
        }
    }

    /// Refuses `new` bytes more this minute past the write rate.
    pub(super) fn check_rate(&self, key: &str, new: u64, quota: KvQuota) -> Result<(), KvError> {
        if self.written + new > quota.written_per_minute {
            return Err(KvError::WriteRate {
                key: key.to_owned(),
                quota: quota.written_per_minute,
            });
        }
        Ok(())
    }
}

/// Refuses keeping `would` bytes past the quota.
pub(super) fn check_stored(key: &str, would: u64, quota: KvQuota) -> Result<(), KvError> {
    if would > quota.stored {
        return Err(KvError::Quota {
            key: key.to_owned(),
            would,
            quota: quota.stored,
        });
    }
    Ok(())
}

/// What an entry counts against its plugin's quota.
pub(super) fn size(key_len: usize, stored_len: usize) -> u64 {
    (key_len + stored_len) as u64
}

/// How long a key has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No live value under the key.
    Absent,
    /// A live value that never expires.
    Forever,
    /// Seconds until the value expires.
    Left(i64),
}

impl Ttl {
    /// From a live value's expiry (`None`: no live value; `Some(None)`: it
    /// never expires) at `now`.
    pub fn of(expiry: Option<Option<i64>>, now: i64) -> Ttl {
        match expiry {
            None => Ttl::Absent,
            Some(None) => Ttl::Forever,
            Some(Some(at)) => Ttl::Left(at - now),
        }
    }
}

/// Why a kv operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key {key:?} is {len} bytes; the limit is {MAX_KEY}")]
    KeyTooLong { key: String, len: usize },
    #[error("value for key {key:?} is {len} bytes of JSON; the limit is {MAX_VALUE}")]
    ValueTooLarge { key: String, len: usize },
    #[error("key {key:?} holds {found}, not an integer; incr needs an integer")]
    NotAnInteger { key: String, found: String },
    #[error("incr of key {key:?} overflows")]
    Overflow { key: String },
    #[error(
        "storing key {key:?} would keep {would} bytes in this plugin's namespace; \
         its quota is {quota} (plugins.kv_mb): delete keys or give them a ttl"
    )]
    Quota { key: String, would: u64, quota: u64 },
    #[error(
        "writing key {key:?} would pass {quota} bytes written this minute \
         (plugins.kv_mb); try again next minute"
    )]
    WriteRate { key: String, quota: u64 },
    #[error(transparent)]
    Store(#[from] LedgerError),
}

/// Refuses a key longer than [`MAX_KEY`].
pub(super) fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY {
        return Err(KvError::KeyTooLong {
            key: key.chars().take(40).collect::<String>() + "…",
            len: key.len(),
        });
    }
    Ok(())
}

fn kv_key(plugin: &str, key: &str) -> Result<Vec<u8>, KvError> {
    check_key(key)?;
    Ok(super::keys::kv(plugin, key))
}

impl Ledger {
    fn kv_read(&self, k: &[u8], now: i64) -> Result<Option<Entry>, KvError> {
        Ok(match self.db.get(k).map_err(LedgerError::from)? {
            None => None,
            Some(bytes) => decode::<Entry>(k, &bytes)?.live(now),
        })
    }

    /// The live value of `key`, if any.
    pub fn kv_get(
        &self,
        plugin: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<serde_json::Value>, KvError> {
        Ok(self.kv_read(&kv_key(plugin, key)?, now)?.map(|e| e.v))
    }

    /// Stores `value` under `key`, for `ttl` seconds when given, within
    /// the plugin's `quota`.
    pub fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: serde_json::Value,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<(), KvError> {
        let k = kv_key(plugin, key)?;
        let bytes = Entry {
            v: value,
            exp: ttl.map(|t| now + t),
        }
        .encode(key)?;
        let _guard = self.lock();
        self.kv_write(plugin, key, k, bytes, now, quota)
    }

    /// Writes one entry under the write lock, counting it against the
    /// plugin's quota.
    fn kv_write(
        &self,
        plugin: &str,
        key: &str,
        k: Vec<u8>,
        bytes: Vec<u8>,
        now: i64,
        quota: KvQuota,
    ) -> Result<(), KvError> {
        let mut usage = self.kv_usage_of(plugin)?;
        usage.roll(now);
        let new = size(key.len(), bytes.len());
        // What the key holds now; again after a sweep, which may remove it.
        let old_size = || -> Result<u64, KvError> {
            Ok(match self.db.get(&k).map_err(LedgerError::from)? {
                Some(b) => size(key.len(), b.len()),
                None => 0,
            })
        };
        let old = old_size()?;
        let mut would = usage.stored.saturating_sub(old) + new;
        if would > quota.stored {
            usage.stored = usage.stored.saturating_sub(self.kv_sweep(plugin, now)?);
            would = usage.stored.saturating_sub(old_size()?) + new;
            if let Err(e) = check_stored(key, would, quota) {
                self.kv_put_usage(plugin, usage);
                return Err(e);
            }
        }
        if let Err(e) = usage.check_rate(key, new, quota) {
            self.kv_put_usage(plugin, usage);
            return Err(e);
        }
        self.io(self.db.insert(k, bytes))?;
        usage.stored = would;
        usage.written += new;
        self.kv_put_usage(plugin, usage);
        Ok(())
    }

    /// The plugin's usage; counted from the store the first time.
    fn kv_usage_of(&self, plugin: &str) -> Result<PluginUsage, KvError> {
        if let Some(u) = self.kv_usage.lock().get(plugin) {
            return Ok(*u);
        }
        let prefix = kv_key(plugin, "")?;
        let mut stored = 0;
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item.map_err(LedgerError::from)?;
            stored += size(k.len() - prefix.len(), v.len());
        }
        Ok(PluginUsage {
            stored,
            minute: i64::MIN,
            written: 0,
        })
    }

    fn kv_put_usage(&self, plugin: &str, usage: PluginUsage) {
        self.kv_usage.lock().insert(plugin.to_owned(), usage);
    }

    /// Removes the plugin's expired entries; the bytes they held.
    fn kv_sweep(&self, plugin: &str, now: i64) -> Result<u64, KvError> {
        let prefix = kv_key(plugin, "")?;
        let mut freed = 0;
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item.map_err(LedgerError::from)?;
            if decode::<Entry>(&k, &v)?.live(now).is_none() {
                self.io(self.db.remove(&k))?;
                freed += size(k.len() - prefix.len(), v.len());
            }
        }
        Ok(freed)
    }

    /// Removes `key`; whether it held a live value.
    pub fn kv_del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError> {
        let k = kv_key(plugin, key)?;
        let _guard = self.lock();
        let mut usage = self.kv_usage_of(plugin)?;
        Ok(match self.io(self.db.remove(&k))? {
            None => false,
            Some(bytes) => {
                usage.stored = usage.stored.saturating_sub(size(key.len(), bytes.len()));
                self.kv_put_usage(plugin, usage);
                decode::<Entry>(&k, &bytes)?.live(now).is_some()
            }
        })
    }

    /// Adds `by` to the integer under `key` (absent or expired counts as
    /// 0) and returns the new value. Atomic: read and write happen under
    /// the ledger's write lock. A `ttl` sets the expiry only when the key
    /// is created, so a counter for "today" expires on schedule however
    /// often it is bumped.
    pub fn kv_incr(
        &self,
        plugin: &str,
        key: &str,
        by: i64,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<i64, KvError> {
        let k = kv_key(plugin, key)?;
        let _guard = self.lock();
        let (new, entry) = Entry::incremented(self.kv_read(&k, now)?, key, by, ttl, now)?;
        let bytes = entry.encode(key)?;
        self.kv_write(plugin, key, k, bytes, now, quota)?;
        Ok(new)
    }

    /// Seconds until `key` expires: `None` when it is absent, `Some(None)`
    /// when it never expires.
    pub fn kv_ttl(&self, plugin: &str, key: &str, now: i64) -> Result<Ttl, KvError> {
        Ok(Ttl::of(
            self.kv_read(&kv_key(plugin, key)?, now)?.map(|e| e.exp),
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room enough for any test that is not about the quota.
    const Q: KvQuota = KvQuota::of_bytes(1 << 30);

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        (dir, l)
    }

    #[test]
    fn namespaces_are_separate_and_values_round_trip() {
        let (_d, l) = ledger();
        l.kv_set("a", "k", serde_json::json!({"n": [1, 2]}), None, 0, Q)
            .unwrap();
        assert_eq!(
            l.kv_get("a", "k", 0).unwrap(),
            Some(serde_json::json!({"n": [1, 2]}))
        );
        assert_eq!(l.kv_get("b", "k", 0).unwrap(), None);
        // A plugin named "a\0k" cannot reach plugin "a"'s key "k": names
        // never contain NUL (they are file stems), keys may.
        assert_eq!(l.kv_get("a", "k\0", 0).unwrap(), None);
        assert!(l.kv_del("a", "k", 0).unwrap());
        assert!(!l.kv_del("a", "k", 0).unwrap());
    }

    #[test]
    fn values_expire() {
        let (_d, l) = ledger();
        l.kv_set("p", "k", 1.into(), Some(10), 100, Q).unwrap();
        assert_eq!(l.kv_ttl("p", "k", 105).unwrap(), Ttl::Left(5));
        assert_eq!(l.kv_get("p", "k", 109).unwrap(), Some(1.into()));
        assert_eq!(l.kv_get("p", "k", 110).unwrap(), None);
        assert_eq!(l.kv_ttl("p", "k", 110).unwrap(), Ttl::Absent);
        l.kv_set("p", "forever", 1.into(), None, 100, Q).unwrap();
        assert_eq!(l.kv_ttl("p", "forever", 1 << 40).unwrap(), Ttl::Forever);
    }

    #[test]
    fn incr_is_atomic_and_keeps_the_first_expiry() {
        let (_d, l) = ledger();
        let l = std::sync::Arc::new(l);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        l.kv_incr("p", "n", 1, Some(60), 0, Q).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.kv_get("p", "n", 0).unwrap(), Some(1000.into()));
        assert_eq!(l.kv_ttl("p", "n", 30).unwrap(), Ttl::Left(30));
        // Expired: starts again from zero with a fresh expiry.
        assert_eq!(l.kv_incr("p", "n", 5, Some(60), 61, Q).unwrap(), 5);
        l.kv_set("p", "s", "x".into(), None, 0, Q).unwrap();
        let e = l.kv_incr("p", "s", 1, None, 0, Q).unwrap_err();
        assert!(e.to_string().contains("\"s\""), "{e}");
    }

    #[test]
    fn limits_name_the_key() {
        let (_d, l) = ledger();
        let e = l.kv_get("p", &"k".repeat(300), 0).unwrap_err();
        assert!(e.to_string().contains("300 bytes"), "{e}");
        let big = serde_json::Value::String("x".repeat(MAX_VALUE));
        let e = l.kv_set("p", "big", big, None, 0, Q).unwrap_err();
        assert!(e.to_string().contains("\"big\""), "{e}");
    }

    #[test]
    fn each_plugin_keeps_and_writes_within_its_quota() {
        let (dir, l) = ledger();
        let q = KvQuota {
            stored: 10_000,
            written_per_minute: 1_000_000,
        };
        let v = || serde_json::Value::String("x".repeat(900));
        // 10 keys of 2 + 908 bytes ({"v":"xxx…"}): 9,100 bytes kept.
        for i in 0..10 {
            l.kv_set("p", &format!("k{i}"), v(), None, 0, q).unwrap();
        }
        let e = l.kv_set("p", "k10", v(), None, 0, q).unwrap_err();
        assert!(matches!(e, KvError::Quota { would: 10_011, .. }), "{e}");
        assert!(e.to_string().contains("\"k10\""), "{e}");
        // Another plugin has its own quota; overwriting in place fits.
        l.kv_set("other", "k10", v(), None, 0, q).unwrap();
        l.kv_set("p", "k0", v(), None, 0, q).unwrap();
        // Deleting frees room.
        assert!(l.kv_del("p", "k0", 0).unwrap());
        l.kv_set("p", "k10", v(), None, 0, q).unwrap();
        // Expired values are swept when the quota is reached.
        l.kv_set("p", "k0", 1.into(), Some(5), 0, KvQuota::of_bytes(1 << 20))
            .unwrap();
        l.kv_del("p", "k1", 0).unwrap();
        l.kv_set("p", "t", v(), Some(5), 0, q).unwrap();
        let e = l.kv_set("p", "k1", v(), None, 4, q).unwrap_err();
        assert!(matches!(e, KvError::Quota { .. }), "{e}");
        l.kv_set("p", "k1", v(), None, 5, q).unwrap();
        assert_eq!(l.kv_get("p", "t", 0).unwrap(), None, "swept");
        // incr counts too: {"v":1001001} is 13 bytes.
        let tiny = KvQuota {
            stored: 12,
            written_per_minute: 1000,
        };
        assert_eq!(l.kv_incr("i", "n", 1, None, 0, tiny).unwrap(), 1);
        assert_eq!(l.kv_incr("i", "n", 1000, None, 0, tiny).unwrap(), 1001);
        let e = l.kv_incr("i", "n", 1_000_000, None, 0, tiny).unwrap_err();
        assert!(matches!(e, KvError::Quota { would: 14, .. }), "{e}");
        // Usage is counted from the store after a restart.
        drop(l);
        let l = Ledger::open(dir.path()).unwrap();
        let e = l.kv_set("p", "k11", v(), None, 5, q).unwrap_err();
        assert!(matches!(e, KvError::Quota { .. }), "{e}");
    }

    #[test]
    fn rewrites_are_limited_per_minute() {
        let (_d, l) = ledger();
        let q = KvQuota {
            stored: 1 << 20,
            written_per_minute: 10_000,
        };
        let v = serde_json::Value::String("x".repeat(998));
        // The same key over and over: 1,001 bytes a write.
        for _ in 0..9 {
            l.kv_set("p", "k", v.clone(), None, 60, q).unwrap();
        }
        let e = l.kv_set("p", "k", v.clone(), None, 119, q).unwrap_err();
        assert!(matches!(e, KvError::WriteRate { .. }), "{e}");
        l.kv_set("other", "k", v.clone(), None, 119, q).unwrap();
        l.kv_set("p", "k", v, None, 120, q).unwrap();
    }
}
