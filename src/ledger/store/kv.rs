//! The plugins' `vipd.kv`: small JSON values per plugin, with expiry and
//! a quota. A plugin names only its own keys (the namespace is its name).

use super::KvValue;

use crate::ledger::kv::{KvError, KvQuota, Ttl};

/// The plugins' key-value space.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
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
    async fn kv_ttl(&self, plugin: &str, key: &str, now: i64) -> Result<Ttl, KvError>;
}

// sled's answers are ready at once, but for the waits on its group commit.
sled_at_once! {
    KvStore {
        fn kv_get(&self, plugin: &str, key: &str, now: i64) -> Result<Option<KvValue>, KvError>;
        fn kv_set(&self, plugin: &str, key: &str, value: KvValue, ttl: Option<i64>, now: i64, quota: KvQuota) -> Result<(), KvError>;
        fn kv_del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError>;
        fn kv_incr(&self, plugin: &str, key: &str, by: i64, ttl: Option<i64>, now: i64, quota: KvQuota) -> Result<i64, KvError>;
        fn kv_ttl(&self, plugin: &str, key: &str, now: i64) -> Result<Ttl, KvError>;
    }
}
