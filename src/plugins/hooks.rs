//! The Lua plugins as the engine's [`Hooks`]: one value per generation,
//! which hands events to the generation's Lua thread and waits (bounded)
//! for its answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Plugins;
use crate::engine::Engine;
use crate::engine::events::{Event, EventKind};
use crate::engine::hooks::{BoxFuture, Hooks, Mapped, PluginCounts, Veto};

/// One generation's plugins, as the engine sees them.
#[derive(Debug)]
pub struct LuaHooks(Arc<Plugins>);

impl LuaHooks {
    /// Wraps a loaded generation.
    pub fn new(plugins: Plugins) -> Arc<LuaHooks> {
        Arc::new(LuaHooks(Arc::new(plugins)))
    }

    /// The plugins themselves.
    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.0
    }
}

impl Hooks for LuaHooks {
    fn listens(&self, kind: EventKind) -> bool {
        self.0.handler_count(kind) > 0
    }

    fn notify(&self, ev: Event) {
        self.0.notify(ev);
    }

    fn veto(&self, ev: Event) -> BoxFuture<'_, Option<Veto>> {
        Box::pin(self.0.ask_veto(ev))
    }

    fn parse_callback(&self, ev: Event) -> BoxFuture<'_, Option<Mapped>> {
        Box::pin(self.0.ask_parse_callback(ev))
    }

    fn start(&self, engine: &Arc<Engine>) {
        self.0.host.attach(engine);
        self.0.start();
    }

    fn retire(&self) {
        self.0.retire();
    }

    fn finished(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.0.wait())
    }

    fn names(&self) -> Vec<String> {
        self.0.names().to_vec()
    }

    fn counts(&self) -> BTreeMap<String, PluginCounts> {
        self.0.host.stats.snapshot()
    }
}
