//! Making writes survive power loss, with group commit.
//!
//! Why this exists: sled 0.34's `flush()` writes its log buffers and then,
//! on Linux, calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`
//! (see `pagecache/iobuf.rs`). That starts and waits for write-back of the
//! dirty pages, but it does not flush the drive's volatile write cache and
//! does not persist file metadata such as a grown file size: after a power
//! cut the "flushed" record can be gone. The planned-order record must not
//! be gone, or a restarted daemon could pay again. So after `flush()` we
//! call `fsync` (`File::sync_all`) on sled's data file ourselves.
//!
//! `fsync` costs milliseconds, and many renewals may want one at once. One
//! thread does the work: each writer enqueues a waiter after its write; the
//! thread takes every waiter queued so far, runs one `flush` + `fsync`, and
//! answers them all. Writers that arrive during an `fsync` wait for the
//! next one (their writes may have missed this one). When the last round
//! was shared, the next one first waits [`COMMIT_WINDOW`] for more
//! writers. Under load one `fsync` covers many writes; alone, a write
//! waits for exactly one.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::keys;
use super::seal::SealWriter;

type Waiter = oneshot::Sender<Result<(), String>>;

const STOPPED: &str = "the commit thread has stopped";

/// How long a round waits for more writers once the previous round was
/// shared. 1 ms makes about 8 renewals share a round at 3,000 renewals/s
/// (0.12 rounds a renewal instead of 0.45) and costs each durable wait at
/// most 1 ms; a writer alone (the round before had one) never waits.
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

/// Counters, for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Writers that asked for durability.
    pub requests: AtomicU64,
    /// `flush` + `fsync` rounds run.
    pub fsyncs: AtomicU64,
}

/// The group-commit thread's handle. Dropping it stops and joins the
/// thread, so the store is closed when the ledger is.
#[derive(Debug)]
pub struct GroupCommit {
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<CommitStats>,
    /// The first failure to make writes durable. sled keeps failing after
    /// an I/O error until it is reopened, so it is sticky: the daemon
    /// reports it on `/healthz` and exits for the service manager to
    /// restart it once the cause (a full disk) is cleared.
    failed: tokio::sync::watch::Receiver<Option<String>>,
    /// Also set by writers: sled can fail at insert (needing a new
    /// segment on a full disk) while flushes still succeed.
    fail_tx: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// Wait for the commit thread from tokio's blocking pool (see
    /// [`GroupCommit::wait_as_work`]).
    as_work: std::sync::atomic::AtomicBool,
    /// The store's change counter (see `seal.rs`), counted here by every
    /// write that changes an order and written into the store by the
    /// commit thread before each flush: one insert a round, not one a
    /// change.
    changes: Arc<AtomicU64>,
}

/// Keeps the first failure only.
fn first_failure(tx: &tokio::sync::watch::Sender<Option<String>>, why: &str) {
    tx.send_if_modified(|f| {
        let first = f.is_none();
        if first {
            *f = Some(why.to_owned());
        }
        first
    });
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl GroupCommit {
    /// Starts the commit thread for `db`, whose data file is `file` and
    /// whose change counter stands at `changes`; after each round it
    /// writes the counter made durable to the store's seal (see
    /// `seal.rs`).
    pub fn start(
        db: sled::Db,
        file: File,
        changes: u64,
        mut seal: SealWriter,
    ) -> std::io::Result<GroupCommit> {
        // What the store holds: the thread's first round writes the
        // counter if writers counted more since (even before it started).
        let mut stored = changes;
        let changes = Arc::new(AtomicU64::new(changes));
        let thread_changes = changes.clone();
        let (tx, rx) = mpsc::channel::<Waiter>();
        let (failed_tx, failed) = tokio::sync::watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        let fail_tx = failed_tx.clone();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("vipd-fsync".into())
            .spawn(move || {
                let mut busy = false;
                while let Ok(first) = rx.recv() {
                    // Under load, gather for a moment: more writers share
                    // the round, and fewer rounds cost less CPU.
                    if busy {
                        std::thread::sleep(COMMIT_WINDOW);
                    }
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    busy = batch.len() > 1;
                    // Every change counted so far is in sled already (a
                    // writer counts after its insert), so the counter
                    // written here comes after them in sled's log, and the
                    // flush makes durable at least what it counts.
                    let seq = thread_changes.load(Ordering::Acquire);
                    let counted = if seq > stored {
                        db.insert(keys::SEQ, &seq.to_be_bytes()[..])
                            .map(|_| stored = seq)
                            .map_err(|e| format!("write: {e}"))
                    } else {
                        Ok(())
                    };
                    let result = counted
                        .and_then(|()| db.flush().map_err(|e| format!("flush: {e}")))
                        .and_then(|_| file.sync_all().map_err(|e| format!("fsync: {e}")))
                        .and_then(|()| {
                            if seq > seal.sealed {
                                seal.write(seq).map_err(|e| format!("seal: {e}"))
                            } else {
                                Ok(())
                            }
                        });
                    thread_stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "the store could not make writes durable");
                        first_failure(&failed_tx, e);
                    }
                    // A waiter gone (its task cancelled) needs no answer.
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            })?;
        Ok(GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
            stats,
            failed,
            fail_tx,
            as_work: std::sync::atomic::AtomicBool::new(false),
            changes,
        })
    }

    /// Makes every later [`GroupCommit::durable`] wait from tokio's
    /// blocking pool. Under tokio's paused time (the in-process tests) a
    /// task waiting for the disk looks idle, and the clock jumps to the
    /// next timer while the disk works: retries and deadlines would fire
    /// early. A blocking task in flight stops that jump, so the disk's
    /// time counts as work. It costs a thread hand-off per wait; the
    /// daemon never turns it on.
    pub(crate) fn wait_as_work(&self) {
        self.as_work.store(true, Ordering::Relaxed);
    }

    /// Waits until every write made before this call is on stable storage.
    pub async fn durable(&self) -> Result<(), String> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let answer = self.enqueue()?;
        if self.as_work.load(Ordering::Relaxed) {
            return tokio::task::spawn_blocking(move || answer.blocking_recv())
                .await
                .map_err(|_| STOPPED.to_owned())?
                .map_err(|_| STOPPED.to_owned())?;
        }
        answer.await.map_err(|_| STOPPED.to_owned())?
    }

    /// [`GroupCommit::durable`] from outside a runtime.
    pub(crate) fn durable_blocking(&self) -> Result<(), String> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.enqueue()?
            .blocking_recv()
            .map_err(|_| STOPPED.to_owned())?
    }

    fn enqueue(&self) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(STOPPED)?
            .send(tx)
            .map_err(|_| STOPPED.to_owned())?;
        Ok(rx)
    }

    /// Counts one change to an order, made in sled just before.
    pub(crate) fn count_change(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Raises the counter to `at_least` (a restore writes the backup's).
    pub(crate) fn count_at_least(&self, at_least: u64) {
        self.changes.fetch_max(at_least, Ordering::AcqRel);
    }

    /// The change counter: changes made, durable or not.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Records a write that failed for good (an I/O error).
    pub fn fail(&self, why: &str) {
        tracing::error!(error = %why, "the store could not write");
        first_failure(&self.fail_tx, why);
    }

    /// The first durability failure, if there was one.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Resolves with the first durability failure.
    pub async fn failed(&self) -> String {
        let mut rx = self.failed.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The commit thread is gone without a failure: never.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }
}
