//! Lua plugins (README "Lua plugins"): every `*.lua` file in `scripts_dir`, loaded in
//! name order into one sandboxed Lua 5.4 state per configuration
//! generation.
//!
//! | file | owns |
//! |---|---|
//! | `load.rs` | the files in name order, run under the limits; load errors |
//! | `thread.rs` | the Lua thread: queueing work, bounded questions, jobs, retiring |
//! | `hooks.rs` | [`LuaHooks`]: the engine's `Hooks` port |
//! | `view.rs` | `vipd.config`, built lazily |
//! | `env.rs` | the sandbox: safe globals, text-only `load`, `require` |
//! | `limits.rs` | instruction, time and memory limits per call |
//! | `api.rs` | the `vipd` table, documented for `vipd lua-types` |
//! | `http.rs` | `vipd.http` |
//! | `types.rs` | the LuaLS `---@meta` file |
//!
//! All Lua of a generation runs on one thread of its own ("the Lua
//! thread", a single-threaded tokio runtime). Handlers run there as
//! coroutines ([`Plugins::call`]): a host call that does I/O yields and
//! its I/O runs on the daemon's runtime, so handlers waiting on the network
//! interleave. A handler that burns CPU holds only the Lua thread (the
//! state is single-threaded), never the daemon's workers, until its
//! instruction or time limit stops it. Events are queued to the Lua thread
//! without waiting; the one question a renewal must ask (`before_recharge`)
//! is awaited with a bound, and a plugin that does not answer in time does
//! not veto.

mod api;
mod env;
mod hooks;
mod http;
pub mod limits;
mod load;
pub mod pattern;
mod thread;
pub mod types;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use mlua::{ChunkMode, Function, Lua, Table, Value};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::engine::hooks::{Mapped, PluginCounts, Veto};
pub use api::{API, ApiDoc};
pub use hooks::LuaHooks;
pub use load::{LoadError, LoadErrors, describe_error, plugin_files};

use crate::config::{Check, Config, Provider};
use crate::engine::Engine;
use crate::engine::events::{Event, EventKind};
use crate::ledger::kv::KvQuota;
use crate::ledger::store::Store;
use crate::upstream::Signer;
use limits::{Budget, Limit, Limited};

/// What plugins reach outside Lua. Shared by every generation.
pub struct Host {
    engine: OnceLock<Weak<Engine>>,
    /// The daemon's runtime: host I/O runs there, not on the Lua thread.
    main: Option<tokio::runtime::Handle>,
    store: Option<Arc<dyn Store>>,
    /// For destinations the operator allowed in `plugins.http_allow`.
    http: reqwest::Client,
    /// For every other destination: refuses loopback and the like at
    /// resolution (see `upstream::guard`).
    guarded: reqwest::Client,
    /// The wall clock plugins read (`vipd.now`, kv expiry, job schedules).
    clock: Arc<dyn crate::model::Clock>,
    /// `Some` in `vipd test`: see [`Host::simulated`].
    simulated: Option<Simulated>,
    /// Handler counters, for status and metrics.
    pub stats: HookStats,
}

/// How plugins run under `vipd test`.
#[derive(Default)]
struct Simulated {
    /// Every `vipd.http` request, unsent: `METHOD url-without-query`.
    unsent: Mutex<Vec<String>>,
}

impl Simulated {
    /// Records `spec` and answers it as a receiver that accepts anything.
    fn answer(&self, spec: &http::Spec) -> http::Reply {
        self.unsent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(spec.describe());
        http::Reply::accepted()
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// A host over `store` (for `vipd.kv`); `None` for `vipd check`.
    pub fn new(store: Option<Arc<dyn Store>>) -> Arc<Host> {
        Arc::new(Host::build(store, crate::model::clock::system(), None))
    }

    /// A host for `vipd test`: plugins read `clock`; their Lua runs as a
    /// task on the current runtime instead of a thread of its own, so a
    /// paused clock waits for their work as for the engine's; and
    /// `vipd.http` sends nothing: each request is recorded
    /// ([`Host::unsent`]) and answered `200` with an empty body.
    pub fn simulated(store: Arc<dyn Store>, clock: Arc<dyn crate::model::Clock>) -> Arc<Host> {
        Arc::new(Host::build(Some(store), clock, Some(Simulated::default())))
    }

    fn build(
        store: Option<Arc<dyn Store>>,
        clock: Arc<dyn crate::model::Clock>,
        simulated: Option<Simulated>,
    ) -> Host {
        Host {
            engine: OnceLock::new(),
            main: tokio::runtime::Handle::try_current().ok(),
            store,
            http: crate::upstream::http_client(),
            guarded: crate::upstream::guard::plugin_http_client(),
            clock,
            simulated,
            stats: HookStats::default(),
        }
    }

    /// The `vipd.http` requests a simulated host answered without sending
    /// them, in order (`METHOD url-without-query`).
    pub(crate) fn unsent(&self) -> Vec<String> {
        self.simulated.as_ref().map_or_else(Vec::new, |s| {
            s.unsent.lock().unwrap_or_else(|p| p.into_inner()).clone()
        })
    }

    /// Unix seconds on the plugins' clock.
    fn now(&self) -> i64 {
        self.clock.unix()
    }

    /// Connects `vipd.vip_info` and `vipd.recharge` to the engine.
    pub(crate) fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }
}

/// Counts of handler calls, failures and limit hits, per plugin.
#[derive(Debug, Default)]
pub struct HookStats {
    per_plugin: Mutex<BTreeMap<String, PluginCounts>>,
}

impl HookStats {
    fn count(&self, plugin: &str, f: impl FnOnce(&mut PluginCounts)) {
        let mut map = self.per_plugin.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(plugin.to_owned()).or_default());
    }

    /// Every plugin's counts.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, PluginCounts> {
        self.per_plugin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A plugin job (`vipd.every`).
pub(crate) struct Job {
    plugin: Arc<str>,
    spec: String,
    schedule: Check,
    func: Function,
}

/// What plugins register while they load.
#[derive(Default)]
struct Registry {
    handlers: Vec<(EventKind, Arc<str>, Function)>,
    jobs: Vec<Job>,
}

/// Per-state data the host functions share.
struct Shared {
    loading: AtomicBool,
    registry: Mutex<Registry>,
    /// Every recharge provider; `None` where `plugins.sign_with` does not
    /// let plugins sign with its secret.
    signers: BTreeMap<String, Option<Signer>>,
    /// `plugins.webhook_secrets`: what `vipd.http{sign = NAME}` signs with.
    webhook_secrets: BTreeMap<String, crate::model::Secret>,
    /// Where `vipd.http` may go.
    destinations: crate::upstream::guard::Destinations,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One plugin's view of the host: its name, for tags and its kv namespace.
pub(crate) struct Ctx {
    plugin: Arc<str>,
    kv_quota: KvQuota,
    host: Arc<Host>,
    shared: Arc<Shared>,
}

impl Ctx {
    fn registering(&self, what: &str) -> mlua::Result<()> {
        if self.shared.loading.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(mlua::Error::RuntimeError(format!(
                "{what}: handlers and jobs are registered while the plugin loads, not later"
            )))
        }
    }

    fn doing_io(&self, what: &str) -> mlua::Result<()> {
        if self.shared.loading.load(Ordering::Relaxed) {
            Err(mlua::Error::RuntimeError(format!(
                "{what}: not while the plugin loads (loading has no side effects); call it from a handler or job"
            )))
        } else {
            Ok(())
        }
    }

    fn engine(&self, what: &str) -> mlua::Result<Arc<Engine>> {
        self.doing_io(what)?;
        self.host
            .engine
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| mlua::Error::RuntimeError(format!("{what}: the daemon is not running")))
    }

    /// Runs host I/O on the daemon's runtime, so that connections and
    /// timers belong to it, whichever thread the Lua runs on.
    async fn on_daemon<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = mlua::Result<T>> + Send + 'static,
    ) -> mlua::Result<T> {
        match &self.host.main {
            Some(handle) => handle
                .spawn(fut)
                .await
                .map_err(|e| mlua::Error::RuntimeError(format!("host call failed: {e}")))?,
            None => fut.await,
        }
    }

    fn store(&self, what: &str) -> mlua::Result<&Arc<dyn Store>> {
        self.doing_io(what)?;
        self.host
            .store
            .as_ref()
            .ok_or_else(|| mlua::Error::RuntimeError(format!("{what}: no state store here")))
    }
}

/// The plugins of one configuration generation.
pub struct Plugins {
    lua: Lua,
    handlers: HashMap<EventKind, Vec<(Arc<str>, Function)>>,
    jobs: Vec<Job>,
    names: Vec<String>,
    settings: crate::config::PluginSettings,
    timezone: chrono_tz::Tz,
    host: Arc<Host>,
    /// Where work for the Lua thread is queued, once it runs.
    queue: OnceLock<tokio::sync::mpsc::UnboundedSender<LuaTask>>,
    /// Work queued and not yet finished (see [`Plugins::settled`]).
    queued: Queued,
    stop: CancellationToken,
    /// Cancelled when the Lua thread has finished all its work.
    finished: CancellationToken,
}

/// A count of work queued to the Lua thread and not yet finished, and a
/// signal when it reaches zero.
#[derive(Default)]
struct Queued {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Work for the Lua thread.
type LuaTask =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Plugins {
    /// The loaded plugins, in load order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Bytes the Lua state uses now.
    pub fn memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// Handlers registered for `kind`.
    pub(crate) fn handler_count(&self, kind: EventKind) -> usize {
        self.handlers.get(&kind).map_or(0, Vec::len)
    }

    /// Runs one handler call as a coroutine under the limits. `None` when
    /// it failed: the failure is logged with `script.lua:LINE` and its
    /// traceback, and counted; nothing else is affected.
    pub async fn call(
        &self,
        plugin: &Arc<str>,
        what: &str,
        func: &Function,
        arg: Value,
    ) -> Option<Value> {
        self.host.stats.count(plugin, |c| c.calls += 1);
        let budget = Budget::new(self.settings.instructions, self.settings.timeout);
        let run = async {
            let thread = self.lua.create_thread(func.clone())?;
            thread.into_async::<Value>(arg)?.await
        };
        let result =
            tokio::time::timeout(self.settings.timeout, Limited::new(budget.clone(), run)).await;
        let error = match result {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e,
            Err(_) => {
                budget.mark(Limit::Time);
                mlua::Error::RuntimeError(String::new())
            }
        };
        let limit = budget
            .hit()
            .or(matches!(error, mlua::Error::MemoryError(_)).then_some(Limit::Memory));
        let message = match limit {
            Some(limit) => {
                if limit == Limit::Memory {
                    let _ = self.lua.gc_collect();
                }
                // Where: the hook stopped it; else the first script line
                // of the error's traceback; else (the allocator raises a
                // memory error, naming no line) where the hook last saw
                // it run; else the handler's own definition.
                let at = budget
                    .stopped_at()
                    .or_else(|| {
                        let text = describe_error(&error);
                        let line = text.lines().find(|l| l.contains(".lua:"))?;
                        Some(line.trim().trim_end_matches(':').to_owned())
                    })
                    .or_else(|| budget.last_seen().map(|at| format!("{at} or just after")))
                    .unwrap_or_else(|| {
                        let info = func.info();
                        format!(
                            "{}:{} (the handler)",
                            info.short_src.unwrap_or_else(|| "?".into()),
                            info.line_defined.unwrap_or(0)
                        )
                    });
                format!("{} at {at}", budget.message(limit, self.settings.memory))
            }
            None => describe_error(&error),
        };
        self.host.stats.count(plugin, |c| {
            c.errors += 1;
            match limit {
                Some(Limit::Instructions) => c.instruction_limit += 1,
                Some(Limit::Time) => c.time_limit += 1,
                Some(Limit::Memory) => c.memory_limit += 1,
                None => {}
            }
        });
        tracing::error!(plugin = %plugin, handler = what, limit = limit.map(Limit::as_str), "plugin handler failed: {message}");
        None
    }

    /// A fresh payload table for one handler (handlers cannot change what
    /// the next one sees).
    fn payload(&self, ev: &Event) -> Option<Value> {
        match api::lua_value(&self.lua, ev) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(event = ev.kind.as_str(), error = %e, "cannot pass the event to Lua");
                None
            }
        }
    }

    /// Delivers `ev` to its handlers, one after another, each isolated
    /// from the others' failures.
    pub async fn deliver(&self, ev: &Event) {
        let Some(handlers) = self.handlers.get(&ev.kind) else {
            return;
        };
        for (plugin, func) in handlers {
            let Some(arg) = self.payload(ev) else { return };
            self.call(plugin, ev.kind.as_str(), func, arg).await;
        }
    }

    /// Asks the `before_recharge` handlers; the first veto wins (a skip,
    /// or a request for a person's approval). A handler that fails does
    /// not veto (it is logged and counted): a broken script must not let
    /// memberships lapse.
    pub async fn veto(&self, ev: &Event) -> Option<Veto> {
        for (plugin, func) in self.handlers.get(&EventKind::BeforeRecharge)? {
            let arg = self.payload(ev)?;
            let answer = match self.call(plugin, ev.kind.as_str(), func, arg).await {
                Some(Value::Boolean(false)) => Some((format!("vetoed by plugin {plugin}"), false)),
                Some(Value::Table(t)) => {
                    let said = |field: &str| match t.get::<Value>(field) {
                        Ok(Value::String(s)) => Some(s.to_string_lossy()),
                        Ok(Value::Nil) | Ok(Value::Boolean(false)) | Err(_) => None,
                        Ok(_) => Some(format!("plugin {plugin} said {field}")),
                    };
                    // A skip wins over a request for approval: the
                    // cautious answer, when a table says both.
                    said("skip")
                        .map(|why| (why, false))
                        .or_else(|| said("approve").map(|why| (why, true)))
                }
                _ => None,
            };
            if let Some((reason, ask_approval)) = answer {
                return Some(Veto {
                    plugin: plugin.to_string(),
                    reason,
                    ask_approval,
                });
            }
        }
        None
    }

    /// Asks the `parse_callback` handlers to map a callback; the first
    /// answer with `order` and `status` wins.
    pub(crate) async fn parse_callback(&self, ev: &Event) -> Option<Mapped> {
        for (plugin, func) in self.handlers.get(&EventKind::ParseCallback)? {
            let arg = self.payload(ev)?;
            let Some(Value::Table(t)) = self.call(plugin, ev.kind.as_str(), func, arg).await else {
                continue;
            };
            // A field of the wrong type is the plugin's mistake: its answer
            // is set aside, loudly, rather than read as "no price given"
            // (which would skip the price check on a payment).
            let fields = (
                t.get::<Option<String>>("order"),
                t.get::<Option<String>>("status"),
                t.get::<Option<f64>>("price"),
            );
            let (order, status, price) = match fields {
                (Ok(order), Ok(status), Ok(price)) => (order, status, price),
                (order, status, price) => {
                    let bad = [
                        ("order", order.err()),
                        ("status", status.err()),
                        ("price", price.err()),
                    ]
                    .into_iter()
                    .find_map(|(name, e)| e.map(|e| format!("{name}: {e}")))
                    .unwrap_or_default();
                    tracing::warn!(plugin = %plugin, field = %bad, "parse_callback: a field has the wrong type; answer ignored");
                    continue;
                }
            };
            let success = match status.as_deref() {
                Some("success") => true,
                Some("failed") => false,
                other => {
                    tracing::warn!(plugin = %plugin, status = ?other, "parse_callback: status must be \"success\" or \"failed\"; ignored");
                    continue;
                }
            };
            if let Some(order) = order.filter(|o| !o.is_empty()) {
                return Some(Mapped {
                    plugin: plugin.to_string(),
                    order,
                    success,
                    price,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
