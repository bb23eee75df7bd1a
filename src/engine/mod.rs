//! The renewal engine: schedules checks, reads memberships, decides, pays
//! through the ledger, settles by callback or evidence, and verifies.
//!
//! | file | owns |
//! |---|---|
//! | `decide.rs` | pure decisions, outcome meanings, backoff |
//! | `check.rs` | one check of one account under one rule; paying |
//! | `lapse.rs` | the membership's end watched: `renewal_at_risk`, `membership_lapsed` |
//! | `approval.rs` | renewals awaiting approval: answers, escalation, expiry |
//! | `forecast.rs` | the renewals and spend the known ends bring, against the caps |
//! | `manual.rs` | manual orders; who and why of an operator's write; releases |
//! | `callback.rs` | vendor callbacks |
//! | `report.rs` | `status`, `plan`, manual recharges |
//! | `gate.rs` | provider pause gates, rate limits, in-flight caps |
//! | `period.rs` | budget days and months in the configured timezone |
//! | `events.rs` | events, logged and kept |
//! | `trace.rs` | one order's story, from its record and the events naming it |
//!
//! Configuration lives in a [`Runtime`] behind an `Arc` that a reload swaps
//! whole; a check holds the `Arc` it started with, so orders in flight are
//! never affected by a reload.

mod approval;
pub(crate) mod callback;
mod check;
pub mod clients;
pub mod decide;
pub mod events;
mod evidence;
mod exposition;
pub mod forecast;
mod gate;
pub mod hooks;
mod lapse;
mod manual;
mod pay;
pub mod period;
mod report;
mod schedule;
pub mod terms;
pub mod time;
mod token;
pub mod trace;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use approval::answer;
pub use check::VipView;
pub use manual::{ManualError, ManualOrder, Operator, release};
pub use report::{PlanLine, ResolveError, Status, resolve, status};

use crate::config::{CallbackMapping, Config, Provider};
use crate::ledger::store::Store;
use crate::upstream::{RechargeClient, Signer, VendorClock, VipInfoClient};
use events::Event;
use gate::{Gate, Traffic};
pub use hooks::{Hooks, NoHooks};

/// A membership reader: one `qq_connect` provider.
struct Reader {
    client: VipInfoClient,
    traffic: Traffic,
    /// Token refresh, with the app's id and secret.
    tokens: crate::upstream::TokenClient,
    client_id: String,
    client_secret: Option<crate::config::Secret>,
}

/// A seller: one `recharge` provider.
struct Seller {
    client: RechargeClient,
    traffic: Traffic,
    gate: Gate,
    debug: bool,
    signer: Signer,
    callback: CallbackMapping,
    target_param: String,
}

/// One configuration generation with its clients and gates.
pub struct Runtime {
    /// The validated configuration (shared with this generation's plugins,
    /// whose `vipd.config` view reads it on demand).
    pub config: Arc<Config>,
    /// Counts reloads; 1 for the first configuration.
    pub generation: u64,
    /// What listens to this generation's events (its Lua plugins).
    pub hooks: Arc<dyn Hooks>,
    readers: HashMap<String, Reader>,
    sellers: HashMap<String, Seller>,
}

impl Runtime {
    /// Builds clients and gates for `config`, beside its loaded plugins.
    pub fn build(
        config: Arc<Config>,
        hooks: Arc<dyn Hooks>,
        generation: u64,
        http: &reqwest::Client,
        clock: &Arc<dyn crate::model::Clock>,
    ) -> Runtime {
        let mut readers = HashMap::new();
        let mut sellers = HashMap::new();
        for (name, p) in &config.providers {
            match p {
                Provider::QqConnect(q) => {
                    readers.insert(
                        name.clone(),
                        Reader {
                            client: clients::vip_info(q, http),
                            traffic: Traffic::new(q.rate_limit, usize::MAX >> 4),
                            tokens: clients::tokens(q, http),
                            client_id: q.oauth_consumer_key.clone(),
                            client_secret: q.client_secret.clone(),
                        },
                    );
                }
                Provider::Recharge(r) => {
                    sellers.insert(
                        name.clone(),
                        Seller {
                            client: clients::recharge(
                                r,
                                http,
                                Arc::new(VendorClock::on(clock.clone())),
                            ),
                            traffic: Traffic::new(r.rate_limit, r.max_in_flight as usize),
                            gate: Gate::new(config.daemon.probe_every),
                            debug: r.debug,
                            signer: r.signer(),
                            callback: r.callback.clone(),
                            target_param: r.target_param.clone(),
                        },
                    );
                }
            }
        }
        Runtime {
            config,
            generation,
            hooks,
            readers,
            sellers,
        }
    }

    /// The reader of `account`. The runtime was built from the
    /// configuration that checked every account's provider is a
    /// `qq_connect` one, and built a reader for each: the one place that
    /// relies on it.
    fn reader_of(&self, account: &crate::config::Account) -> &Reader {
        self.readers
            .get(&account.provider)
            .expect("built from the validated configuration")
    }

    /// The seller of `product` (see [`Runtime::reader_of`]).
    fn seller_of(&self, product: &crate::config::Product) -> &Seller {
        self.sellers
            .get(&product.provider)
            .expect("built from the validated configuration")
    }

    /// The `notify_url` for a provider.
    fn notify_url(&self, provider: &str) -> String {
        let d = &self.config.daemon;
        match &d.public_url {
            Some(url) => format!("{url}/notify/{provider}"),
            None => format!("http://{}/notify/{provider}", d.callback_listen),
        }
    }
}

/// How long shutdown waits for checks in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A scheduled wake-up of one (rule, account) pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Wake {
    /// On the monotonic clock: a wall-clock step never delays or hurries
    /// the wakes already scheduled.
    at: tokio::time::Instant,
    rule: Arc<str>,
    account: Arc<str>,
    /// Regular wakes schedule the next regular one; follow-ups do not.
    regular: bool,
    /// A payment's follow-ups come as one wake at a time: this one's index
    /// in [`check::FOLLOW_UPS`], the next pushed as it fires.
    series: Option<u8>,
}

impl Wake {
    /// The follow-up after this one in its series, if there is one.
    fn next_in_series(&self) -> Option<Wake> {
        let i = usize::from(self.series?);
        let gap = check::FOLLOW_UPS.get(i + 1)? - check::FOLLOW_UPS[i];
        Some(Wake {
            at: self.at + Duration::from_secs(gap),
            rule: self.rule.clone(),
            account: self.account.clone(),
            regular: false,
            series: Some(self.series? + 1),
        })
    }
}

/// How the last reload went, for `status` and `/api/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// Unix seconds.
    pub at: i64,
    /// What asked for it: `file change`, `SIGHUP`, `api`.
    pub trigger: String,
    /// The generation in force afterwards.
    pub generation: u64,
    /// Why the candidate was refused (with file and line), if it was.
    pub error: Option<String>,
}

/// The engine. Cheap to share: everything inside is behind `Arc`s.
pub struct Engine {
    store: Arc<dyn Store>,
    last_reload: Mutex<Option<ReloadReport>>,
    runtime: RwLock<Arc<Runtime>>,
    http: reqwest::Client,
    tasks: TaskTracker,
    cancel: CancellationToken,
    wake_tx: mpsc::UnboundedSender<Wake>,
    wake_rx: Mutex<Option<mpsc::UnboundedReceiver<Wake>>>,
    checks: Arc<Semaphore>,
    /// How many slots `checks` was made with.
    check_slots: usize,
    running: Mutex<HashSet<(Arc<str>, Arc<str>)>>,
    dry_run: bool,
    /// Unix milliseconds of the scheduler's next wake (0: none).
    next_wake: std::sync::atomic::AtomicI64,
    /// Hot-path counters for `/metrics`.
    metrics: crate::metrics::Metrics,
    /// When this engine (and its first configuration) started, unix secs.
    started_at: i64,
    /// One token refresh per account at a time.
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Manual orders sent with an idempotency key, one at a time on this
    /// node: a client's quick retry waits for its first try's answer
    /// instead of racing it (`http/idempotency.rs`).
    pub(crate) keyed_manual: tokio::sync::Mutex<()>,
    /// When each order's last repeated callback was written down.
    repeats: callback::Repeats,
    /// The wall clock (the system's, or a test's).
    clock: Arc<dyn crate::model::Clock>,
    /// The time decisions use: monotonic, anchored to the vendor's clock,
    /// and wary of wall-clock steps (see `time.rs`).
    time: time::TimeKeeper,
}

/// The rule name manual orders (`vipd recharge`) are recorded under;
/// reserved by the configuration, which owns the name.
pub use crate::config::MANUAL_RULE;

/// A deterministic offset in `[0, window)` for a pair, so that 10,000
/// accounts of one rule do not all fire in the same second.
pub fn spread(rule: &str, account: &str, window: Duration) -> Duration {
    let ms = window.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (rule, account).hash(&mut h);
    Duration::from_millis(h.finish() % ms)
}

impl Engine {
    /// An engine over `store` with its first configuration and what
    /// listens to it (started here, with this engine to call back into).
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        hooks: Arc<dyn Hooks>,
        dry_run: bool,
        clock: Arc<dyn crate::model::Clock>,
    ) -> Arc<Engine> {
        let http = crate::upstream::http_client();
        let check_slots = config.daemon.max_concurrent_checks;
        let checks = Arc::new(Semaphore::new(check_slots));
        let runtime = Arc::new(Runtime::build(config, hooks, 1, &http, &clock));
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let engine = Arc::new(Engine {
            store,
            last_reload: Mutex::new(None),
            runtime: RwLock::new(runtime),
            http,
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
            checks,
            check_slots,
            running: Mutex::new(HashSet::new()),
            dry_run,
            next_wake: std::sync::atomic::AtomicI64::new(0),
            metrics: crate::metrics::Metrics::default(),
            started_at: clock.unix(),
            refreshing: Mutex::new(HashMap::new()),
            keyed_manual: tokio::sync::Mutex::new(()),
            repeats: callback::Repeats::default(),
            time: time::TimeKeeper::new(clock.unix(), tokio::time::Instant::now()),
            clock,
        });
        engine.prime_metrics(&engine.runtime().config);
        engine.runtime().hooks.start(&engine);
        engine
    }

    /// Known label values at 0 for this configuration's providers.
    fn prime_metrics(&self, config: &Config) {
        let classes = crate::upstream::outcome::OutcomeClass::ALL.map(|c| c.as_str());
        self.metrics.prime(
            config.providers.iter().filter_map(|(name, p)| {
                matches!(p, Provider::QqConnect(_)).then_some(name.as_str())
            }),
            config.providers.iter().filter_map(|(name, p)| {
                matches!(p, Provider::Recharge(_)).then_some(name.as_str())
            }),
            &classes,
        );
    }

    /// The configuration generation in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The store of orders, budgets and everything else vipd remembers.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The wall clock this engine reads.
    pub fn clock(&self) -> &Arc<dyn crate::model::Clock> {
        &self.clock
    }

    /// Whether this engine never pays.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Swaps in a new configuration and its plugins (generation + 1).
    /// Checks already running keep the generation they started with; the
    /// old generation's jobs stop, its handler calls in flight finish.
    pub fn reload(self: &Arc<Self>, config: Arc<Config>, hooks: Arc<dyn Hooks>) -> u64 {
        self.prime_metrics(&config);
        let old = {
            let mut slot = self.runtime.write().unwrap_or_else(|p| p.into_inner());
            let generation = slot.generation + 1;
            let new = Arc::new(Runtime::build(
                config,
                hooks.clone(),
                generation,
                &self.http,
                &self.clock,
            ));
            std::mem::replace(&mut *slot, new)
        };
        old.hooks.retire();
        hooks.start(self);
        old.generation + 1
    }

    /// Checks running now: the `max_concurrent_checks` slots held.
    pub fn checks_in_flight(&self) -> usize {
        self.check_slots - self.checks.available_permits()
    }

    /// A one-line summary for systemd's `STATUS=`: accounts, open orders,
    /// the next check in the configured timezone.
    pub(crate) async fn status_line(&self) -> String {
        let rt = self.runtime();
        // A store that cannot take a write (a full disk, a database out of
        // reach, a lost lease) means nothing is paid: say so first.
        if let Err(e) = self.store.probe().await {
            return format!("NOT PAYING: {e}");
        }
        let counts = self.store.count_by_state().await.unwrap_or_default();
        let count = |s: crate::ledger::OrderState| counts.get(&s).copied().unwrap_or(0);
        let next = match self.next_wake.load(std::sync::atomic::Ordering::Relaxed) {
            0 => "not scheduled yet".to_owned(),
            ms => chrono::DateTime::from_timestamp_millis(ms).map_or("?".into(), |t| {
                t.with_timezone(&rt.config.daemon.timezone)
                    .format("%H:%M")
                    .to_string()
            }),
        };
        format!(
            "{} accounts, {} pending, {} unknown, next check {next}{}",
            rt.config.accounts.len(),
            count(crate::ledger::OrderState::Pending),
            count(crate::ledger::OrderState::Unknown),
            if self.last_reload().is_some_and(|r| r.error.is_some()) {
                "; last reload FAILED"
            } else {
                ""
            }
        )
    }

    /// Records how a reload went.
    pub(crate) fn note_reload(&self, report: ReloadReport) {
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }

    /// How the last reload went, if there was one.
    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Logs, records and delivers an event to the plugins in force.
    pub(crate) async fn emit(&self, ev: Event) {
        let rt = self.runtime();
        self.emit_to(&rt, ev).await;
    }

    /// [`Engine::emit`] to the plugins of `rt`.
    async fn emit_to(&self, rt: &Runtime, mut ev: Event) {
        ev.dry_run = self.dry_run;
        events::record(&*self.store, &ev).await;
        rt.hooks.notify(ev);
    }

    /// `vipd.vip_info`: one read of a configured account.
    pub(crate) async fn plugin_vip_info(&self, account: &str) -> Result<VipView, String> {
        let rt = self.runtime();
        let acct = rt
            .config
            .account(account)
            .ok_or_else(|| format!("no account named {account}"))?;
        let info = self.read(&rt, acct).await.map_err(|e| e.to_string())?;
        Ok(VipView::of(&info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payment's follow-ups, one wake at a time: each at its offset
    /// from the first, none after the last.
    #[test]
    fn a_follow_up_series_fires_at_each_offset_then_stops() {
        let start = tokio::time::Instant::now();
        let first = Wake {
            at: start + Duration::from_secs(check::FOLLOW_UPS[0]),
            rule: "r".into(),
            account: "a".into(),
            regular: false,
            series: Some(0),
        };
        let mut at = vec![];
        let mut wake = Some(first);
        while let Some(w) = wake {
            at.push(w.at.duration_since(start).as_secs());
            assert!(!w.regular);
            wake = w.next_in_series();
        }
        assert_eq!(at, check::FOLLOW_UPS);
    }

    #[test]
    fn spread_is_deterministic_and_fills_the_window() {
        let w = Duration::from_secs(600);
        assert_eq!(spread("r", "alice", w), spread("r", "alice", w));
        let offsets: HashSet<u64> = (0..1000)
            .map(|i| spread("r", &format!("a{i}"), w).as_secs())
            .collect();
        assert!(
            offsets.len() > 400,
            "1000 accounts share only {} distinct seconds",
            offsets.len()
        );
        assert!(offsets.iter().all(|&s| s < 600));
        assert_eq!(spread("r", "a", Duration::ZERO), Duration::ZERO);
    }
}
