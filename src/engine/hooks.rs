//! The engine's port to whatever reacts to its events and may veto a
//! payment: the Lua plugins in vipd ([`crate::plugins::LuaHooks`]), nothing
//! at all ([`NoHooks`]) where a test or a command chooses so. The engine
//! calls only this trait; it never names Lua.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Engine;
use super::events::{Event, EventKind};

/// A boxed future, for the trait's asking methods.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A veto from `before_recharge`: no, or not without a person's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veto {
    /// The plugin that said no.
    pub plugin: String,
    /// Its reason.
    pub reason: String,
    /// The plugin asks a person to approve the renewal instead of
    /// skipping it (`{approve = "reason"}`).
    pub ask_approval: bool,
}

/// A callback mapped by a `parse_callback` handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The plugin that mapped it.
    pub plugin: String,
    /// A vendor order id or a vipd order key.
    pub order: String,
    /// Paid or not.
    pub success: bool,
    /// Yuan, when given.
    pub price: Option<f64>,
}

/// One plugin's counts of handler calls, failures and limit hits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCounts {
    pub calls: u64,
    pub errors: u64,
    pub instruction_limit: u64,
    pub time_limit: u64,
    pub memory_limit: u64,
}

/// What the engine asks of its listeners. One value per configuration
/// generation: the engine starts it when the generation takes over and
/// retires it when the next one does.
pub trait Hooks: Send + Sync {
    /// Whether anything listens to `kind` (the engine skips building
    /// events nobody hears).
    fn listens(&self, kind: EventKind) -> bool;

    /// Delivers `ev`; nothing waits for the listeners.
    fn notify(&self, ev: Event);

    /// Asks the `before_recharge` listeners; a veto stops the payment.
    /// Listeners that do not answer in time are no veto.
    fn veto(&self, ev: Event) -> BoxFuture<'_, Option<Veto>>;

    /// Asks the `parse_callback` listeners to map a callback the
    /// configured fields could not read.
    fn parse_callback(&self, ev: Event) -> BoxFuture<'_, Option<Mapped>>;

    /// Starts this generation (its jobs, its thread); `engine` is what the
    /// listeners may call back into.
    fn start(&self, engine: &Arc<Engine>);

    /// Stops this generation: no new work; work in flight finishes.
    fn retire(&self);

    /// Resolves when a retired generation has finished its work.
    fn finished(&self) -> BoxFuture<'_, ()>;

    /// The names of this generation's plugins, in load order.
    fn names(&self) -> Vec<String>;

    /// Counts per plugin since the daemon started (every generation).
    fn counts(&self) -> BTreeMap<String, PluginCounts>;
}

/// No listeners: nothing is vetoed, no callback is mapped.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {
    fn listens(&self, _: EventKind) -> bool {
        false
    }
    fn notify(&self, _: Event) {}
    fn veto(&self, _: Event) -> BoxFuture<'_, Option<Veto>> {
        Box::pin(async { None })
    }
    fn parse_callback(&self, _: Event) -> BoxFuture<'_, Option<Mapped>> {
        Box::pin(async { None })
    }
    fn start(&self, _: &Arc<Engine>) {}
    fn retire(&self) {}
    fn finished(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn counts(&self) -> BTreeMap<String, PluginCounts> {
        BTreeMap::new()
    }
}
