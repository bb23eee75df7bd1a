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

/// Claims (rule, account) for `ttl`, for the node holding `lease`: `true`
/// when it is this node's to check now (it was free, had run out, or was
/// this node's already: then it is extended). Two nodes asking at once:
/// the primary key lets one in.
pub async fn claim(
    client: &impl GenericClient,
    lease: &Lease,
    rule: &str,
    account: &str,
    ttl: Duration,
) -> Result<bool, PgError> {
    let row = client
        .query_opt(
            "INSERT INTO vipd_claims (rule, account, fence, until)
             SELECT $1, $2, $3, now() + make_interval(secs => $4)
             WHERE EXISTS (SELECT 1 FROM vipd_nodes
                           WHERE fence = $3 AND lease_until > now())
             ON CONFLICT (rule, account) DO UPDATE
             SET fence = EXCLUDED.fence, until = EXCLUDED.until
             WHERE vipd_claims.until <= now() OR vipd_claims.fence = EXCLUDED.fence
             RETURNING 1",
            &[&rule, &account, &lease.fence, &secs(ttl)],
        )
        .await?;
    Ok(row.is_some())
}

/// Gives a claim back (the check is done), if it is still this node's.
pub async fn release(
    client: &impl GenericClient,
    lease: &Lease,
    rule: &str,
    account: &str,
) -> Result<(), PgError> {
    client
        .execute(
            "DELETE FROM vipd_claims WHERE rule = $1 AND account = $2 AND fence = $3",
            &[&rule, &account, &lease.fence],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::throwaway::TestDb;
    use super::*;

    /// Each (rule, account) is one node's at a time: of two nodes asking
    /// at once one gets it; the holder keeps it; when its claim runs out
    /// (the node died) the other gets it; a released claim is free; a
    /// node without its lease gets nothing.
    #[tokio::test]
    async fn a_pair_is_claimed_by_one_node_at_a_time() {
        let db = TestDb::migrated().await;
        let c = db.connect().await;
        let (ca, cb) = (db.connect().await, db.connect().await);
        let long = Duration::from_secs(60);
        let a = acquire(&ca, "a", long).await.unwrap();
        let b = acquire(&cb, "b", long).await.unwrap();
        for i in 0..20 {
            let account = format!("acct-{i}");
            let (ra, rb) = tokio::join!(
                claim(&ca, &a, "keep", &account, long),
                claim(&cb, &b, "keep", &account, long)
            );
            assert!(ra.unwrap() ^ rb.unwrap(), "{account}: exactly one node");
        }
        // The holder keeps it; the other does not get it.
        let brief = Duration::from_millis(300);
        assert!(claim(&ca, &a, "keep", "x", brief).await.unwrap());
        assert!(
            claim(&ca, &a, "keep", "x", brief).await.unwrap(),
            "extended"
        );
        assert!(!claim(&cb, &b, "keep", "x", long).await.unwrap());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(claim(&cb, &b, "keep", "x", long).await.unwrap(), "ran out");
        assert!(!claim(&ca, &a, "keep", "x", long).await.unwrap());
        release(&cb, &b, "keep", "x").await.unwrap();
        assert!(claim(&ca, &a, "keep", "x", long).await.unwrap(), "released");
        // A newer start under b's name: the old b claims nothing.
        let _b2 = acquire(&c, "b", long).await.unwrap();
        assert!(!claim(&cb, &b, "keep", "free", long).await.unwrap());
    }
}
