//! A node's lease on its name, on the database's clock, and the fence that
//! every write checks.
//!
//! Taken at start (the name's fence goes up by one, so an older process
//! still running under the name is fenced off at once), renewed while the
//! node works, and checked inside each write's own transaction: a row lock
//! on the node's row (`FOR SHARE`) holds the lease as it was checked until
//! the write commits, so a takeover waits for writes in progress and
//! nothing is written after it. No advisory locks: they outlive neither a
//! connection nor the work under them.

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::PgError;
use crate::ledger::LedgerError;

/// A node's hold on its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub fence: i64,
}

fn secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// Takes `node`'s name for `ttl`, with the next fence (unique across
/// names: it names this start of this node).
pub async fn acquire(
    client: &impl GenericClient,
    node: &str,
    ttl: Duration,
) -> Result<Lease, PgError> {
    let row = client
        .query_one(
            "INSERT INTO vipd_nodes (name, fence, lease_until)
             VALUES ($1, nextval('vipd_fences'), now() + make_interval(secs => $2))
             ON CONFLICT (name) DO UPDATE
             SET fence = nextval('vipd_fences'),
                 lease_until = now() + make_interval(secs => $2),
                 started_at = now()
             RETURNING fence",
            &[&node, &secs(ttl)],
        )
        .await?;
    Ok(Lease {
        node: node.to_owned(),
        fence: row.get(0),
    })
}

/// Extends the lease by `ttl` from now; `false` when it was lost (run out,
/// or taken over): the node must stop paying.
pub async fn renew(
    client: &impl GenericClient,
    lease: &Lease,
    ttl: Duration,
) -> Result<bool, PgError> {
    let n = client
        .execute(
            "UPDATE vipd_nodes SET lease_until = now() + make_interval(secs => $3)
             WHERE name = $1 AND fence = $2 AND lease_until > now()",
            &[&lease.node, &lease.fence, &secs(ttl)],
        )
        .await?;
    Ok(n == 1)
}

/// Inside a write's transaction: the lease is still this node's, and held
/// so until the transaction ends.
pub(crate) async fn check(tx: &impl GenericClient, lease: &Lease) -> Result<(), LedgerError> {
    let held = tx
        .query_opt(
            "SELECT 1 FROM vipd_nodes
             WHERE name = $1 AND fence = $2 AND lease_until > now() FOR SHARE",
            &[&lease.node, &lease.fence],
        )
        .await
        .map_err(|e| LedgerError::Durability(PgError::from(e).to_string()))?;
    match held {
        Some(_) => Ok(()),
        None => Err(LedgerError::Fenced(format!(
            "node {} (fence {}) no longer holds its lease",
            lease.node, lease.fence
        ))),
    }
}
