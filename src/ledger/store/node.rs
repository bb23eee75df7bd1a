//! The store as one node among several, and its health: whether a write
//! can be made durable now, a backup, the leases and claims of nodes that
//! share a PostgreSQL store. A store of one node (sled) answers the
//! claims with "always mine" and "no one else".

use super::{Commits, NodeInfo};
use crate::ledger::{Ledger, LedgerError, Order};

/// Health, backups, and the nodes that share the store.
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync {
    /// Whether a write can be made durable now (what `/healthz` asks).
    async fn probe(&self) -> Result<(), LedgerError>;
    /// Resolves when the store has failed for good and must not be used
    /// to pay (sticky).
    async fn failed(&self) -> String;
    /// A consistent backup, in this store's own format (what
    /// `GET /api/store/backup` serves), taken at `now` (unix seconds).
    async fn backup(&self, now: i64) -> Result<Vec<u8>, LedgerError>;
    /// Whether this node may check (rule, account) now. A store of one
    /// node: always.
    async fn claim(&self, _rule: &str, _account: &str) -> Result<bool, LedgerError> {
        Ok(true)
    }
    /// While running: what nodes that died left in flight, recovered as
    /// [`OrderStore::recover`] does at start. A store of one node: nothing.
    async fn take_over(&self, _now: i64) -> Result<Vec<Order>, LedgerError> {
        Ok(Vec::new())
    }
    /// The nodes sharing this store. A store of one node: none.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, LedgerError> {
        Ok(Vec::new())
    }
    /// Durability work so far, for `/metrics` (zero where not counted).
    fn commits(&self) -> Commits {
        Commits::default()
    }
}

/// sled's answers are ready at once, but for the waits on its group commit.
#[async_trait::async_trait]
impl NodeStore for Ledger {
    async fn probe(&self) -> Result<(), LedgerError> {
        Ledger::probe(self).await
    }
    async fn failed(&self) -> String {
        Ledger::failed(self).await
    }
    fn commits(&self) -> Commits {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.commit_stats();
        Commits {
            waits: stats.requests.load(Relaxed),
            commits: stats.fsyncs.load(Relaxed),
        }
    }
    async fn backup(&self, now: i64) -> Result<Vec<u8>, LedgerError> {
        let mut out = Vec::new();
        // A large store takes a while to copy: keep other tasks running.
        let copy = move || Ledger::backup(self, &mut out, now).map(|_| out);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(copy)
        } else {
            copy()
        }
    }
}
