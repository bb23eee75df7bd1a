//! Which orders a node planned without waiting for the WAL flush are
//! durable yet.
//!
//! A plan under no cap commits on a connection with
//! `synchronous_commit = off`. PostgreSQL flushes its WAL in order: a
//! commit that waits for its flush makes every commit before it durable
//! too. So the sent mark that follows a plan (a transition, which waits)
//! makes the plan durable with it, one flush for both, and a plan's
//! durability needs a commit of its own only when no flushed commit
//! started after it.
//!
//! Each plan is numbered when its statement has returned; a flushed
//! commit covers every plan numbered before it started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::seen::lock;
use crate::ledger::store::Commits;

#[derive(Debug, Default)]
pub(super) struct Flushes {
    inner: Mutex<Inner>,
    /// Waits for durability asked for, and commits run for them.
    waits: AtomicU64,
    commits: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Plans made without waiting, so far.
    made: u64,
    /// The orders whose last such plan no flushed commit has covered yet,
    /// with that plan's number.
    uncovered: HashMap<String, u64>,
}

impl Flushes {
    /// The plans of `keys` have (or may have) committed without waiting.
    pub(super) fn relaxed<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        let mut inner = lock(&self.inner);
        inner.made += 1;
        let n = inner.made;
        for key in keys {
            inner.uncovered.insert(key.to_owned(), n);
        }
    }

    /// Read as a flushed commit starts: the plans it will cover.
    pub(super) fn before_flushed(&self) -> u64 {
        lock(&self.inner).made
    }

    /// A flushed commit that started when [`before_flushed`](Self::before_flushed)
    /// said `covers` has committed.
    pub(super) fn flushed(&self, covers: u64) {
        let mut inner = lock(&self.inner);
        if !inner.uncovered.is_empty() {
            inner.uncovered.retain(|_, n| *n > covers);
        }
    }

    /// A flushed commit starting now would cover what it returns, if some
    /// plan not covered yet needs one: any (`key` `None`), or `key`'s.
    pub(super) fn needed(&self, key: Option<&str>) -> Option<u64> {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let inner = lock(&self.inner);
        let needed = match key {
            None => !inner.uncovered.is_empty(),
            Some(key) => inner.uncovered.contains_key(key),
        };
        needed.then_some(inner.made)
    }

    /// A commit run for a wait ([`needed`](Self::needed)) has committed.
    pub(super) fn ran(&self, covers: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.flushed(covers);
    }

    pub(super) fn commits(&self) -> Commits {
        Commits {
            waits: self.waits.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
        }
    }
}
