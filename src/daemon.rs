//! `vipd run`: open the store, recover, bind the listeners, run the
//! engine until the shutdown future resolves, then stop in order.
//!
//! Start-up order: sandbox (if configured) → store → recovery → engine →
//! listeners → `daemon.json` (how `status`/`orders`/`plan` find us) →
//! scheduler. Shutdown: stop scheduling, let checks in flight finish
//! (bounded), stop the listeners, make the store durable.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::events::{Event, EventKind};
use crate::engine::{Engine, ReloadReport};
use crate::ledger::{Ledger, OrderState};
use crate::plugins::{Host, Plugins};
use crate::systemd::Notifier;
use crate::upstream::Clock;

/// Written to the state folder while the daemon runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonFile {
    /// The daemon's process id.
    pub pid: u32,
    /// Where the admin API listens.
    pub admin: String,
    /// Where callbacks are received.
    pub callbacks: String,
}

/// The path of `daemon.json` for a state folder.
pub fn daemon_file(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.json")
}

/// Starts the in-process sandbox (`daemon.sandbox: true`) and points every
/// provider at it.
pub async fn start_sandbox(config: &mut Config) -> anyhow::Result<crate::sandbox::SandboxHandle> {
    let listen = config.daemon.sandbox_listen;
    let sb = crate::sandbox::start(config, listen)
        .await
        .with_context(|| format!("cannot start the sandbox on {listen}"))?;
    config.point_providers_at(&sb.base_url());
    tracing::info!(url = %sb.base_url(), "sandbox: simulated upstream started; every provider points at it");
    Ok(sb)
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    mut config: Config,
    dry_run: bool,
    store: crate::ledger::OpenMode,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let sandbox = if config.daemon.sandbox {
        Some(start_sandbox(&mut config).await?)
    } else {
        None
    };
    let state_dir = config.daemon.state_dir.clone();
    let ledger = Arc::new(Ledger::open_with(&state_dir, store)?);

    let admin = TcpListener::bind(config.daemon.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on admin_listen {}",
                config.daemon.admin_listen
            )
        })?;
    let callbacks = TcpListener::bind(config.daemon.callback_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on callback_listen {}",
                config.daemon.callback_listen
            )
        })?;
    let (admin_addr, callback_addr) = (admin.local_addr()?, callbacks.local_addr()?);
    // The bound addresses (port 0 becomes a real port): plugins must not
    // reach them, and the callback URL names them.
    config.daemon.callback_listen = callback_addr;
    config.daemon.admin_listen = admin_addr;
    let dry_run = dry_run || config.daemon.dry_run;
    let host = Host::new(Some(ledger.clone()));
    let config = Arc::new(config);
    let plugins = load_plugins(&config, &host).await?;
    let names = plugins.names().to_vec();
    let engine = Engine::new(ledger.clone(), config, plugins, host, dry_run);
    if !names.is_empty() {
        tracing::info!(plugins = ?names, "plugins loaded");
    }

    // Recovery after the engine exists, so plugins hear about orders a
    // crash left unknown.
    let now = Clock::system_unix();
    for o in ledger.recover(now)? {
        let kind = if o.state == OrderState::Unknown {
            EventKind::OrderUnknown
        } else {
            EventKind::RechargeResult
        };
        let detail = format!("recovered at start-up: {} ({})", o.state, o.last_why());
        engine.emit(Event::new(kind, now, detail).order(&o));
    }
    ledger.durable().await.map_err(anyhow::Error::msg)?;

    let notifier = Arc::new(Notifier::from_env());
    let reloader = Arc::new(Reloader {
        engine: engine.clone(),
        notifier: notifier.clone(),
        sandbox_url: sandbox.as_ref().map(|sb| sb.base_url()),
        callback_listen: callback_addr,
        admin_listen: admin_addr,
        lock: tokio::sync::Mutex::new(()),
    });

    let servers = CancellationToken::new();
    let nofile = crate::http::serve::raise_file_limit();
    let limits = crate::http::serve::Limits::for_file_limit(nofile);
    tracing::debug!(
        nofile,
        max_connections = limits.max_connections,
        "listener limits"
    );
    let serve = |listener: TcpListener, router: axum::Router, name: &'static str| {
        tokio::spawn(crate::http::serve::serve(
            listener,
            router,
            limits,
            name,
            servers.clone(),
        ))
    };
    let admin_task = serve(
        admin,
        crate::http::admin_router(engine.clone(), reloader.clone()),
        "admin",
    );
    let callback_task = serve(
        callbacks,
        crate::http::callback_router(engine.clone()),
        "callback",
    );

    let file = DaemonFile {
        pid: std::process::id(),
        admin: format!("http://{admin_addr}"),
        callbacks: format!("http://{callback_addr}"),
    };
    std::fs::write(daemon_file(&state_dir), serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("cannot write {}", daemon_file(&state_dir).display()))?;
    let rt = engine.runtime();
    tracing::info!(
        admin = %file.admin,
        callbacks = %file.callbacks,
        accounts = rt.config.accounts.len(),
        rules = rt.config.rules.len(),
        dry_run,
        "vipd ready"
    );
    drop(rt);

    let stop = CancellationToken::new();
    release_freed_memory();
    notifier.ready(&engine.status_line());
    let heartbeat = heartbeat(engine.clone(), notifier.clone(), stop.clone());
    let scheduler = {
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move { engine.run(stop).await })
    };
    let watcher = reloader.clone().watch(stop.clone());
    let hangups = reloader.clone().on_sighup(stop.clone());
    let pruner = prune_events(engine.clone(), stop.clone());
    // No payment without a durable plan: a store that cannot make writes
    // durable (a full disk) stops the daemon, and systemd restarts it
    // (Restart=on-failure) until the cause is cleared.
    let broken: Option<String> = tokio::select! {
        _ = shutdown => None,
        e = ledger.failed() => Some(e),
    };
    if let Some(e) = &broken {
        // Not a graceful stop: sled blocks writers after an I/O error
        // (checks in flight would never finish). Exiting now is a crash,
        // which the ledger is built for: `sent` orders become `unknown`,
        // `planned` ones are retried, nothing is paid twice.
        tracing::error!(error = %e, "the state store cannot make writes durable; exiting so that the service manager restarts vipd once the cause is cleared");
        notifier.stopping();
        std::process::exit(1);
    }
    notifier.stopping();
    tracing::info!("stopping: no new checks; waiting for checks in flight");
    stop.cancel();
    let _ = scheduler.await;
    let _ = tokio::join!(watcher, hangups, heartbeat, pruner);
    servers.cancel();
    let _ = tokio::join!(admin_task, callback_task);
    let plugins = engine.runtime().plugins.clone();
    plugins.retire();
    if tokio::time::timeout(PLUGIN_GRACE, plugins.wait())
        .await
        .is_err()
    {
        tracing::warn!("plugin handlers still running after {PLUGIN_GRACE:?}; stopping anyway");
    }
    if let Err(e) = ledger.durable().await {
        engine.emit(Event::new(
            EventKind::Error,
            Clock::system_unix(),
            format!("final flush failed: {e}"),
        ));
    }
    let _ = std::fs::remove_file(daemon_file(&state_dir));
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Gives the heap that start-up freed (parsing a large `rules.yaml`
/// leaves tens of MB of freed blocks) back to the system: glibc keeps it
/// otherwise, and an idle daemon's RSS is what an operator sees.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps every thread on glibc's main heap (unless `MALLOC_ARENA_MAX` says
/// otherwise). By default glibc gives each thread that meets contention
/// its own arena, up to eight per core; the workers, sled's threads and
/// the Lua thread then each hold a partly used heap, about 2.5 MB of idle
/// RSS at 10,000 accounts (BENCHMARKS.md). The per-thread caches (tcache)
/// still serve most small allocations without the lock, and this daemon
/// waits on the network, not on malloc. Called before any thread starts.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; no thread other
        // than this one exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// How often `STATUS=` is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Pings the systemd watchdog at half of `WATCHDOG_USEC`, refreshes
/// `STATUS=` and returns freed heap to the system every 10 s, until `stop`.
/// The pings come from the daemon's own runtime, so a stalled runtime
/// stops them and systemd restarts the service.
fn heartbeat(
    engine: Arc<Engine>,
    notifier: Arc<Notifier>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let watchdog = crate::systemd::watchdog_interval();
        let every = watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if watchdog.is_some() {
                notifier.watchdog();
            }
            if last_status.elapsed() >= STATUS_EVERY {
                last_status = std::time::Instant::now();
                release_freed_memory();
                if !notifier.is_active() {
                    continue;
                }
                let engine = engine.clone();
                if let Ok(line) = tokio::task::spawn_blocking(move || engine.status_line()).await {
                    notifier.status(&line);
                }
            }
        }
    })
}

/// How often events past `daemon.event_retention` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Prunes events older than `daemon.event_retention` (as configured now,
/// so a reload applies) at start and every [`PRUNE_EVERY`], until `stop`.
fn prune_events(engine: Arc<Engine>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let retention = engine.runtime().config.daemon.event_retention;
            let before = Clock::system_unix() - retention.as_secs() as i64;
            let ledger = engine.ledger().clone();
            match tokio::task::spawn_blocking(move || ledger.prune_events(before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(
                    pruned = n,
                    "events recorded before {} pruned (daemon.event_retention {})",
                    crate::timefmt::utc(before),
                    crate::units::HumanDuration(retention)
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not prune old events"),
                Err(e) => tracing::warn!(error = %e, "event pruning panicked"),
            }
        }
    })
}

/// How long shutdown waits for plugin handlers (each is also bounded by
/// its own time limit).
const PLUGIN_GRACE: Duration = Duration::from_secs(10);

/// How long file changes settle before a reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads the plugins of `config` off the async threads: a script's top
/// level runs under the limits, up to the time limit.
async fn load_plugins(config: &Arc<Config>, host: &Arc<Host>) -> anyhow::Result<Plugins> {
    let (config, host) = (config.clone(), host.clone());
    tokio::task::spawn_blocking(move || Plugins::load(&config, host))
        .await
        .context("plugin loading panicked")?
        .map_err(anyhow::Error::new)
}

/// Builds new configurations and plugins beside the running ones and
/// swaps them in when they are valid (README "Running it as a service", Reload).
pub struct Reloader {
    engine: Arc<Engine>,
    /// Tells systemd about reloads.
    notifier: Arc<Notifier>,
    /// The in-process sandbox's address (it keeps running across reloads).
    sandbox_url: Option<String>,
    /// The bound callback address (listeners are not rebound by a reload).
    callback_listen: std::net::SocketAddr,
    /// The bound admin address, for the same reason.
    admin_listen: std::net::SocketAddr,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reads the configuration file and the scripts again; swaps them in
    /// only if all of it is valid. Returns the generation in force.
    pub async fn reload(&self, trigger: &str) -> Result<u64, String> {
        let _one = self.lock.lock().await;
        self.notifier.reloading();
        let current = self.engine.runtime();
        let path = current.config.path.clone();
        let result = self.candidate(&path, &current.config).await;
        let (generation, error) = match result {
            Ok((config, plugins)) => {
                let names = plugins.names().to_vec();
                let generation = self.engine.reload(config, plugins);
                tracing::info!(trigger, generation, plugins = ?names, "configuration reloaded");
                (generation, None)
            }
            Err(e) => {
                // One record per cause, each with its level: a journal
                // splits a multi-line message into records without one.
                for cause in e.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::error!(
                        trigger,
                        generation = current.generation,
                        "reload refused; generation {} stays in force: {cause}",
                        current.generation
                    );
                }
                (current.generation, Some(e))
            }
        };
        self.engine.note_reload(ReloadReport {
            at: Clock::system_unix(),
            trigger: trigger.to_owned(),
            generation,
            error: error.clone(),
        });
        self.notifier.ready(&self.engine.status_line());
        match error {
            None => Ok(generation),
            Some(e) => Err(e),
        }
    }

    async fn candidate(
        &self,
        path: &Path,
        current: &Config,
    ) -> Result<(Arc<Config>, Plugins), String> {
        let mut config = Config::load(path).map_err(|e| e.to_string())?;
        if let Some(url) = &self.sandbox_url {
            config.point_providers_at(url);
        }
        for (what, old, new) in [
            (
                "daemon.admin_listen",
                current.daemon.admin_listen.to_string(),
                config.daemon.admin_listen.to_string(),
            ),
            (
                "daemon.state_dir",
                current.daemon.state_dir.display().to_string(),
                config.daemon.state_dir.display().to_string(),
            ),
            (
                "daemon.sandbox",
                current.daemon.sandbox.to_string(),
                config.daemon.sandbox.to_string(),
            ),
        ] {
            if old != new {
                tracing::warn!(
                    "{}: {what} changed ({old} → {new}); that takes effect at the next restart",
                    path.display()
                );
            }
        }
        if config.daemon.admin_token.is_none() && !self.admin_listen.ip().is_loopback() {
            return Err(format!(
                "{}: daemon.admin_token: removed, but the admin API listens on {}, which other hosts reach: keep a token (or restart on a loopback admin_listen)",
                path.display(),
                self.admin_listen
            ));
        }
        config.daemon.admin_listen = current.daemon.admin_listen;
        config.daemon.state_dir = current.daemon.state_dir.clone();
        config.daemon.sandbox = current.daemon.sandbox;
        config.daemon.callback_listen = self.callback_listen;
        config.daemon.admin_listen = self.admin_listen;
        let config = Arc::new(config);
        load_plugins(&config, self.engine.host())
            .await
            .map_err(|e| e.to_string())
            .map(|plugins| (config, plugins))
    }

    /// Reloads on SIGHUP until `stop`.
    pub fn on_sighup(self: Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload with POST /api/reload");
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hup.recv() => { let _ = self.reload("SIGHUP").await; }
                }
            }
        })
    }

    /// Watches the configuration file's folder and `scripts_dir`; reloads
    /// once changes have settled for [`DEBOUNCE`].
    ///
    /// Only changes count: the watcher also reports files being opened and
    /// closed after reading, and a reload reads the very files it watches,
    /// so counting those made every reload trigger the next one.
    pub fn watch(self: Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        use notify::{EventKind, RecursiveMode, Watcher};
        let rt = self.engine.runtime();
        let config_path = rt.config.path.clone();
        let config_dir = rt.config.base_dir.clone();
        let scripts_dir = rt.config.daemon.scripts_dir.clone();
        drop(rt);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let relevant = {
            let config_path = config_path.clone();
            let scripts_dir = scripts_dir.clone();
            move |p: &Path| {
                p.file_name() == config_path.file_name() && p.parent() == config_path.parent()
                    || p.starts_with(&scripts_dir) && p.extension().is_some_and(|x| x == "lua")
                    || same_file(p, &config_path)
            }
        };
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res {
                let change = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                );
                if change && event.paths.iter().any(|p| relevant(p)) {
                    let _ = tx.send(());
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for file changes; reload with SIGHUP or POST /api/reload");
                return tokio::spawn(async {});
            }
        };
        for (dir, mode) in [
            (&config_dir, RecursiveMode::NonRecursive),
            (&scripts_dir, RecursiveMode::Recursive),
        ] {
            // No scripts folder is no plugins, not a problem worth a
            // warning at every start (create it and reload to add some).
            if !dir.exists() {
                tracing::debug!(dir = %dir.display(), "not watched: the folder does not exist");
                continue;
            }
            if let Err(e) = watcher.watch(dir, mode) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this folder for changes");
            }
        }
        tokio::spawn(async move {
            let _keep = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(()) = rx.recv() => {}
                }
                // Debounce: an editor's save is several events; wait until
                // none has come for DEBOUNCE.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                let _ = self.reload("file change").await;
            }
        })
    }
}

/// Whether two paths name the same file (the watcher reports canonical
/// paths; the configuration may have been named through a symlink).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
