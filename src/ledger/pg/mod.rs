//! The PostgreSQL store (issue 14), for several vipd nodes on one ledger.
//! Being built: so far the schema and its migrations. The store itself
//! will apply the same order changes as sled (`ledger/change.rs`) under a
//! row lock and the node's fence, with budgets as rows changed in the same
//! transaction; until it passes the conformance suite it is not offered in
//! the configuration.

mod schema;
#[cfg(test)]
mod throwaway;

pub use schema::{SCHEMA_VERSION, migrate};

/// What went wrong talking to PostgreSQL. Never holds the connection
/// string (its password).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database answered with an error, or the connection failed.
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer vipd.
    #[error(
        "the database's vipd schema is version {found}, newer than this vipd knows ({known}): \
         run the newer vipd, or restore the database from before it migrated"
    )]
    Newer { found: i32, known: i32 },
}
