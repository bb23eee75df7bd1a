//! The PostgreSQL store (issue 14), for several vipd nodes on one ledger.
//! Being built. So far: the schema and its migrations (`schema.rs`);
//! orders, budgets and vendor ids (`orders.rs`: the same order changes as
//! sled, `ledger/change.rs`, under a row lock, with budgets as rows changed
//! in the same transaction); node leases, fences and claims (`lease.rs`).
//! Until the whole `Store` port passes the conformance suite it is not
//! offered in the configuration.

mod import;
mod kv;
pub mod lease;
mod orders;
mod records;
mod schema;
mod store;
#[doc(hidden)]
pub mod throwaway;

pub use import::{Copied, import};
pub use kv::PgKv;
pub use orders::PgOrders;
pub use records::PgRecords;
pub use schema::{SCHEMA_VERSION, migrate};
pub use store::{PgConfig, PgStore};

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

/// A database error as the store reports it.
fn db(e: impl Into<PgError>) -> crate::ledger::LedgerError {
    crate::ledger::LedgerError::Durability(e.into().to_string())
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
