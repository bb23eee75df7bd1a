//! A node's lease on its name, on the database's clock, and the fence that
//! every write checks.
//!
//! Taken at start (the name's fence goes up by one, so an older process
//! still running under the name is fenced off at once), renewed while the
//! node works, and checked inside each write's own statement, on the
//! database's clock at the transaction's start. A write that began just
//! before the lease ran out may commit just after: that is safe, because
//! a takeover changes an order only through the order's version (or row
//! lock), so one of the two writes finds the other's and the takeover
//! treats what it finds as a crash left it (`sent` becomes `unknown`,
//! never re-sent). The node's own row is not
//! locked by writes: its renewal must never wait behind them (it did, and
//! a busy node lost its lease). No advisory locks: they outlive neither a
//! connection nor the work under them.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::GenericClient;

use super::batch::{Batch, last_of_each};
use super::{PgError, Prepared};
use crate::ledger::LedgerError;
use crate::ledger::store::NodeInfo;

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
pub(crate) async fn acquire(
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

/// Inside a write's transaction: the lease is still this node's.
pub async fn check(
    tx: &impl deadpool_postgres::GenericClient,
    lease: &Lease,
) -> Result<(), LedgerError> {
    let held = tx
        .opt(
            "SELECT 1 FROM vipd_nodes
             WHERE name = $1 AND fence = $2 AND lease_until > now()",
            &[&lease.node, &lease.fence],
        )
        .await
        .map_err(|e| LedgerError::NotDurable(PgError::from(e).to_string()))?;
    match held {
        Some(_) => Ok(()),
        None => Err(lease.lost()),
    }
}

impl Lease {
    /// What a write this node may no longer make fails with.
    pub(crate) fn lost(&self) -> LedgerError {
        LedgerError::Fenced(format!(
            "node {} (fence {}) no longer holds its lease",
            self.node, self.fence
        ))
    }
}

/// Claims of (rule, account) pairs for the node holding a lease, asked
/// by many checks at once and written in one statement a batch: a pair is
/// this node's to check now when it was free, its holder's lease had run
/// out, or it was this node's already. Two nodes asking at once: the
/// primary key lets one in. A pair claimed comes with its stored check
/// state (`None` when it has none), which its check reads next.
pub(super) struct Claims(pub(super) Lease);

/// A claim's answer: `None` when the pair is not this node's, else the
/// pair's check state as stored.
pub(super) type Claimed = Option<Option<serde_json::Value>>;

impl Batch for Claims {
    type Row = (String, String);
    type Out = Claimed;
    async fn write(
        &self,
        c: &deadpool_postgres::Client,
        rows: &[Self::Row],
    ) -> Result<Vec<Claimed>, tokio_postgres::Error> {
        let pairs = last_of_each(rows, |r| r);
        let rules: Vec<&str> = pairs.iter().map(|r| r.0.as_str()).collect();
        let accounts: Vec<&str> = pairs.iter().map(|r| r.1.as_str()).collect();
        let got: HashMap<(String, String), Option<serde_json::Value>> = c
            .all(
                "INSERT INTO vipd_claims (rule, account, fence)
                 SELECT r, a, $3 FROM unnest($1::text[], $2::text[]) AS t(r, a)
                 WHERE EXISTS (SELECT 1 FROM vipd_nodes WHERE fence = $3 AND lease_until > now())
                 ON CONFLICT (rule, account) DO UPDATE SET fence = EXCLUDED.fence
                 WHERE vipd_claims.fence = EXCLUDED.fence
                    OR NOT EXISTS (SELECT 1 FROM vipd_nodes n
                                   WHERE n.fence = vipd_claims.fence AND n.lease_until > now())
                 RETURNING rule, account,
                           (SELECT k.record FROM vipd_checks k
                            WHERE k.rule = vipd_claims.rule AND k.account = vipd_claims.account)",
                &[&rules, &accounts, &self.0.fence],
            )
            .await?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        Ok(rows.iter().map(|r| got.get(r).cloned()).collect())
    }
}

/// Gives a claim back, if it is still this node's.
pub async fn release(
    client: &impl deadpool_postgres::GenericClient,
    lease: &Lease,
    rule: &str,
    account: &str,
) -> Result<(), PgError> {
    client
        .run(
            "DELETE FROM vipd_claims WHERE rule = $1 AND account = $2 AND fence = $3",
            &[&rule, &account, &lease.fence],
        )
        .await?;
    Ok(())
}

/// Every node that ever started, with its lease and claims, by name.
pub async fn nodes(client: &impl GenericClient) -> Result<Vec<NodeInfo>, PgError> {
    let rows = client
        .query(
            "SELECT n.name, n.fence,
                    extract(epoch FROM n.lease_until - now())::float8,
                    (SELECT count(*) FROM vipd_claims c WHERE c.fence = n.fence)
             FROM vipd_nodes n ORDER BY n.name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| NodeInfo {
            name: r.get(0),
            fence: r.get(1),
            lease_left: r.get(2),
            claims: r.get(3),
        })
        .collect())
}

/// The node that should check (rule, account) among `live` (names):
/// the highest of a hash of each name with the pair (rendezvous hashing).
/// Every node computes the same answer from the same list; when a node
/// joins or leaves, only the pairs it gains or held move.
pub(crate) fn preferred<'a>(live: &'a [String], rule: &str, account: &str) -> Option<&'a str> {
    live.iter()
        .max_by_key(|name| fnv1a(&[name.as_bytes(), rule.as_bytes(), account.as_bytes()]))
        .map(String::as_str)
}

/// FNV-1a over the parts, each followed by a 0xff separator (a byte no
/// UTF-8 text holds): the same on every node and every vipd version.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::super::batch::Batcher;
    use super::super::throwaway::TestDb;
    use super::*;

    /// Each (rule, account) is one node's at a time: of two nodes asking
    /// at once one gets it (each node's asks written as one batch, a pair
    /// asked twice in it included); the holder keeps it while its lease
    /// holds; when its lease runs out (the node died) the other gets it; a
    /// released claim is free; a node without its lease gets nothing.
    #[tokio::test]
    async fn a_pair_is_claimed_by_one_node_at_a_time() {
        let db = TestDb::migrated().await;
        let pool = db.pool(8);
        let (c, ca, cb) = (
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
        );
        let long = Duration::from_secs(60);
        let a = acquire(&**ca, "a", long).await.unwrap();
        let b = acquire(&**cb, "b", long).await.unwrap();
        let (node_a, node_b) = (
            Batcher::start(pool.clone(), Claims(a.clone())),
            Batcher::start(pool.clone(), Claims(b.clone())),
        );
        let claim = |node: &Batcher<Claims>, account: &str| {
            let (node, pair) = (node.clone(), ("keep".to_owned(), account.to_owned()));
            async move { node.write(pair).await.unwrap().is_some() }
        };
        let accounts: Vec<String> = (0..20).map(|i| format!("acct-{i}")).collect();
        let asks = |node: &Batcher<Claims>| {
            let asks: Vec<_> = accounts
                .iter()
                .chain([&"acct-3".to_owned()])
                .map(|a| tokio::spawn(claim(node, a)))
                .collect();
            async move {
                let mut got = Vec::new();
                for ask in asks {
                    got.push(ask.await.unwrap());
                }
                got
            }
        };
        let (got_a, got_b) = tokio::join!(asks(&node_a), asks(&node_b));
        for (i, account) in accounts.iter().enumerate() {
            assert!(got_a[i] ^ got_b[i], "{account}: exactly one node");
        }
        assert_eq!(got_a[20], got_a[3], "a pair asked twice in a batch");
        // The holder keeps it; the other does not get it.
        assert!(claim(&node_a, "x").await);
        assert!(claim(&node_a, "x").await, "kept");
        assert!(!claim(&node_b, "x").await);
        release(&ca, &a, "keep", "x").await.unwrap();
        assert!(claim(&node_b, "x").await, "released");
        // b's lease runs out: a takes its pairs.
        let brief = Duration::from_millis(300);
        assert!(renew(&**cb, &b, brief).await.unwrap());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!renew(&**cb, &b, long).await.unwrap(), "b's lease is gone");
        assert!(!claim(&node_b, "y").await, "b claims nothing");
        assert!(claim(&node_a, "x").await, "taken over");
        // A newer start under a's name: the old a claims nothing.
        let a2 = acquire(&**c, "a", long).await.unwrap();
        assert!(!claim(&node_a, "free").await);
        assert!(claim(&Batcher::start(pool.clone(), Claims(a2)), "x").await);
        let listed = nodes(&**c).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!((listed[0].name.as_str(), listed[0].claims), ("a", 1));
        assert!(listed[1].lease_left < 0.0, "{listed:?}");
    }

    /// Pairs are spread over the live nodes, and when one leaves only its
    /// pairs move.
    #[test]
    fn pairs_spread_over_nodes_and_move_only_when_their_node_leaves() {
        let three: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let two: Vec<String> = ["n1", "n3"].map(String::from).to_vec();
        let mut per = std::collections::HashMap::new();
        for i in 0..3000 {
            let a = format!("acct-{i}");
            let p = preferred(&three, "keep", &a).unwrap();
            *per.entry(p).or_insert(0) += 1;
            let q = preferred(&two, "keep", &a).unwrap();
            if p != "n2" {
                assert_eq!(p, q, "{a} stays on {p}");
            }
        }
        for n in ["n1", "n2", "n3"] {
            assert!((800..1200).contains(&per[n]), "{per:?}");
        }
        assert_eq!(preferred(&[], "keep", "a"), None);
    }
}
