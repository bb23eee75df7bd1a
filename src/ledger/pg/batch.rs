//! Group commit for a node's small writes: the rows many checks and
//! renewals ask to write at once (events, check and account states,
//! claims) go to one writer task of their kind, which writes all that
//! are waiting as one statement (`unnest` of a column array each) in one
//! commit, then tells each caller its own row's outcome. While a batch
//! is being written the next one gathers, so the busier the node, the
//! more rows a commit carries.
//!
//! - **One bad row refuses that row, never the batch.** When the database
//!   refuses the statement, nothing of it was written (each batch is one
//!   autocommit statement), and each row is written again alone: the bad
//!   one fails, the others are written.
//! - **A lost connection is never written again.** When the connection
//!   fails, the statement may or may not have committed; every caller in
//!   the batch gets the error, as a caller writing alone would. The rows
//!   batched here are upserts, idempotent claims and events (an event
//!   told twice is better than one lost, and none is re-sent by vipd).

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{PgError, db};
use crate::ledger::LedgerError;

/// The most rows written in one statement.
const MAX_ROWS: usize = 1024;

/// One kind of row written in batches.
pub(super) trait Batch: Send + Sync + 'static {
    /// What a caller asks to write.
    type Row: Send + Sync + 'static;
    /// What a caller learns of its row.
    type Out: Send + 'static;
    /// Writes `rows` in one statement; each row's outcome, in their order.
    fn write(
        &self,
        c: &deadpool_postgres::Client,
        rows: &[Self::Row],
    ) -> impl Future<Output = Result<Vec<Self::Out>, tokio_postgres::Error>> + Send;
}

type Reply<B> = oneshot::Sender<Result<<B as Batch>::Out, LedgerError>>;

/// The writer of one kind of row: callers hand it their row and wait for
/// the commit that carries it.
pub(super) struct Batcher<B: Batch> {
    jobs: mpsc::UnboundedSender<(B::Row, Reply<B>)>,
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Batcher {
            jobs: self.jobs.clone(),
        }
    }
}

fn stopped() -> LedgerError {
    LedgerError::NotDurable("the store's writer has stopped".into())
}

impl<B: Batch> Batcher<B> {
    /// Starts the writer task, on connections from `pool`. It ends when
    /// the last `Batcher` of it is dropped.
    pub(super) fn start(pool: Pool, batch: B) -> Batcher<B> {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, batch, rx));
        Batcher { jobs }
    }

    /// Writes `row` with whatever else is waiting; its outcome once
    /// committed.
    pub(super) async fn write(&self, row: B::Row) -> Result<B::Out, LedgerError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs.send((row, reply)).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run<B: Batch>(pool: Pool, batch: B, mut rx: mpsc::UnboundedReceiver<(B::Row, Reply<B>)>) {
    let mut jobs = Vec::with_capacity(MAX_ROWS);
    while rx.recv_many(&mut jobs, MAX_ROWS).await > 0 {
        let (rows, replies): (Vec<B::Row>, Vec<Reply<B>>) = jobs.drain(..).unzip();
        let outcomes = write_batch(&pool, &batch, &rows).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that stopped waiting no longer needs its answer.
            let _ = reply.send(outcome);
        }
    }
}

/// Each row's outcome: the batch's statement, or when the database refuses
/// it, each row's own.
async fn write_batch<B: Batch>(
    pool: &Pool,
    batch: &B,
    rows: &[B::Row],
) -> Vec<Result<B::Out, LedgerError>> {
    let every = |why: String| {
        (0..rows.len())
            .map(|_| Err(LedgerError::NotDurable(why.clone())))
            .collect()
    };
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return every(PgError::from_pool(e).to_string()),
    };
    match batch.write(&client, rows).await {
        Ok(outs) if outs.len() == rows.len() => outs.into_iter().map(Ok).collect(),
        Ok(outs) => every(format!(
            "a batch of {} rows came back with {} outcomes",
            rows.len(),
            outs.len()
        )),
        Err(e) if rows.len() > 1 && refused(&client, &e) => {
            let mut outcomes = Vec::with_capacity(rows.len());
            for row in rows {
                let one = batch.write(&client, std::slice::from_ref(row)).await;
                outcomes.push(match one {
                    Ok(mut out) if out.len() == 1 => Ok(out.remove(0)),
                    Ok(_) => Err(LedgerError::NotDurable(
                        "a row came back without outcome".into(),
                    )),
                    Err(e) => Err(db(e)),
                });
            }
            outcomes
        }
        Err(e) => every(PgError::Db(e).to_string()),
    }
}

/// Whether the database refused a statement and nothing of it was written:
/// an error of the statement, on a connection still open. (A fatal one,
/// such as the server shutting the connection, may come after a commit.)
fn refused(c: &deadpool_postgres::Client, e: &tokio_postgres::Error) -> bool {
    !c.is_closed()
        && e.as_db_error()
            .is_some_and(|d| d.parsed_severity() == Some(tokio_postgres::error::Severity::Error))
}

/// The rows of `rows` whose key no later row repeats, in key order: an
/// upsert's statement may change a row once only, the last write of a key
/// is the one that stands, and every writer locks rows in the same order
/// (two never wait on each other crosswise).
pub(super) fn last_of_each<'a, R, K: Ord>(rows: &'a [R], key: impl Fn(&'a R) -> K) -> Vec<&'a R> {
    let mut last = std::collections::BTreeMap::new();
    for r in rows {
        last.insert(key(r), r);
    }
    last.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::Prepared;
    use super::super::throwaway::TestDb;
    use super::*;

    /// Inserts numbers into `numbers` (positive only, by its check) and
    /// notes the size of each statement's batch; `then` runs after the
    /// insert, on the same connection.
    struct Numbers {
        batches: Arc<Mutex<Vec<usize>>>,
        then: Option<&'static str>,
    }

    impl Batch for Numbers {
        type Row = i32;
        type Out = ();
        async fn write(
            &self,
            c: &deadpool_postgres::Client,
            rows: &[i32],
        ) -> Result<Vec<()>, tokio_postgres::Error> {
            self.batches.lock().unwrap().push(rows.len());
            c.run(
                "INSERT INTO numbers SELECT * FROM unnest($1::int[])",
                &[&rows.to_vec()],
            )
            .await?;
            if let Some(then) = self.then {
                c.run(then, &[]).await?;
            }
            Ok(vec![(); rows.len()])
        }
    }

    async fn numbers(
        then: Option<&'static str>,
    ) -> (TestDb, Batcher<Numbers>, Arc<Mutex<Vec<usize>>>) {
        let db = TestDb::migrated().await;
        db.connect()
            .await
            .execute("CREATE TABLE numbers (n int CHECK (n > 0))", &[])
            .await
            .unwrap();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let writer = Batcher::start(
            db.pool(2),
            Numbers {
                batches: batches.clone(),
                then,
            },
        );
        (db, writer, batches)
    }

    /// Writes `rows` from as many callers at once; each one's outcome.
    async fn write_at_once(writer: &Batcher<Numbers>, rows: &[i32]) -> Vec<Result<(), String>> {
        let callers: Vec<_> = rows
            .iter()
            .map(|n| {
                let (writer, n) = (writer.clone(), *n);
                tokio::spawn(async move { writer.write(n).await.map_err(|e| e.to_string()) })
            })
            .collect();
        let mut outcomes = Vec::new();
        for c in callers {
            outcomes.push(c.await.unwrap());
        }
        outcomes
    }

    async fn stored(db: &TestDb) -> Vec<i32> {
        db.connect()
            .await
            .query("SELECT n FROM numbers ORDER BY n", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Rows asked at once are one statement; when the database refuses
    /// one row, the others are written each alone and only that row fails.
    #[tokio::test]
    async fn rows_asked_together_are_one_statement_and_a_bad_row_fails_alone() {
        let (db, writer, batches) = numbers(None).await;
        let all = write_at_once(&writer, &[1, 2, 3]).await;
        assert!(all.iter().all(Result::is_ok), "{all:?}");
        assert_eq!(*batches.lock().unwrap(), [3]);
        let some = write_at_once(&writer, &[4, -1, 5]).await;
        assert!(some[0].is_ok() && some[2].is_ok(), "{some:?}");
        let refused = some[1].as_ref().unwrap_err();
        assert!(refused.contains("numbers_n_check"), "{refused}");
        assert_eq!(*batches.lock().unwrap(), [3, 3, 1, 1, 1]);
        assert_eq!(stored(&db).await, [1, 2, 3, 4, 5]);
    }

    /// A connection lost after the statement ran (it may have committed):
    /// every caller of the batch is told, and no row is written again.
    #[tokio::test]
    async fn a_batch_whose_connection_is_lost_is_never_written_again() {
        let (db, writer, batches) =
            numbers(Some("SELECT pg_terminate_backend(pg_backend_pid())")).await;
        let lost = write_at_once(&writer, &[1, 2]).await;
        assert!(lost.iter().all(Result::is_err), "{lost:?}");
        assert_eq!(*batches.lock().unwrap(), [2]);
        assert_eq!(stored(&db).await, [1, 2], "committed once, not again");
    }

    #[test]
    fn the_last_row_of_each_key_stands_in_key_order() {
        let rows = [("c", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)];
        let last: Vec<_> = last_of_each(&rows, |r| r.0).into_iter().copied().collect();
        assert_eq!(last, [("a", 3), ("b", 5), ("c", 4)]);
    }
}
