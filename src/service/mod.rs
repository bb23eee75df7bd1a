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

mod reload;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreKind};
use crate::engine::Engine;
use crate::engine::events::{Event, EventKind};
use crate::ledger::store::Store;
use crate::ledger::{Ledger, OrderState};
use crate::plugins::{Host, LuaHooks};
use crate::systemd::Notifier;
pub use reload::Reloader;
use reload::load_plugins;

/// Written to the state folder while the daemon runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DaemonFile {
    /// The daemon's process id.
    pub pid: u32,
    /// Where the admin API listens.
    pub admin: String,
    /// Where callbacks are received.
    pub callbacks: String,
}

/// The path of `daemon.json` for a state folder.
pub(crate) fn daemon_file(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.json")
}

/// Opens the configured store: sled in `state_dir`, or this node's view
/// of a shared PostgreSQL ledger (migrated, and this node's lease taken).
async fn open_store(
    config: &Config,
    mode: crate::ledger::OpenMode,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.daemon.store {
        StoreKind::Sled => Arc::new(Ledger::open_with(&config.daemon.state_dir, mode)?),
        StoreKind::Postgres {
            url,
            node,
            lease,
            pool_size,
        } => {
            let pg = crate::ledger::pg::PgConfig {
                url: url.expose().to_owned(),
                node: node.clone(),
                lease: *lease,
                pool_size: *pool_size,
            };
            Arc::new(
                crate::ledger::pg::PgStore::open(&pg)
                    .await
                    .with_context(|| format!("cannot open the PostgreSQL ledger as node {node}"))?,
            )
        }
    })
}

/// Emits what recovery changed: `unknown` orders raise `order_unknown`.
async fn announce_recovered(
    engine: &Arc<Engine>,
    orders: Vec<crate::ledger::Order>,
    now: i64,
    how: &str,
) {
    for o in orders {
        let kind = if o.state == OrderState::Unknown {
            EventKind::OrderUnknown
        } else {
            EventKind::RechargeResult
        };
        let detail = format!("{how}: {} ({})", o.state, o.last_why());
        engine.emit(Event::new(kind, now, detail).order(&o)).await;
    }
}

/// On a shared store: every few seconds, takes over what dead nodes left
/// in flight (`sent` becomes `unknown`, `planned` retryable) and says so.
fn take_over(engine: Arc<Engine>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = match &engine.runtime().config.daemon.store {
            StoreKind::Sled => return,
            StoreKind::Postgres { lease, .. } => *lease / 3,
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = engine.clock().unix();
            match engine.store().take_over(now).await {
                Ok(taken) => {
                    announce_recovered(&engine, taken, now, "taken over from a node that died")
                        .await
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for orders dead nodes left"),
            }
        }
    })
}

/// The local control socket of a state folder: the admin API with no
/// token, for commands run beside the daemon (`sudo vipd status`).
pub(crate) fn control_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Binds the control socket, owner and group read-write (`0660`): the
/// daemon's user and group, and root. A socket a dead daemon left is
/// replaced; one another daemon answers on is left alone. `None` (with
/// a warning) when it cannot be bound: the TCP admin API still serves.
fn bind_control(state_dir: &Path) -> Option<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = control_socket(state_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        tracing::warn!(socket = %path.display(), "another daemon answers on the control socket; not serving one");
        return None;
    }
    let _ = std::fs::remove_file(&path);
    let bound = tokio::net::UnixListener::bind(&path).and_then(|l| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
        Ok(l)
    });
    match bound {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "cannot serve the control socket; commands beside the daemon use the admin API and its token");
            None
        }
    }
}

/// Writes `daemon.json` whole before it appears: `vipd status` and scripts
/// that poll for it never read a half-written file.
fn write_daemon_file(state_dir: &Path, file: &DaemonFile) -> anyhow::Result<()> {
    let path = daemon_file(state_dir);
    let tmp = path.with_extension("json.partial");
    // A node on a shared store keeps nothing else there: make the folder
    // (sled's store checked and prepared it already).
    crate::ledger::folder::create(state_dir)
        .map_err(|e| anyhow::anyhow!("state folder {}: {e}", state_dir.display()))?;
    std::fs::write(&tmp, serde_json::to_vec_pretty(file)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// Starts the in-process sandbox (`daemon.sandbox: true`) and points every
/// provider at it.
pub(crate) async fn start_sandbox(
    config: &mut Config,
) -> anyhow::Result<crate::sandbox::SandboxHandle> {
    let listen = config.daemon.sandbox_listen;
    let sb = crate::sandbox::start(config, listen)
        .await
        .with_context(|| format!("cannot start the sandbox on {listen}"))?;
    config.point_providers_at(&sb.base_url());
    tracing::info!(url = %sb.base_url(), "sandbox: simulated upstream started; every provider points at it");
    Ok(sb)
}

/// How a run of the daemon ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// `shutdown` resolved: checks in flight finished, the store flushed.
    Stopped,
    /// The store failed for good (writes cannot be made durable, or the
    /// node lost its lease): nothing was waited for, since sled blocks
    /// writers after an I/O error. The caller must exit at once, before
    /// the runtime waits on them; a restart recovers as after a crash.
    StoreFailed(String),
}

/// Runs the daemon until `shutdown` resolves, or its store fails.
pub async fn run(
    mut config: Config,
    dry_run: bool,
    store: crate::ledger::OpenMode,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Ended> {
    let sandbox = if config.daemon.sandbox {
        Some(start_sandbox(&mut config).await?)
    } else {
        None
    };
    let state_dir = config.daemon.state_dir.clone();
    let ledger = open_store(&config, store).await?;

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
    let engine = Engine::new(
        ledger.clone(),
        config,
        LuaHooks::new(plugins),
        dry_run,
        crate::model::clock::system(),
    );
    if !names.is_empty() {
        tracing::info!(plugins = ?names, "plugins loaded");
    }

    // Recovery after the engine exists, so plugins hear about orders a
    // crash left unknown.
    let now = engine.clock().unix();
    let recovered = ledger.recover(now).await?;
    // Orders already `unknown` are announced again: a crash (or, with
    // several nodes, a take-over) between an order's change and its alert
    // would otherwise leave it unannounced for good.
    let fresh: std::collections::HashSet<String> =
        recovered.iter().map(|o| o.key.clone()).collect();
    let still: Vec<_> = ledger
        .orders(Some(OrderState::Unknown))
        .await?
        .into_iter()
        .filter(|o| !fresh.contains(&o.key))
        .collect();
    announce_recovered(&engine, recovered, now, "recovered at start-up").await;
    announce_recovered(&engine, still, now, "still unknown at start-up").await;
    ledger.durable().await.map_err(anyhow::Error::msg)?;

    let notifier = Arc::new(Notifier::from_env());
    let reloader = Arc::new(Reloader {
        host: host.clone(),
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
    // Files are watched before anyone is told where the daemon is: an
    // edit made as soon as it answers is seen.
    let stop = CancellationToken::new();
    let watcher = reloader.clone().watch(stop.clone());
    write_daemon_file(&state_dir, &file)?;
    let control_task = bind_control(&state_dir).map(|listener| {
        tokio::spawn(crate::http::serve::serve(
            listener,
            crate::http::control_router(engine.clone(), reloader.clone()),
            limits,
            "control",
            servers.clone(),
        ))
    });
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

    release_freed_memory();
    notifier.ready(&engine.status_line().await);
    let heartbeat = heartbeat(engine.clone(), notifier.clone(), stop.clone());
    let scheduler = {
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move { engine.run(stop).await })
    };
    let hangups = reloader.clone().on_sighup(stop.clone());
    let pruner = prune_events(engine.clone(), stop.clone());
    let taker = take_over(engine.clone(), stop.clone());
    // No payment without a durable plan: a store that cannot make writes
    // durable (a full disk) stops the daemon, and systemd restarts it
    // (Restart=on-failure) until the cause is cleared.
    let broken: Option<String> = tokio::select! {
        _ = shutdown => None,
        e = ledger.failed() => Some(e),
    };
    if let Some(e) = &broken {
        // A store that fails is a sled store that cannot make writes
        // durable, or a node that lost its lease on a shared store.
        // Not a graceful stop: sled blocks writers after an I/O error
        // (checks in flight would never finish). The caller exits now: a
        // crash, which the ledger is built for: `sent` orders become
        // `unknown`, `planned` ones are retried, nothing is paid twice.
        tracing::error!(error = %e, "the state store cannot make writes durable; exiting so that the service manager restarts vipd once the cause is cleared");
        notifier.stopping();
        return Ok(Ended::StoreFailed(e.clone()));
    }
    notifier.stopping();
    tracing::info!("stopping: no new checks; waiting for checks in flight");
    stop.cancel();
    let _ = scheduler.await;
    let _ = tokio::join!(watcher, hangups, heartbeat, pruner, taker);
    servers.cancel();
    let _ = tokio::join!(admin_task, callback_task);
    if let Some(task) = control_task {
        let _ = task.await;
        let _ = std::fs::remove_file(control_socket(&state_dir));
    }
    let hooks = engine.runtime().hooks.clone();
    hooks.retire();
    if tokio::time::timeout(PLUGIN_GRACE, hooks.finished())
        .await
        .is_err()
    {
        tracing::warn!("plugin handlers still running after {PLUGIN_GRACE:?}; stopping anyway");
    }
    if let Err(e) = ledger.durable().await {
        engine
            .emit(Event::new(
                EventKind::Error,
                engine.clock().unix(),
                format!("final flush failed: {e}"),
            ))
            .await;
    }
    let _ = std::fs::remove_file(daemon_file(&state_dir));
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(Ended::Stopped)
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
pub(crate) fn one_malloc_arena() {
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
                let handle = tokio::runtime::Handle::current();
                if let Ok(line) =
                    tokio::task::spawn_blocking(move || handle.block_on(engine.status_line())).await
                {
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
            let before = engine.clock().unix() - retention.as_secs() as i64;
            let store = engine.store().clone();
            let handle = tokio::runtime::Handle::current();
            match tokio::task::spawn_blocking(move || handle.block_on(store.prune_events(before)))
                .await
            {
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
