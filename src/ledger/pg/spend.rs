//! Spend in PostgreSQL: a folded row per (rule, period) in `vipd_spend`,
//! and the changes appended since in `vipd_spend_changes`.
//!
//! Transitions only append (no transition waits on another's spend row).
//! A plan under a cap locks its periods' rows, then folds the changes
//! appended so far into them and reads the totals, in two statements: the
//! second one's snapshot is taken after the lock is held, so it sees every
//! plan that committed before, and the changes table stays as short as
//! the time between two plans of the rule.

use deadpool_postgres::GenericClient;

use super::{Prepared, db};
use crate::ledger::{LedgerError, Spend};
use crate::units::Fen;

/// The folded row's spend plus the changes not folded yet.
pub(super) const SPEND: &str = "SELECT (coalesce((SELECT reserved FROM vipd_spend WHERE rule = $1 AND period = $2), 0)
                        + coalesce(sum(c.reserved), 0))::bigint,
                       (coalesce((SELECT settled FROM vipd_spend WHERE rule = $1 AND period = $2), 0)
                        + coalesce(sum(c.settled), 0))::bigint
                FROM vipd_spend_changes c WHERE c.rule = $1 AND c.period = $2";

pub(super) fn spend_of(row: &tokio_postgres::Row) -> Spend {
    Spend {
        reserved: Fen(row.get(0)),
        settled: Fen(row.get(1)),
    }
}

/// A rule's spend rows for `periods`, made (at zero) where missing and
/// locked for the transaction, in the order given (a day before its
/// month, for every plan: two plans never wait on each other crosswise).
const LOCK_ROWS: &str = "INSERT INTO vipd_spend (rule, period)
     SELECT $1, p FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i
     ON CONFLICT (rule, period) DO UPDATE SET reserved = vipd_spend.reserved";

/// Folds the changes appended to the locked rows and returns each row's
/// total and how many changes it took in.
const FOLD_LOCKED: &str = "WITH moved AS (
         DELETE FROM vipd_spend_changes WHERE rule = $1 AND period = ANY($2::text[])
         RETURNING period, reserved, settled),
     total AS (
         SELECT period, count(*) AS n, sum(reserved)::bigint AS r, sum(settled)::bigint AS s
         FROM moved GROUP BY period)
     UPDATE vipd_spend s
        SET reserved = s.reserved + coalesce(t.r, 0), settled = s.settled + coalesce(t.s, 0)
       FROM unnest($2::text[]) AS p(period) LEFT JOIN total t ON t.period = p.period
      WHERE s.rule = $1 AND s.period = p.period
     RETURNING s.period, s.reserved, s.settled, coalesce(t.n, 0)";

/// Locks a rule's rows for `periods` until the transaction ends and folds
/// the changes appended to them: each period's spend, and how many
/// changes were folded into it.
async fn fold_locked(
    tx: &impl GenericClient,
    rule: &str,
    periods: &[&str],
) -> Result<Vec<(Spend, u64)>, LedgerError> {
    if periods.is_empty() {
        return Ok(Vec::new());
    }
    tx.run(LOCK_ROWS, &[&rule, &periods]).await.map_err(db)?;
    let rows = tx.all(FOLD_LOCKED, &[&rule, &periods]).await.map_err(db)?;
    Ok(periods
        .iter()
        .map(|p| {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == *p)
                .map(|r| {
                    let spend = Spend {
                        reserved: Fen(r.get(1)),
                        settled: Fen(r.get(2)),
                    };
                    (spend, r.get::<_, i64>(3) as u64)
                })
                .unwrap_or_default()
        })
        .collect())
}

/// A rule's spend in each of `periods`, their rows locked until the
/// transaction ends (a plan under a cap): no other node's plan can use
/// the same room meanwhile.
pub(super) async fn locked(
    tx: &impl GenericClient,
    rule: &str,
    periods: &[&str],
) -> Result<Vec<Spend>, LedgerError> {
    let folded = fold_locked(tx, rule, periods).await?;
    Ok(folded.into_iter().map(|(spend, _)| spend).collect())
}

/// Folds every change appended so far into its period's row: each period
/// in its own transaction under its row's lock (one lock a transaction: a
/// plan locking a day and a month cannot deadlock with it). Returns how
/// many changes were folded.
pub(super) async fn fold_all(client: &mut deadpool_postgres::Client) -> Result<u64, LedgerError> {
    let periods: Vec<(String, String)> = client
        .all("SELECT DISTINCT rule, period FROM vipd_spend_changes", &[])
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut folded = 0;
    for (rule, period) in periods {
        let tx = client.transaction().await.map_err(db)?;
        let moved = fold_locked(&tx, &rule, &[period.as_str()]).await?;
        tx.commit().await.map_err(db)?;
        folded += moved.iter().map(|(_, n)| n).sum::<u64>();
    }
    Ok(folded)
}
