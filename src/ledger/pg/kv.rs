//! The plugins' `vipd.kv` in PostgreSQL, shared by every node: the same
//! entries and quota arithmetic as sled (`ledger/kv.rs`). Every write of
//! a plugin locks its usage row first, so a plugin's writes from all nodes
//! take turns: `incr` is atomic across the cluster and the quota counts
//! what every node wrote.

use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;

use super::{Prepared, db, pool_err};
use crate::ledger::LedgerError;
use crate::ledger::kv::Ttl;
use crate::ledger::kv::{Entry, KvError, KvQuota, PluginUsage, check_key, check_stored, size};

/// The plugins' values in a PostgreSQL ledger.
#[derive(Clone)]
pub struct PgKv {
    pool: Pool,
}

impl std::fmt::Debug for PgKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv").finish_non_exhaustive()
    }
}

fn decode(plugin: &str, key: &str, bytes: &[u8]) -> Result<Entry, KvError> {
    serde_json::from_slice(bytes).map_err(|e| {
        KvError::Store(LedgerError::Corrupt {
            key: format!("vipd_kv/{plugin}/{key}"),
            reason: e.to_string(),
        })
    })
}

fn err(e: tokio_postgres::Error) -> KvError {
    KvError::Store(db(e))
}

/// The plugin's usage row, made from its entries the first time, locked
/// for the transaction.
async fn usage(tx: &Transaction<'_>, plugin: &str) -> Result<PluginUsage, KvError> {
    tx.run(
        "INSERT INTO vipd_kv_usage (plugin, stored, minute, written)
         SELECT $1, coalesce(sum(size), 0)::bigint, $2, 0 FROM vipd_kv WHERE plugin = $1
         ON CONFLICT DO NOTHING",
        &[&plugin, &i64::MIN],
    )
    .await
    .map_err(err)?;
    let row = tx
        .one(
            "SELECT stored, minute, written FROM vipd_kv_usage WHERE plugin = $1 FOR UPDATE",
            &[&plugin],
        )
        .await
        .map_err(err)?;
    Ok(PluginUsage {
        stored: row.get::<_, i64>(0) as u64,
        minute: row.get(1),
        written: row.get::<_, i64>(2) as u64,
    })
}

async fn put_usage(tx: &Transaction<'_>, plugin: &str, u: PluginUsage) -> Result<(), KvError> {
    tx.run(
        "UPDATE vipd_kv_usage SET stored = $2, minute = $3, written = $4 WHERE plugin = $1",
        &[&plugin, &(u.stored as i64), &u.minute, &(u.written as i64)],
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// The bytes `key` counts now (0 when absent).
async fn size_of(tx: &Transaction<'_>, plugin: &str, key: &str) -> Result<u64, KvError> {
    let row = tx
        .opt(
            "SELECT size FROM vipd_kv WHERE plugin = $1 AND key = $2",
            &[&plugin, &key.as_bytes()],
        )
        .await
        .map_err(err)?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}

impl PgKv {
    pub fn new(pool: Pool) -> PgKv {
        PgKv { pool }
    }

    async fn read(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        plugin: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<Entry>, KvError> {
        check_key(key)?;
        let row = client
            .opt(
                "SELECT entry FROM vipd_kv WHERE plugin = $1 AND key = $2",
                &[&plugin, &key.as_bytes()],
            )
            .await
            .map_err(err)?;
        match row {
            None => Ok(None),
            Some(r) => Ok(decode(plugin, key, r.get(0))?.live(now)),
        }
    }

    /// The live value of `key`, if any.
    pub async fn get(
        &self,
        plugin: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<serde_json::Value>, KvError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(self.read(&client, plugin, key, now).await?.map(|e| e.v))
    }

    /// Seconds until `key` expires: `None` when absent, `Some(None)` when
    /// it never expires.
    pub async fn ttl(&self, plugin: &str, key: &str, now: i64) -> Result<Ttl, KvError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let exp = self.read(&client, plugin, key, now).await?.map(|e| e.exp);
        Ok(Ttl::of(exp, now))
    }

    /// Stores `value` under `key`, for `ttl` seconds when given.
    pub async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: serde_json::Value,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<(), KvError> {
        check_key(key)?;
        let entry = Entry {
            v: value,
            exp: ttl.map(|t| now + t),
        };
        let bytes = entry.encode(key)?;
        self.write(plugin, key, now, quota, |_| Ok((bytes, entry.exp, ())))
            .await
    }

    /// Adds `by` to the integer under `key`; the new value.
    pub async fn incr(
        &self,
        plugin: &str,
        key: &str,
        by: i64,
        ttl: Option<i64>,
        now: i64,
        quota: KvQuota,
    ) -> Result<i64, KvError> {
        check_key(key)?;
        self.write(plugin, key, now, quota, |old| {
            let (n, entry) = Entry::incremented(old, key, by, ttl, now)?;
            Ok((entry.encode(key)?, entry.exp, n))
        })
        .await
    }

    /// One write of one key under the plugin's usage lock: `make` gets the
    /// live entry and gives the bytes to store, their expiry and a result.
    async fn write<R>(
        &self,
        plugin: &str,
        key: &str,
        now: i64,
        quota: KvQuota,
        make: impl FnOnce(Option<Entry>) -> Result<(Vec<u8>, Option<i64>, R), KvError>,
    ) -> Result<R, KvError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(err)?;
        let mut u = usage(&tx, plugin).await?;
        u.roll(now);
        let (bytes, exp, r) = make(self.read(&tx, plugin, key, now).await?)?;
        let new = size(key.len(), bytes.len());
        let mut would = u.stored.saturating_sub(size_of(&tx, plugin, key).await?) + new;
        let mut refused = None;
        if would > quota.stored {
            // Expired values count until swept: sweep them, then look again.
            let freed: i64 = tx
                .one(
                    "WITH gone AS (DELETE FROM vipd_kv WHERE plugin = $1 AND exp <= $2 RETURNING size)
                     SELECT coalesce(sum(size), 0)::bigint FROM gone",
                    &[&plugin, &now],
                )
                .await
                .map_err(err)?
                .get(0);
            u.stored = u.stored.saturating_sub(freed as u64);
            would = u.stored.saturating_sub(size_of(&tx, plugin, key).await?) + new;
            refused = check_stored(key, would, quota).err();
        }
        let refused = refused.or_else(|| u.check_rate(key, new, quota).err());
        if refused.is_none() {
            tx.run(
                "INSERT INTO vipd_kv (plugin, key, entry, exp, size) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (plugin, key) DO UPDATE SET entry = $3, exp = $4, size = $5",
                &[&plugin, &key.as_bytes(), &bytes, &exp, &(new as i64)],
            )
            .await
            .map_err(err)?;
            u.stored = would;
            u.written += new;
        }
        put_usage(&tx, plugin, u).await?;
        tx.commit().await.map_err(err)?;
        match refused {
            Some(e) => Err(e),
            None => Ok(r),
        }
    }

    /// Removes `key`; whether it held a live value.
    pub(crate) async fn del(&self, plugin: &str, key: &str, now: i64) -> Result<bool, KvError> {
        check_key(key)?;
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(err)?;
        let mut u = usage(&tx, plugin).await?;
        let gone = tx
            .opt(
                "DELETE FROM vipd_kv WHERE plugin = $1 AND key = $2 RETURNING entry, size",
                &[&plugin, &key.as_bytes()],
            )
            .await
            .map_err(err)?;
        let Some(row) = gone else {
            return Ok(false);
        };
        u.stored = u.stored.saturating_sub(row.get::<_, i64>(1) as u64);
        put_usage(&tx, plugin, u).await?;
        tx.commit().await.map_err(err)?;
        Ok(decode(plugin, key, row.get(0))?.live(now).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::super::throwaway::TestDb;
    use super::*;

    const Q: KvQuota = KvQuota::of_bytes(1 << 30);

    /// Two nodes bumping one counter at once lose no bump; a key with a
    /// NUL in it is its own key; the quota counts both nodes' bytes.
    #[tokio::test]
    async fn nodes_share_counters_and_the_quota() {
        let db = TestDb::migrated().await;
        let (a, b) = (PgKv::new(db.pool(4)), PgKv::new(db.pool(4)));
        let bump = |kv: PgKv| async move {
            for _ in 0..100 {
                kv.incr("p", "n", 1, Some(60), 0, Q).await.unwrap();
            }
        };
        tokio::join!(bump(a.clone()), bump(b.clone()), bump(a.clone()));
        assert_eq!(a.get("p", "n", 0).await.unwrap(), Some(300.into()));
        assert_eq!(b.ttl("p", "n", 30).await.unwrap(), Ttl::Left(30));

        a.set("p", "k\0", 1.into(), None, 0, Q).await.unwrap();
        assert_eq!(b.get("p", "k", 0).await.unwrap(), None);
        assert_eq!(b.get("p", "k\0", 0).await.unwrap(), Some(1.into()));

        let small = KvQuota {
            stored: 1000,
            written_per_minute: 1 << 20,
        };
        let big = serde_json::Value::String("x".repeat(600));
        a.set("q", "a", big.clone(), None, 0, small).await.unwrap();
        assert!(matches!(
            b.set("q", "b", big.clone(), None, 0, small).await,
            Err(KvError::Quota { .. })
        ));
        assert!(b.del("q", "a", 0).await.unwrap());
        b.set("q", "b", big, None, 0, small).await.unwrap();
    }
}
