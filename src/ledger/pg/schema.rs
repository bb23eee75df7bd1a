//! The schema's versions and how a database is brought to the newest.
//!
//! Every migration runs in one transaction whose first statement takes a
//! transaction-level advisory lock (`pg_advisory_xact_lock`), before it
//! creates the version table or reads it: nodes starting together on an
//! empty database wait for each other, the first applies what is missing,
//! the others find it done. The lock ends with its transaction (or its
//! connection), so a node that dies mid-migration leaves the database as
//! it was (DDL is transactional in PostgreSQL) and holds nobody up.

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
    Migration {
        version: 5,
        what: "a version on each order",
        sql: include_str!("005_versions.sql"),
    },
    Migration {
        version: 6,
        what: "order writes that touch fewer index entries",
        sql: include_str!("006_lighter_writes.sql"),
    },
    Migration {
        version: 7,
        what: "one index on the event log",
        sql: include_str!("007_events_one_index.sql"),
    },
];

/// The advisory lock every migration holds for its whole transaction
/// (`pg_advisory_xact_lock`): "vipd" and the schema, as one number.
const MIGRATION_LOCK: i64 = 0x7669_7064_5f73_6368;

/// The newest version this vipd knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings the database to [`SCHEMA_VERSION`]; returns the versions it
/// applied (none when another node, or an earlier start, did). Refuses a
/// database a newer vipd migrated.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, PgError> {
    let tx = client.transaction().await?;
    // First, before any statement that could race another node's: even
    // `CREATE TABLE IF NOT EXISTS` fails when two sessions create the
    // table at once (its row type, 42710, or its catalog entry, 23505).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS vipd_schema (
            version     integer PRIMARY KEY,
            what        text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )",
    )
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

    /// Nodes migrating an empty database at the same moment, each on its
    /// own connection and thread: one applies, the others wait and find it
    /// done, none fails (creating the version table itself raced: 42710).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_database_is_migrated_once_whoever_starts_first() {
        const NODES: usize = 6;
        for _round in 0..5 {
            let db = database().await;
            let go = std::sync::Arc::new(tokio::sync::Barrier::new(NODES));
            let mut nodes = Vec::new();
            for _ in 0..NODES {
                let mut c = db.connect().await;
                let go = go.clone();
                nodes.push(tokio::spawn(async move {
                    go.wait().await;
                    migrate(&mut c).await.map(|applied| (applied, c))
                }));
            }
            let mut applied = Vec::new();
            let mut clients = Vec::new();
            for n in nodes {
                let (a, c) = n
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("a node failed: {e}"));
                applied.push(a);
                clients.push(c);
            }
            applied.sort();
            let mut want = vec![vec![]; NODES - 1];
            want.push((1..=SCHEMA_VERSION).collect());
            assert_eq!(applied, want);
            let a = &mut clients[0];
            assert!(migrate(a).await.unwrap().is_empty(), "a restart");
            let rows = a
                .query("SELECT version FROM vipd_schema", &[])
                .await
                .unwrap();
            assert_eq!(rows.len(), MIGRATIONS.len());
        }
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
