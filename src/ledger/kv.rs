//! The plugins' key-value store (`vipd.kv`): one namespace per plugin,
//! values as JSON, optional expiry. Lives in the ledger's tree under
//! `k/{plugin}\0{key}` so it shares the store's durability and lock.

use serde::{Deserialize, Serialize};

use super::{Ledger, LedgerError, decode, json};

/// The longest key a plugin may use, in bytes.
pub const MAX_KEY: usize = 256;
/// The largest value a plugin may store, in bytes of JSON.
pub const MAX_VALUE: usize = 64 << 10;

/// One stored value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    v: serde_json::Value,
    /// Unix seconds after which the value is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
}

impl Entry {
    fn live(self, now: i64) -> Option<Entry> {
        match self.exp {
            Some(exp) if exp <= now => None,
            _ => Some(self),
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
    #[error(transparent)]
    Store(#[from] LedgerError),
}

fn kv_key(plugin: &str, key: &str) -> Result<Vec<u8>, KvError> {
    if key.len() > MAX_KEY {
        return Err(KvError::KeyTooLong {
            key: key.chars().take(40).collect::<String>() + "…",
            len: key.len(),
        });
    }
    Ok(format!("k/{plugin}\0{key}").into_bytes())
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

    /// Stores `value` under `key`, for `ttl` seconds when given.
    pub fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: serde_json::Value,
        ttl: Option<i64>,
        now: i64,
    ) -> Result<(), KvError> {
        let k = kv_key(plugin, key)?;
        let bytes = json(&Entry {
            v: value,
            exp: ttl.map(|t| now + t),
        });
        if bytes.len() > MAX_VALUE {
            return Err(KvError::ValueTooLarge {
                key: key.to_owned(),
                len: bytes.len(),
            });
        }
        self.io(self.db.insert(k, bytes))?;
        Ok(())
    }

    /// Removes `key`; whether it held a live value.
    pub fn kv_del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError> {
        let k = kv_key(plugin, key)?;
        Ok(match self.io(self.db.remove(&k))? {
            None => false,
            Some(bytes) => decode::<Entry>(&k, &bytes)?.live(now).is_some(),
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
    ) -> Result<i64, KvError> {
        let k = kv_key(plugin, key)?;
        let _guard = self.lock();
        let (old, exp) = match self.kv_read(&k, now)? {
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
        let new = old.checked_add(by).ok_or_else(|| KvError::Overflow {
            key: key.to_owned(),
        })?;
        self.io(self.db.insert(k, json(&Entry { v: new.into(), exp })))?;
        Ok(new)
    }

    /// Seconds until `key` expires: `None` when it is absent, `Some(None)`
    /// when it never expires.
    pub fn kv_ttl(
        &self,
        plugin: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<Option<i64>>, KvError> {
        Ok(self
            .kv_read(&kv_key(plugin, key)?, now)?
            .map(|e| e.exp.map(|exp| exp - now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        (dir, l)
    }

    #[test]
    fn namespaces_are_separate_and_values_round_trip() {
        let (_d, l) = ledger();
        l.kv_set("a", "k", serde_json::json!({"n": [1, 2]}), None, 0)
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
        l.kv_set("p", "k", 1.into(), Some(10), 100).unwrap();
        assert_eq!(l.kv_ttl("p", "k", 105).unwrap(), Some(Some(5)));
        assert_eq!(l.kv_get("p", "k", 109).unwrap(), Some(1.into()));
        assert_eq!(l.kv_get("p", "k", 110).unwrap(), None);
        assert_eq!(l.kv_ttl("p", "k", 110).unwrap(), None);
        l.kv_set("p", "forever", 1.into(), None, 100).unwrap();
        assert_eq!(l.kv_ttl("p", "forever", 1 << 40).unwrap(), Some(None));
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
                        l.kv_incr("p", "n", 1, Some(60), 0).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.kv_get("p", "n", 0).unwrap(), Some(1000.into()));
        assert_eq!(l.kv_ttl("p", "n", 30).unwrap(), Some(Some(30)));
        // Expired: starts again from zero with a fresh expiry.
        assert_eq!(l.kv_incr("p", "n", 5, Some(60), 61).unwrap(), 5);
        l.kv_set("p", "s", "x".into(), None, 0).unwrap();
        let e = l.kv_incr("p", "s", 1, None, 0).unwrap_err();
        assert!(e.to_string().contains("\"s\""), "{e}");
    }

    #[test]
    fn limits_name_the_key() {
        let (_d, l) = ledger();
        let e = l.kv_get("p", &"k".repeat(300), 0).unwrap_err();
        assert!(e.to_string().contains("300 bytes"), "{e}");
        let big = serde_json::Value::String("x".repeat(MAX_VALUE));
        let e = l.kv_set("p", "big", big, None, 0).unwrap_err();
        assert!(e.to_string().contains("\"big\""), "{e}");
    }
}
