//! An in-process world for the paying path: `vipd test`'s own world (the
//! real sandbox, engine, ledger (sled on disk) and callback router in this
//! test's runtime), with no Lua and a wall clock tied to tokio's.
//! Under `#[tokio::test(start_paused = true)]` an hour passes in no time,
//! so a test waits for what happens, never for a fixed number of seconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vipd::config::Config;
use vipd::ledger::store::Store;
use vipd::ledger::{Ledger, Order};

use super::stack::StackConfig;

/// 2027-01-15 00:00:00 UTC: every run starts at the same wall time.
pub const EPOCH: i64 = 1_800_000_000;

/// `vipd test`'s world (the sandbox, the engine, its sled ledger and
/// callback listener in this process) without plugins, and what the
/// paying path's tests ask of it.
pub struct World {
    world: vipd::simulate::World,
    /// The folder the configuration is read as if from.
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for World {
    type Target = vipd::simulate::World;
    fn deref(&self) -> &Self::Target {
        &self.world
    }
}

impl World {
    /// Starts everything for `cfg` and the engine's scheduler.
    pub async fn start(cfg: &StackConfig) -> World {
        World::start_with(cfg, |ledger| ledger).await
    }

    /// [`World::start`], the engine's store being what `store` makes of
    /// the sled ledger (a wrapper that fails on cue, say). The world reads
    /// the ledger itself.
    pub async fn start_with(
        cfg: &StackConfig,
        store: impl FnOnce(Arc<Ledger>) -> Arc<dyn Store>,
    ) -> World {
        let dir = tempfile::tempdir().unwrap();
        let text = cfg.render("http://127.0.0.1:1");
        let config = Config::parse(&text, &dir.path().join("rules.yaml"))
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let world = vipd::simulate::World::without_plugins(config, EPOCH, store)
            .await
            .unwrap();
        World { world, _dir: dir }
    }

    /// The ledger's folder.
    pub fn state_dir(&self) -> PathBuf {
        self.engine.runtime().config.daemon.state_dir.clone()
    }

    /// Every order, oldest key first.
    pub fn orders(&self) -> Vec<Order> {
        self.ledger.orders(None).unwrap()
    }

    /// Waits (in tokio's time: paused, it costs nothing) until `probe`
    /// gives a value, looking every 100 ms, at most `within`; then panics
    /// naming `what`, with the orders as they are.
    pub async fn until<T>(
        &self,
        what: &str,
        within: Duration,
        mut probe: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("not {what} within {within:?}: {:#?}", self.orders());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an order satisfies `want`; see [`World::until`].
    pub async fn order_where(
        &self,
        what: &str,
        within: Duration,
        want: impl Fn(&Order) -> bool,
    ) -> Order {
        self.until(what, within, async || {
            self.orders().into_iter().find(|o| want(o))
        })
        .await
    }

    /// Lets `d` of tokio's time pass with everything running.
    pub async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Delivers a callback signed with the test secret to the engine, as
    /// the callback router would; returns the HTTP status and body.
    pub async fn callback(&self, fields: &[(&str, &str)]) -> (u16, String) {
        let fields = super::signed(fields);
        let reply = self.engine.handle_callback("wapi", &fields).await;
        (reply.status, reply.body)
    }

    /// Plays the vendor: a signed "success" callback for `order`'s vendor
    /// order, now; the HTTP status the engine answered.
    pub async fn success_callback(&self, order: &Order) -> u16 {
        let vendor_id = order.vendor_orderid.clone().unwrap();
        let t = self.now().to_string();
        let success = [
            ("orderid", vendor_id.as_str()),
            ("status", "success"),
            ("time", t.as_str()),
        ];
        self.callback(&success).await.0
    }

    /// The events of one kind among the latest 20 (those `status` shows).
    pub fn events_of(&self, kind: &str) -> Vec<vipd::ledger::EventRecord> {
        self.ledger
            .events(20)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    /// Billed requests per account, as the vendor counts them.
    pub fn billed(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for o in self.sandbox.orders() {
            if o.billed {
                *out.entry(o.account.clone().unwrap_or_else(|| "?".into()))
                    .or_default() += 1;
            }
        }
        out
    }

    /// Waits until `n` orders have succeeded and been verified; returns
    /// every order then.
    pub async fn settled_and_verified(&self, n: usize, within: Duration) -> Vec<Order> {
        let what = format!("{n} orders succeeded and verified");
        self.until(&what, within, async || {
            let orders = self.orders();
            let done = orders
                .iter()
                .filter(|o| {
                    o.state == vipd::ledger::OrderState::Succeeded
                        && matches!(o.verification, vipd::ledger::Verification::Verified { .. })
                })
                .count();
            (done >= n).then_some(orders)
        })
        .await
    }

    /// The callback listener's URL for `provider`.
    pub fn callback_url(&self, provider: &str) -> String {
        format!(
            "http://{}/notify/{provider}",
            self.engine.runtime().config.daemon.callback_listen
        )
    }

    /// Requests the sandbox has received.
    pub fn vendor_requests(&self) -> usize {
        self.sandbox.orders().len()
    }

    /// Stops the scheduler and the servers.
    pub async fn stop(self) {
        self.world.stop().await;
    }
}
