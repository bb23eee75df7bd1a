//! One test's world: the real engine, a sled ledger in a throwaway folder
//! (in memory, under `/dev/shm`, where there is one), the in-process
//! sandbox as the vendor, and the callback receiver, all on one
//! current-thread runtime whose clock is paused. Time moves only when
//! every task waits: a day of checks passes as fast as the work in it.
//!
//! The sandbox and the receiver listen on loopback ports of their own;
//! nothing is sent anywhere else. Plugins load as `vipd run` loads them
//! and run as a task of the same runtime, on the same clock; their HTTP
//! requests are answered without being sent (see `Host::simulated`).
//!
//! The paying path's own tests (`tests/paying/`) run on the same world
//! without plugins ([`World::without_plugins`]), their store perhaps a
//! wrapper that fails on cue.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, Hooks, NoHooks};
use crate::ledger::Ledger;
use crate::ledger::store::Store;
use crate::model::TokioClock;
use crate::plugins::{Host, LuaHooks, Plugins};
use crate::sandbox::{self, SandboxHandle};

/// Everything one test runs against.
pub struct World {
    /// The daemon's wall clock (a `clock_step` moves it alone).
    pub clock: Arc<TokioClock>,
    /// The vendor's, which keeps true time.
    pub vendor_clock: Arc<TokioClock>,
    pub sandbox: SandboxHandle,
    pub engine: Arc<Engine>,
    /// The engine's store.
    pub store: Arc<dyn Store>,
    /// The sled ledger under it (the store itself, unless wrapped).
    pub ledger: Arc<Ledger>,
    /// What plugins reach: the ledger's kv, the clock, unsent requests.
    pub host: Arc<Host>,
    /// The plugins of the configuration in force (none in a world
    /// without plugins).
    plugins: std::sync::Mutex<Option<Arc<LuaHooks>>>,
    /// Unix seconds at the start.
    pub start: i64,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The ledger's folder; removed when the world is dropped.
    _dir: tempfile::TempDir,
}

/// A folder in memory when the machine has one (`/dev/shm`), else in the
/// temporary folder: a simulation's fsyncs cost nothing there.
fn scratch() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("vipd-test-")
            .tempdir_in(shm)
        {
            return Ok(dir);
        }
    }
    tempfile::Builder::new().prefix("vipd-test-").tempdir()
}

impl World {
    /// Starts the vendor, the ledger and the engine for `config` at wall
    /// time `start`, with the configuration's plugins. Must run on a
    /// runtime whose clock is paused.
    pub async fn start(config: Config, start: i64) -> anyhow::Result<World> {
        World::assemble(config, start, |ledger| ledger, true).await
    }

    /// [`World::start`] with no plugins (the engine's hooks do nothing),
    /// the engine's store being what `store` makes of the sled ledger.
    pub async fn without_plugins(
        config: Config,
        start: i64,
        store: impl FnOnce(Arc<Ledger>) -> Arc<dyn Store>,
    ) -> anyhow::Result<World> {
        World::assemble(config, start, store, false).await
    }

    async fn assemble(
        mut config: Config,
        start: i64,
        store: impl FnOnce(Arc<Ledger>) -> Arc<dyn Store>,
        with_plugins: bool,
    ) -> anyhow::Result<World> {
        let dir = scratch()?;
        let clock = TokioClock::new(start);
        let vendor_clock = TokioClock::new(start);
        let sandbox =
            sandbox::start_with_clock(&config, "127.0.0.1:0".parse()?, vendor_clock.clone())
                .await?;
        let callbacks = TcpListener::bind("127.0.0.1:0").await?;
        place(&mut config, &sandbox, &callbacks, dir.path())?;
        let ledger = Ledger::open(&config.daemon.state_dir)?.with_clock(clock.clone());
        // Paused time must not jump ahead while the disk syncs.
        ledger.wait_for_disk_as_work();
        let ledger = Arc::new(ledger);
        let store = store(ledger.clone());
        let dry_run = config.daemon.dry_run;
        let config = Arc::new(config);
        let host = Host::simulated(store.clone(), clock.clone());
        let plugins = match with_plugins {
            true => Some(LuaHooks::new(Plugins::load(&config, host.clone())?)),
            false => None,
        };
        let hooks: Arc<dyn Hooks> = match &plugins {
            Some(p) => p.clone(),
            None => Arc::new(NoHooks),
        };
        let engine = Engine::new(store.clone(), config, hooks, dry_run, clock.clone());
        let stop = CancellationToken::new();
        let router = crate::http::callback_router(engine.clone());
        let served = stop.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(callbacks, router)
                .with_graceful_shutdown(async move { served.cancelled().await })
                .await;
        });
        let scheduler = {
            let (engine, stop) = (engine.clone(), stop.clone());
            tokio::spawn(async move { engine.run(stop).await })
        };
        Ok(World {
            clock,
            vendor_clock,
            sandbox,
            engine,
            store,
            ledger,
            host,
            plugins: std::sync::Mutex::new(plugins),
            start,
            stop,
            tasks: vec![server, scheduler],
            _dir: dir,
        })
    }

    /// Swaps in `config`, as a reload of the daemon does.
    pub fn reload(&self, mut config: Config) -> anyhow::Result<()> {
        let was = self.engine.runtime();
        config.daemon.state_dir = was.config.daemon.state_dir.clone();
        config.daemon.callback_listen = was.config.daemon.callback_listen;
        config.daemon.public_url = None;
        config.point_providers_at(&self.sandbox.base_url());
        let config = Arc::new(config);
        let plugins = LuaHooks::new(Plugins::load(&config, self.host.clone())?);
        *self.plugins.lock().unwrap_or_else(|p| p.into_inner()) = Some(plugins.clone());
        self.engine.reload(config, plugins);
        Ok(())
    }

    /// Waits until the plugins have handled every event fired so far.
    pub(crate) async fn plugins_settled(&self) {
        let plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.plugins().clone());
        if let Some(plugins) = plugins {
            plugins.settled().await;
        }
    }

    /// The vendor's time now: the true time.
    pub fn now(&self) -> i64 {
        use crate::model::Clock;
        self.vendor_clock.unix()
    }

    /// Stops the engine, the receiver and the vendor.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let plugins = self.plugins.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(plugins) = plugins {
            Hooks::retire(&*plugins);
            plugins.plugins().wait().await;
        }
        self.sandbox.shutdown().await;
    }
}

/// Points `config` at the world's vendor, receiver and ledger folder.
fn place(
    config: &mut Config,
    sandbox: &SandboxHandle,
    callbacks: &TcpListener,
    dir: &Path,
) -> anyhow::Result<()> {
    config.point_providers_at(&sandbox.base_url());
    config.daemon.callback_listen = callbacks.local_addr()?;
    config.daemon.public_url = None;
    config.daemon.state_dir = dir.join("state");
    Ok(())
}
