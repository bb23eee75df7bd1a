//! The PostgreSQL store, for several vipd nodes on one ledger: the schema
//! and its migrations (`schema.rs`); orders, budgets and vendor ids
//! (`orders.rs`: the same order changes as sled, `ledger/change.rs`,
//! written as compare-and-sets on the order's version, `write.rs`, with
//! budgets changed in the same statement, `spend.rs`); node leases,
//! fences and claims (`lease.rs`, kept alive by `keep.rs`); events,
//! check, account and token records (`records.rs`); plugins' kv
//! (`kv.rs`); the node's view of it all as the `Store` port (`store.rs`),
//! with what it keeps so as not to ask again (`seen.rs`). Hot statements
//! run prepared ([`Prepared`]); the many small writes of a busy node go
//! through one writer a kind, many rows a statement and a commit
//! (`batch.rs`).

mod batch;
mod flushes;
mod import;
mod keep;
mod kv;
pub mod lease;
mod orders;
mod records;
mod schema;
mod seen;
mod spend;
mod store;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod throwaway;
mod write;

pub use import::{Copied, import};
pub use kv::PgKv;
pub use orders::PgOrders;
pub use records::PgRecords;
pub use schema::{SCHEMA_VERSION, migrate};
pub use store::{PgConfig, PgStore};

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// Statements run prepared: each text is parsed and planned once per
/// pooled connection (deadpool's statement cache keeps it with the
/// connection), then only bound and executed, in one round trip. The
/// texts are constants, so the cache holds a few dozen statements.
/// (Migrations and the one-off import run their statements unprepared.)
pub trait Prepared: deadpool_postgres::GenericClient {
    /// Runs a statement; the rows it changed.
    fn run(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.execute(&st, params).await
        }
    }

    /// The rows of a query.
    fn all(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>> + Send {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query(&st, params).await
        }
    }

    /// The one row of a query.
    fn one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<tokio_postgres::Row, tokio_postgres::Error>> + Send {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query_one(&st, params).await
        }
    }

    /// The row of a query, if there is one.
    fn opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Option<tokio_postgres::Row>, tokio_postgres::Error>> + Send
    {
        async move {
            let st = self.prepare_cached(sql).await?;
            self.query_opt(&st, params).await
        }
    }
}

impl<C: deadpool_postgres::GenericClient> Prepared for C {}

/// What went wrong talking to PostgreSQL. Never holds the connection
/// string (its password).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database answered with an error, or the connection failed.
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer vipd.
    #[error(
        "the database's vipd schema is version {found}, newer than this vipd knows ({known}): \
         run the newer vipd, or restore the database from before it migrated"
    )]
    Newer { found: i32, known: i32 },
    /// The connection settings are wrong (never quotes them: they may
    /// hold a password).
    #[error("PostgreSQL connection settings: {0}")]
    Config(String),
    /// No connection could be had.
    #[error("PostgreSQL: {0}")]
    Pool(String),
}

impl PgError {
    pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> PgError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
            other => PgError::Pool(other.to_string()),
        }
    }
}

/// What the database said: its code and message (and detail), which
/// tokio-postgres's own `Display` leaves out ("db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} ({})", d.message(), d.code().code());
            if let Some(detail) = d.detail() {
                s.push_str(&format!(": {detail}"));
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A database error as the store reports it, by what it means for the
/// ledger: the server out of disk or failing its I/O cannot keep a
/// write; a server reporting corrupt data or indexes is damaged; anything
/// else (a lost connection, a timeout, a refused statement) is the store
/// unavailable. Nothing is paid on any of them.
fn db(e: impl Into<PgError>) -> crate::ledger::LedgerError {
    use crate::ledger::LedgerError;
    let e = e.into();
    let code = match &e {
        PgError::Db(d) => d.code().map(|c| c.code().to_owned()),
        _ => None,
    };
    match code.as_deref() {
        // XX001 data_corrupted, XX002 index_corrupted.
        Some("XX001" | "XX002") => LedgerError::Corrupt {
            key: "PostgreSQL".into(),
            reason: e.to_string(),
        },
        // 53: insufficient resources (disk full, out of memory);
        // 58: system error (I/O).
        Some(c) if c.starts_with("53") || c.starts_with("58") => {
            LedgerError::NotDurable(e.to_string())
        }
        _ => LedgerError::Unavailable(e.to_string()),
    }
}

/// No connection from the pool.
fn pool_err(e: deadpool_postgres::PoolError) -> crate::ledger::LedgerError {
    db(PgError::from_pool(e))
}

/// A JSON record read back; one that does not decode names its table and
/// row.
fn from_json<T: serde::de::DeserializeOwned>(
    table: &str,
    key: &str,
    v: serde_json::Value,
) -> Result<T, crate::ledger::LedgerError> {
    serde_json::from_value(v).map_err(|e| crate::ledger::LedgerError::Corrupt {
        key: format!("{table}/{key}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ErrorKind;

    /// What the server says is classed by its SQLSTATE: a full disk or an
    /// I/O error cannot keep a write, corrupt data is damage, the rest
    /// (here a lost connection and a failed statement) is the store
    /// unavailable. Raised by a real server.
    #[tokio::test]
    async fn database_errors_are_classed_by_what_they_mean() {
        let test_db = throwaway::database().await;
        let client = test_db.connect().await;
        for (code, want) in [
            ("53100", ErrorKind::NotDurable),
            ("58030", ErrorKind::NotDurable),
            ("XX001", ErrorKind::Damaged),
            ("XX002", ErrorKind::Damaged),
            ("08006", ErrorKind::Unavailable),
            ("22012", ErrorKind::Unavailable),
        ] {
            let raise =
                format!("DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$");
            let e = client.batch_execute(&raise).await.unwrap_err();
            assert_eq!(db(e).kind(), want, "{code}");
        }
    }
}
