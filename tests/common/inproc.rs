//! An in-process world for the paying path: the real sandbox, engine,
//! ledger (sled on disk) and callback router in this test's runtime, with
//! no Lua (`NoHooks`) and a wall clock tied to tokio's ([`TokioClock`]).
//! Under `#[tokio::test(start_paused = true)]` an hour passes in no time,
//! so a test waits for what happens, never for a fixed number of seconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vipd::config::Config;
use vipd::engine::{Engine, NoHooks};
use vipd::ledger::{Ledger, Order};
use vipd::model::{Clock, TokioClock};
use vipd::sandbox::{self, SandboxHandle};

use super::stack::StackConfig;

/// 2027-01-15 00:00:00 UTC: every run starts at the same wall time.
pub const EPOCH: i64 = 1_800_000_000;

/// The sandbox, the engine and its callback listener in this process.
pub struct World {
    pub dir: tempfile::TempDir,
    pub clock: Arc<TokioClock>,
    pub sandbox: SandboxHandle,
    pub engine: Arc<Engine>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl World {
    /// Starts everything for `cfg` and the engine's scheduler.
    pub async fn start(cfg: &StackConfig) -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = TokioClock::new(EPOCH);
        let path = dir.path().join("rules.yaml");
        let text = cfg.render("http://127.0.0.1:1");
        let mut config =
            Config::parse(&text, &path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let sandbox =
            sandbox::start_with_clock(&config, "127.0.0.1:0".parse().unwrap(), clock.clone())
                .await
                .unwrap();
        config.point_providers_at(&sandbox.base_url());
        let callbacks = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.daemon.callback_listen = callbacks.local_addr().unwrap();
        config.daemon.state_dir = dir.path().join("state");
        let ledger = Arc::new(Ledger::open(&config.daemon.state_dir).unwrap());
        let engine = Engine::new(
            ledger,
            Arc::new(config),
            Arc::new(NoHooks),
            false,
            clock.clone(),
        );
        let stop = CancellationToken::new();
        let router = vipd::http::callback_router(engine.clone());
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
        World {
            dir,
            clock,
            sandbox,
            engine,
            stop,
            tasks: vec![server, scheduler],
        }
    }

    /// The ledger's folder.
    pub fn state_dir(&self) -> PathBuf {
        self.engine.runtime().config.daemon.state_dir.clone()
    }

    /// Every order, oldest key first.
    pub fn orders(&self) -> Vec<Order> {
        self.engine.ledger().orders(None).unwrap()
    }

    /// Waits (in tokio's time: paused, it costs nothing) until an order
    /// satisfies `want`, at most `within`; panics with the orders then.
    pub async fn order_where(
        &self,
        what: &str,
        within: Duration,
        want: impl Fn(&Order) -> bool,
    ) -> Order {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(o) = self.orders().into_iter().find(|o| want(o)) {
                return o;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no order where {what} within {within:?}: {:#?}",
                    self.orders()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lets `d` of tokio's time pass with everything running.
    pub async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// The wall time now, as the vendor and the engine see it.
    pub fn now(&self) -> i64 {
        self.clock.unix()
    }

    /// Delivers a callback signed with the test secret to the engine, as
    /// the callback router would; returns the HTTP status and body.
    pub async fn callback(&self, fields: &[(&str, &str)]) -> (u16, String) {
        let fields = super::signed(fields);
        let reply = self.engine.handle_callback("wapi", &fields).await;
        (reply.status, reply.body)
    }

    /// Requests the sandbox has received.
    pub fn vendor_requests(&self) -> usize {
        self.sandbox.orders().len()
    }

    /// Stops the scheduler and the servers.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.sandbox.shutdown().await;
    }
}
