//! What vipd records beside its orders: the event log, what each check
//! of a rule and account saw, and each account's credential state and
//! rotated tokens. Nothing here moves money; the engine reads it to say
//! what happened and to decide when to look again.

use crate::ledger::{AccountState, CheckState, EventRecord, LedgerError, StoredToken};

/// Events, check states, account states and rotated tokens.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    /// Appends to the event log.
    async fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError>;
    /// Drops events older than `before` (never orders); how many went.
    async fn prune_events(&self, before: i64) -> Result<usize, LedgerError>;
    /// The latest `limit` events, oldest first.
    async fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError>;
    /// What the last check of a pair saw and decided.
    async fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError>;
    /// Stores a pair's check state.
    async fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError>;
    /// The account's rotated token pair, if it was ever rotated.
    async fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError>;
    /// Stores a rotated token pair (make it durable before using it).
    async fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError>;
    /// An account's credential state.
    async fn account_state(&self, account: &str) -> Result<AccountState, LedgerError>;
    /// Records an account's credential state.
    async fn put_account_state(
        &self,
        account: &str,
        state: &AccountState,
    ) -> Result<(), LedgerError>;
}

// sled's answers are ready at once, but for the waits on its group commit.
sled_at_once! {
    RecordStore {
        fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError>;
        fn prune_events(&self, before: i64) -> Result<usize, LedgerError>;
        fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError>;
        fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError>;
        fn put_check_state(&self, rule: &str, account: &str, state: &CheckState) -> Result<(), LedgerError>;
        fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError>;
        fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError>;
        fn account_state(&self, account: &str) -> Result<AccountState, LedgerError>;
        fn put_account_state(&self, account: &str, state: &AccountState) -> Result<(), LedgerError>;
    }
}
