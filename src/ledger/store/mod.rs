//! The store as a port: everything the engine, the admin API and the
//! plugins' `vipd.kv` need to remember. The engine holds an
//! `Arc<dyn Store>` and never names sled. The sled [`Ledger`] implements
//! it; PostgreSQL (`ledger/pg/`) implements it too, and both must pass
//! the same conformance suite (`conformance/`: one key at most one billed
//! order, planned durable before send, recovery, the cross-rule guard,
//! budgets, refunds, events).
//!
//! [`Store`] is four roles, each small enough to read at once:
//!
//! | role | file | what |
//! |---|---|---|
//! | [`OrderStore`] | `orders.rs` | orders, their transitions, the budget they hold, durability, holds on new orders |
//! | [`RecordStore`] | `records.rs` | the event log, check states, account states, rotated tokens |
//! | [`KvStore`] | `kv.rs` | the plugins' `vipd.kv` |
//! | [`NodeStore`] | `node.rs` | health, backups, the leases and claims of nodes sharing a store |
//!
//! A new backend implements the four; a wrapper (a test's faulty store)
//! may change one role and hand the others on. The errors say what
//! happened whatever the backend ([`LedgerError::kind`]).
//!
//! The methods are asynchronous so that a networked backend can wait on
//! its database without blocking the runtime. sled answers in
//! microseconds without waiting, so its futures are ready at once; only
//! the durability waits and the probe wait (for the group commit).

/// Implements a role for sled's [`Ledger`] by calling its inherent method
/// of the same name, which answers at once: one line a method instead of
/// a forwarding body. Methods that wait (the group commit) are written out
/// after the list.
macro_rules! sled_at_once {
    ($role:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $out:ty;)* } $($own:item)*) => {
        #[async_trait::async_trait]
        impl $role for crate::ledger::Ledger {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $out {
                    crate::ledger::Ledger::$name(self $(, $arg)*)
                }
            )*
            $($own)*
        }
    };
}

mod kv;
mod node;
mod orders;
mod records;

pub use kv::KvStore;
pub use node::NodeStore;
pub use orders::OrderStore;
pub use records::RecordStore;

#[cfg(doc)]
use super::{Ledger, LedgerError};

/// A plugin's `vipd.kv` value: JSON.
pub type KvValue = serde_json::Value;

/// Everything vipd needs from a store: the four roles.
pub trait Store: OrderStore + RecordStore + KvStore + NodeStore + std::fmt::Debug {}

impl<T: OrderStore + RecordStore + KvStore + NodeStore + std::fmt::Debug + ?Sized> Store for T {}

/// A node sharing the store: its lease and how many pairs it checks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub fence: i64,
    /// Seconds left on its lease (negative: ran out).
    pub lease_left: f64,
    /// The (rule, account) pairs it holds.
    pub claims: i64,
}

/// How often writers waited for durability and how many commits answered
/// them: one commit answers every wait queued before it (group commit),
/// so waits / commits is the batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commits {
    /// Waits for durability asked for.
    pub waits: u64,
    /// Commits run (sled: a flush and an fsync).
    pub commits: u64,
}
