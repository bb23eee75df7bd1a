//! Lua plugins (README "Lua plugins"): every `*.lua` file in `scripts_dir`, loaded in
//! name order into one sandboxed Lua 5.4 state per configuration
//! generation.
//!
//! | file | owns |
//! |---|---|
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
pub mod pattern;
pub mod types;

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

use crate::config::{Check, Config, Provider};
use crate::engine::Engine;
use crate::engine::events::{Event, EventKind};
use crate::ledger::Ledger;
use crate::ledger::kv::KvQuota;
use crate::upstream::Signer;
use limits::{Budget, Limit, Limited};

/// What plugins reach outside Lua. Shared by every generation.
pub struct Host {
    engine: OnceLock<Weak<Engine>>,
    /// The daemon's runtime: host I/O runs there, not on the Lua thread.
    main: Option<tokio::runtime::Handle>,
    ledger: Option<Arc<Ledger>>,
    /// For destinations the operator allowed in `plugins.http_allow`.
    http: reqwest::Client,
    /// For every other destination: refuses loopback and the like at
    /// resolution (see `upstream::guard`).
    guarded: reqwest::Client,
    /// Handler counters, for status and metrics.
    pub stats: HookStats,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// A host over `ledger` (for `vipd.kv`); `None` for `vipd check`.
    pub fn new(ledger: Option<Arc<Ledger>>) -> Arc<Host> {
        Arc::new(Host {
            engine: OnceLock::new(),
            main: tokio::runtime::Handle::try_current().ok(),
            ledger,
            http: crate::upstream::http_client(),
            guarded: crate::upstream::guard::plugin_http_client(),
            stats: HookStats::default(),
        })
    }

    /// Connects `vipd.vip_info` and `vipd.recharge` to the engine.
    pub fn attach(&self, engine: &Arc<Engine>) {
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
    pub fn snapshot(&self) -> BTreeMap<String, PluginCounts> {
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

    fn ledger(&self, what: &str) -> mlua::Result<&Arc<Ledger>> {
        self.doing_io(what)?;
        self.host
            .ledger
            .as_ref()
            .ok_or_else(|| mlua::Error::RuntimeError(format!("{what}: no state store here")))
    }
}

/// A plugin that failed to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// The script.
    pub file: PathBuf,
    /// The line, when Lua named one.
    pub line: Option<usize>,
    /// What went wrong (with the traceback when there is one).
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every plugin that failed to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

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
    stop: CancellationToken,
    /// Cancelled when the Lua thread has finished all its work.
    finished: CancellationToken,
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

/// The plugin files of `dir`, in name order; none when it does not exist.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let path = e?.path();
                // `*.d.lua` are LuaLS declaration files (`vipd lua-types`),
                // never plugins.
                let declaration = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(".d.lua"));
                if path.extension().is_some_and(|x| x == "lua") && !declaration && path.is_file() {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    files.sort();
    Ok(files)
}

/// The line Lua names in `message` for chunk `chunk` (`notify.lua:12: …`).
fn line_in(message: &str, chunk: &str) -> Option<usize> {
    let rest = message.split(&format!("{chunk}:")).nth(1)?;
    rest.split(':').next()?.trim().parse().ok()
}

/// The configuration as plugins see it (`vipd.config`): names, tags,
/// rules, products; no secrets, tokens or openids. Each top-level key is
/// turned into Lua only when a plugin first reads it: with 10,000 accounts
/// `accounts` and the rules' account lists are a few MB of Lua tables,
/// which a plugin that never looks should not cost.
const CONFIG_KEYS: &[&str] = &[
    "timezone",
    "dry_run",
    "accounts",
    "rules",
    "products",
    "providers",
];

#[derive(Serialize)]
struct AccountView<'a> {
    name: &'a str,
    qq_number: &'a str,
    tags: &'a [String],
    provider: &'a str,
}

#[derive(Serialize)]
struct RuleView<'a> {
    name: &'a str,
    membership: &'static str,
    product: &'a str,
    accounts: Vec<&'a str>,
    renew_before: u64,
    per_day: Option<f64>,
    per_month: Option<f64>,
}

#[derive(Serialize)]
struct ProductView<'a> {
    provider: &'a str,
    extends: &'static str,
    adds: u64,
    max_price: f64,
}

/// The value of `vipd.config[key]`, built from `config`.
fn config_part(lua: &Lua, config: &Config, key: &str) -> mlua::Result<Value> {
    match key {
        "timezone" => api::lua_value(lua, &config.daemon.timezone.name()),
        "dry_run" => Ok(Value::Boolean(config.daemon.dry_run)),
        "accounts" => {
            let accounts: Vec<_> = config
                .accounts
                .iter()
                .map(|a| AccountView {
                    name: &a.name,
                    qq_number: &a.qq_number,
                    tags: &a.tags,
                    provider: &a.provider,
                })
                .collect();
            api::lua_value(lua, &accounts)
        }
        "rules" => {
            let rules: Vec<_> = config
                .rules
                .iter()
                .map(|r| RuleView {
                    name: &r.name,
                    membership: r.membership.as_str(),
                    product: &r.product,
                    accounts: r.accounts.iter().map(|a| &**a).collect(),
                    renew_before: r.renew_before.as_secs(),
                    per_day: r.budget.per_day.map(|f| f.as_yuan_f64()),
                    per_month: r.budget.per_month.map(|f| f.as_yuan_f64()),
                })
                .collect();
            api::lua_value(lua, &rules)
        }
        "products" => {
            let products: BTreeMap<_, _> = config
                .products
                .iter()
                .map(|(n, p)| {
                    let view = ProductView {
                        provider: &p.provider,
                        extends: p.extends.as_str(),
                        adds: p.adds.as_secs(),
                        max_price: p.max_price.as_yuan_f64(),
                    };
                    (n.as_str(), view)
                })
                .collect();
            api::lua_value(lua, &products)
        }
        "providers" => {
            let providers: BTreeMap<_, _> = config
                .providers
                .iter()
                .map(|(n, p)| {
                    let kind = match p {
                        Provider::QqConnect(_) => "qq_connect",
                        Provider::Recharge(_) => "recharge",
                    };
                    (n.as_str(), kind)
                })
                .collect();
            api::lua_value(lua, &providers)
        }
        _ => Ok(Value::Nil),
    }
}

/// `vipd.config`: a read-only view whose top-level keys are built by
/// [`config_part`] on first access (the view holds the generation's
/// `Arc<Config>`, so it copies nothing up front).
fn config_view(lua: &Lua, freeze: &Function, config: &Arc<Config>) -> mlua::Result<Table> {
    let keys = lua.create_table()?;
    for key in CONFIG_KEYS {
        keys.set(*key, true)?;
    }
    let config = config.clone();
    let part = lua.create_function(move |lua, key: String| config_part(lua, &config, &key))?;
    freeze.call((keys, "vipd.config", part))
}

impl Plugins {
    /// Loads every plugin of `config` into a new state. Loading runs each
    /// script's top level (registrations) under the per-call limits; host
    /// functions with side effects refuse to run then.
    pub fn load(config: &Arc<Config>, host: Arc<Host>) -> Result<Plugins, LoadErrors> {
        let dir = &config.daemon.scripts_dir;
        let fail = |file: &Path, message: String| {
            LoadErrors(vec![LoadError {
                file: file.to_owned(),
                line: None,
                message,
            }])
        };
        let files =
            plugin_files(dir).map_err(|e| fail(dir, format!("cannot list scripts_dir: {e}")))?;
        let settings = config.plugins.clone();
        let (lua, helpers) = env::new_state(settings.memory)
            .map_err(|e| fail(dir, format!("cannot create the Lua state: {e}")))?;
        let signers = config
            .providers
            .iter()
            .filter_map(|(n, p)| match p {
                Provider::Recharge(r) => Some((
                    n.clone(),
                    settings.sign_with.contains(n).then(|| r.signer()),
                )),
                Provider::QqConnect(_) => None,
            })
            .collect();
        let shared = Arc::new(Shared {
            loading: AtomicBool::new(true),
            registry: Mutex::new(Registry::default()),
            signers,
            destinations: crate::upstream::guard::Destinations {
                allow: settings.http_allow.clone(),
                own: vec![config.daemon.admin_listen, config.daemon.callback_listen],
            },
        });
        let scripts_dir: Arc<Path> = Arc::from(dir.as_path());
        let freeze: Function = helpers
            .get("freeze")
            .map_err(|e| fail(dir, e.to_string()))?;
        let view = config_view(&lua, &freeze, config)
            .map_err(|e| fail(dir, format!("cannot build vipd.config: {e}")))?;
        let mut errors = Vec::new();
        let mut names = Vec::new();
        for file in &files {
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = file_name.trim_end_matches(".lua").to_owned();
            let shown = dir.join(&file_name);
            let result = (|| -> mlua::Result<()> {
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(mlua::Error::RuntimeError(
                        "a plugin's file name is letters, digits, _ and - (it names its kv namespace and settings)".into(),
                    ));
                }
                let text = std::fs::read_to_string(file)
                    .map_err(|e| mlua::Error::RuntimeError(format!("cannot read: {e}")))?;
                let ctx = Arc::new(Ctx {
                    plugin: Arc::from(name.as_str()),
                    kv_quota: KvQuota::of_bytes(settings.kv_bytes),
                    host: host.clone(),
                    shared: shared.clone(),
                });
                let plugin_settings = settings
                    .settings
                    .get(&name)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                let plugin_settings = match plugin_settings {
                    serde_json::Value::Null => Value::Table(lua.create_table()?),
                    v => api::lua_value(&lua, &v)?,
                };
                let plugin_settings: Value = freeze.call((plugin_settings, "vipd.settings"))?;
                let vipd = api::build(&lua, &ctx, &view, plugin_settings)?;
                let slot = lua.create_table()?;
                let require = env::require_fn(&lua, scripts_dir.clone(), slot.clone())?;
                let env = env::plugin_env(&lua, &helpers, vipd, require)?;
                slot.set("env", env.clone())?;
                let budget = Budget::new(settings.instructions, settings.timeout);
                let out = limits::with_budget(&budget, || {
                    lua.load(text)
                        .set_name(format!("@{file_name}"))
                        .set_mode(ChunkMode::Text)
                        .set_environment(env)
                        .exec()
                });
                out.map_err(|e| match (budget.hit(), &e) {
                    (Some(limit), _) => {
                        mlua::Error::RuntimeError(budget.message(limit, settings.memory))
                    }
                    (None, mlua::Error::MemoryError(_)) => {
                        mlua::Error::RuntimeError(budget.message(Limit::Memory, settings.memory))
                    }
                    _ => e,
                })
            })();
            match result {
                Ok(()) => names.push(name),
                Err(e) => {
                    let message = describe_error(&e);
                    let line = line_in(&message, &file_name);
                    // Shown once, as `scripts/x.lua:3:`, not again as
                    // Lua's own `x.lua:3:` prefix.
                    let message = match line {
                        Some(l) => message
                            .strip_prefix(&format!("{file_name}:{l}: "))
                            .map(str::to_owned)
                            .unwrap_or(message),
                        None => message,
                    };
                    errors.push(LoadError {
                        file: shown,
                        line,
                        message,
                    });
                }
            }
        }
        shared.loading.store(false, Ordering::Relaxed);
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let registry = std::mem::take(&mut *shared.registry());
        let mut handlers: HashMap<EventKind, Vec<(Arc<str>, Function)>> = HashMap::new();
        for (kind, plugin, f) in registry.handlers {
            handlers.entry(kind).or_default().push((plugin, f));
        }
        let _ = lua.gc_collect();
        Ok(Plugins {
            lua,
            handlers,
            jobs: registry.jobs,
            names,
            settings,
            timezone: config.daemon.timezone,
            host,
            queue: OnceLock::new(),
            stop: CancellationToken::new(),
            finished: CancellationToken::new(),
        })
    }

    /// The loaded plugins, in load order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Bytes the Lua state uses now.
    pub fn memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// Handlers registered for `kind`.
    pub fn handler_count(&self, kind: EventKind) -> usize {
        self.handlers.get(&kind).map_or(0, Vec::len)
    }

    /// `(plugin, schedule)` of every job.
    pub fn jobs(&self) -> Vec<(String, String)> {
        self.jobs
            .iter()
            .map(|j| (j.plugin.to_string(), j.spec.clone()))
            .collect()
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

    /// Asks the `before_recharge` handlers; the first veto wins. A handler
    /// that fails does not veto (it is logged and counted): a broken
    /// script must not let memberships lapse.
    pub async fn veto(&self, ev: &Event) -> Option<Veto> {
        for (plugin, func) in self.handlers.get(&EventKind::BeforeRecharge)? {
            let arg = self.payload(ev)?;
            let reason = match self.call(plugin, ev.kind.as_str(), func, arg).await {
                Some(Value::Boolean(false)) => Some(format!("vetoed by plugin {plugin}")),
                Some(Value::Table(t)) => match t.get::<Value>("skip") {
                    Ok(Value::String(s)) => Some(s.to_string_lossy()),
                    Ok(Value::Nil) | Ok(Value::Boolean(false)) => None,
                    Ok(_) => Some(format!("vetoed by plugin {plugin}")),
                    Err(_) => None,
                },
                _ => None,
            };
            if let Some(reason) = reason {
                return Some(Veto {
                    plugin: plugin.to_string(),
                    reason,
                });
            }
        }
        None
    }

    /// Asks the `parse_callback` handlers to map a callback; the first
    /// answer with `order` and `status` wins.
    pub async fn parse_callback(&self, ev: &Event) -> Option<Mapped> {
        for (plugin, func) in self.handlers.get(&EventKind::ParseCallback)? {
            let arg = self.payload(ev)?;
            let Some(Value::Table(t)) = self.call(plugin, ev.kind.as_str(), func, arg).await else {
                continue;
            };
            let order: Option<String> = t.get("order").ok().flatten();
            let status: Option<String> = t.get("status").ok().flatten();
            let price: Option<f64> = t.get("price").ok().flatten();
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

    /// Starts the Lua thread and the `vipd.every` jobs. Until this runs
    /// (and in `vipd check`, where it never does) nothing is delivered.
    pub fn start(self: &Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LuaTask>();
        if self.queue.set(tx).is_err() {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("vipd-lua".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the Lua thread; plugins are not run");
                        me.finished.cancel();
                        return;
                    }
                };
                let tasks = TaskTracker::new();
                runtime.block_on(async {
                    me.spawn_jobs(&tasks);
                    loop {
                        tokio::select! {
                            _ = me.stop.cancelled() => break,
                            task = rx.recv() => match task {
                                Some(task) => { tasks.spawn(task()); }
                                None => break,
                            },
                        }
                    }
                    // Work queued before the stop still runs (each call is
                    // bounded by the time limit).
                    while let Ok(task) = rx.try_recv() {
                        tasks.spawn(task());
                    }
                    tasks.close();
                    tasks.wait().await;
                });
                me.finished.cancel();
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the Lua thread; plugins are not run");
            self.finished.cancel();
        }
    }

    /// Queues `f` on the Lua thread.
    fn on_lua_thread<F>(self: &Arc<Self>, f: impl FnOnce(Arc<Plugins>) -> F + Send + 'static)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(queue) = self.queue.get() else {
            return;
        };
        let me = self.clone();
        let _ = queue.send(Box::new(move || Box::pin(f(me))));
    }

    /// Runs `f` on the Lua thread and waits for its answer, at most the
    /// time limit and a second: `None` when it did not answer.
    async fn ask<T, F>(
        self: &Arc<Self>,
        f: impl FnOnce(Arc<Plugins>) -> F + Send + 'static,
    ) -> Option<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Option<T>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.on_lua_thread(move |me| async move {
            let _ = tx.send(f(me).await);
        });
        let bound = self.settings.timeout + std::time::Duration::from_secs(1);
        match tokio::time::timeout(bound, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::warn!("plugins did not answer within {bound:?}; going on without them");
                None
            }
        }
    }

    /// Delivers `ev` on the Lua thread: nothing waits for the plugins.
    pub fn notify(self: &Arc<Self>, ev: Event) {
        if !self.handlers.contains_key(&ev.kind) {
            return;
        }
        self.on_lua_thread(move |me| async move { me.deliver(&ev).await });
    }

    /// Asks the `before_recharge` handlers on the Lua thread (see
    /// [`Plugins::veto`]).
    pub async fn ask_veto(self: &Arc<Self>, ev: Event) -> Option<Veto> {
        if !self.handlers.contains_key(&ev.kind) {
            return None;
        }
        self.ask(move |me| async move { me.veto(&ev).await }).await
    }

    /// Asks the `parse_callback` handlers on the Lua thread (see
    /// [`Plugins::parse_callback`]).
    pub async fn ask_parse_callback(self: &Arc<Self>, ev: Event) -> Option<Mapped> {
        if !self.handlers.contains_key(&ev.kind) {
            return None;
        }
        self.ask(move |me| async move { me.parse_callback(&ev).await })
            .await
    }

    fn spawn_jobs(self: &Arc<Self>, tasks: &TaskTracker) {
        for (i, job) in self.jobs.iter().enumerate() {
            let me = self.clone();
            let stop = self.stop.clone();
            let (plugin, spec) = (job.plugin.clone(), job.spec.clone());
            tasks.spawn(async move {
                loop {
                    let now = crate::model::now_unix();
                    let Some(next) = me.jobs[i].schedule.next_after(now, me.timezone) else {
                        tracing::warn!(plugin = %plugin, schedule = spec, "job never runs again");
                        return;
                    };
                    let wait = std::time::Duration::from_secs((next - now).max(1) as u64);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    let what = format!("every {spec}");
                    me.call(&plugin, &what, &me.jobs[i].func, Value::Nil).await;
                }
            });
        }
    }

    /// Stops this generation: jobs end, queued work finishes, the Lua
    /// thread exits (a new generation took over, or the daemon stops).
    pub fn retire(&self) {
        self.stop.cancel();
        if self.queue.get().is_none() {
            self.finished.cancel();
        }
    }

    /// Waits until the Lua thread has finished (after [`Plugins::retire`]).
    pub async fn wait(&self) {
        self.finished.cancelled().await;
    }
}

/// An mlua error as one message: the Lua error text (which starts with
/// `script.lua:LINE:`) and its traceback.
pub fn describe_error(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", describe_error(cause))
        }
        mlua::Error::WithContext { context, cause } => {
            format!("{context}: {}", describe_error(cause))
        }
        mlua::Error::RuntimeError(m) | mlua::Error::SyntaxError { message: m, .. } => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
