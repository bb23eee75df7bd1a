//! The schema's versions and how a database is brought to the newest.
//!
//! Every migration runs in one transaction that first takes an exclusive
//! lock on `vipd_schema`: nodes starting together wait for each other, the
//! first applies what is missing, the others find it done. A lock held by
//! a transaction ends with its connection, and nothing but the migration
//! runs under it, so a node that dies mid-migration leaves the database as
//! it was (DDL is transactional in PostgreSQL). No advisory locks.

use super::PgError;

/// One step of the schema.
struct Migration {
    version: i32,
    what: &'static str,
    sql: &'static str,
}

/// Every step, oldest first. A released step is never edited: a change is
/// a new step. (None is released yet: the store is not offered until it
/// passes the conformance suite, and until then step 1 may still change.)
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "orders, spend, vendor order ids",
        sql: include_str!("001_orders.sql"),
    },
    Migration {
        version: 2,
        what: "nodes, their leases and their claims",
        sql: include_str!("002_nodes.sql"),
    },
    Migration {
        version: 3,
        what: "events, check and account records",
        sql: include_str!("003_records.sql"),
    },
    Migration {
        version: 4,
        what: "plugins' kv and the hold on new orders",
        sql: include_str!("004_kv_hold.sql"),
    },
];

/// The newest version this vipd knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings the database to [`SCHEMA_VERSION`]; returns the versions it
/// applied (none when another node, or an earlier start, did). Refuses a
/// database a newer vipd migrated.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS vipd_schema (
                version     integer PRIMARY KEY,
                what        text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        // Two nodes creating it at once: one wins, the other's CREATE
        // fails on the catalog's unique index; it exists either way.
        .or_else(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(()),
            _ => Err(e),
        })?;
    let tx = client.transaction().await?;
    tx.batch_execute("LOCK TABLE vipd_schema IN ACCESS EXCLUSIVE MODE")
        .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM vipd_schema", &[])
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::Newer {
            found,
            known: SCHEMA_VERSION,
        });
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO vipd_schema (version, what) VALUES ($1, $2)",
            &[&m.version, &m.what],
        )
        .await?;
        tracing::info!(version = m.version, "database schema: {}", m.what);
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::super::throwaway::database;
    use super::*;

    #[tokio::test]
    async fn a_database_is_migrated_once_whoever_starts_first() {
        let db = database().await;
        let mut a = db.connect().await;
        let mut b = db.connect().await;
        let mut c = db.connect().await;
        // Three nodes at once: one applies, the others wait and find it done.
        let (ra, rb, rc) = tokio::join!(migrate(&mut a), migrate(&mut b), migrate(&mut c));
        let mut applied: Vec<Vec<i32>> = vec![ra.unwrap(), rb.unwrap(), rc.unwrap()];
        applied.sort();
        assert_eq!(applied, [vec![], vec![], vec![1, 2, 3, 4]]);
        assert!(migrate(&mut a).await.unwrap().is_empty(), "a restart");
        let rows = a
            .query("SELECT version FROM vipd_schema", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), MIGRATIONS.len());
    }

    #[tokio::test]
    async fn a_database_a_newer_vipd_migrated_is_refused() {
        let db = database().await;
        let mut c = db.connect().await;
        migrate(&mut c).await.unwrap();
        c.execute(
            "INSERT INTO vipd_schema (version, what) VALUES ($1, 'from the future')",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
        let e = migrate(&mut c).await.unwrap_err();
        assert!(matches!(e, PgError::Newer { found, .. } if found == SCHEMA_VERSION + 1));
        assert!(e.to_string().contains("newer than this vipd knows"), "{e}");
    }

    /// The order key is the primary key, and a second unsettled order for
    /// one account and membership is refused by the database itself, not
    /// only by the code that plans.
    #[tokio::test]
    async fn the_database_refuses_a_second_order_for_a_key_or_a_period() {
        let db = database().await;
        let mut c = db.connect().await;
        migrate(&mut c).await.unwrap();
        let insert =
            "INSERT INTO vipd_orders (key, account, membership, rule, state, unsettled, record)
                      VALUES ($1, $2, 'qq_vip', 'keep', 'planned', $3, '{}')";
        c.execute(insert, &[&"k1", &"alice", &true]).await.unwrap();
        let again = c
            .execute(insert, &[&"k1", &"bob", &true])
            .await
            .unwrap_err();
        assert_eq!(
            again.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        );
        let other_rule = c
            .execute(insert, &[&"k2", &"alice", &true])
            .await
            .unwrap_err();
        assert_eq!(
            other_rule.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        );
        // Once the first is settled (failed, say), another key may pay.
        c.execute(
            "UPDATE vipd_orders SET unsettled = false WHERE key = 'k1'",
            &[],
        )
        .await
        .unwrap();
        c.execute(insert, &[&"k2", &"alice", &true]).await.unwrap();
        // Spend can never go below zero.
        let below = c
            .execute(
                "INSERT INTO vipd_spend (rule, period, reserved) VALUES ('keep', '2026-11', -1)",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(
            below.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
        );
    }
}
