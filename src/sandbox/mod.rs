//! The simulated upstream (README "The sandbox"): both vendor APIs with the real
//! protocol, state kept per account, and fault knobs.
//!
//! It runs as `vipd sandbox` or inside the daemon (`daemon.sandbox: true`),
//! and it is what the default `rules.yaml`, the README walkthrough and the
//! test suite run against. Test-only endpoints live under `/_sandbox/`:
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /_sandbox/orders` | every recharge request received, with its outcome |
//! | `GET /_sandbox/accounts` | every account's memberships |
//! | `POST /_sandbox/accounts/{name}` | set ends, revoke or expire tokens |
//! | `GET`/`POST /_sandbox/control` | mode, balance, callback delay, fault knobs |

mod faults;
mod qq;
mod recharge;
mod world;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use faults::{Knobs, ReplyFault};
pub use recharge::{Reply, decide};
pub use world::{Control, OrderRecord, OrderState, SimAccount, World};

use crate::config::{Config, SandboxMode};
use crate::model::{Clock, Membership};
use crate::units::{Fen, HumanDuration};

/// How many callbacks the sandbox delivers at once.
const CALLBACK_CONCURRENCY: usize = 32;

/// State shared by the handlers.
pub struct Shared {
    /// The simulated vendor. A std mutex: never held across an await.
    world: Mutex<World>,
    /// For callbacks.
    http: reqwest::Client,
    /// Settlement and callback tasks.
    tasks: TaskTracker,
    /// Stops hangs, delays and retries at shutdown.
    cancel: CancellationToken,
    /// Callback deliveries in flight at once: vendors pace their
    /// callbacks rather than open a connection per settled order.
    callback_slots: tokio::sync::Semaphore,
    /// The vendor's wall clock.
    clock: Arc<dyn Clock>,
    /// The last callback sent for each vendor order: where, its fields, and
    /// the reply that acknowledges it (for [`SandboxHandle::redeliver`]).
    sent: Mutex<HashMap<String, SentCallback>>,
}

type SentCallback = (String, HashMap<String, String>, String);

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        // A handler that panicked mid-update leaves a world that is still
        // consistent enough for a simulator; keep serving.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running sandbox.
pub struct SandboxHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl SandboxHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `get_vip_rich_info` requests received so far.
    pub fn reads(&self) -> u64 {
        self.shared.world().reads
    }

    /// Every recharge request received so far.
    pub fn orders(&self) -> Vec<OrderRecord> {
        self.shared.world().orders.clone()
    }

    /// The end of `account`'s `membership` as the vendor holds it now
    /// (unix seconds; `None`: no such account or no such membership).
    pub(crate) fn end_of(
        &self,
        account: &str,
        membership: crate::model::Membership,
    ) -> Option<i64> {
        let world = self.shared.world();
        let a = world.accounts.iter().find(|a| a.name == account)?;
        Some(a.ends[membership as usize]).filter(|&end| end != 0)
    }

    /// Changes the vendor's run-time settings, as `POST /_sandbox/control`
    /// does; the settings after the change, or why it was refused.
    pub fn change(&self, change: ControlChange) -> Result<Control, String> {
        change.apply(&mut self.shared.world().control)
    }

    /// Delivers the last callback sent for vendor order `orderid` again,
    /// exactly as it was sent (its time and signature too), as a vendor
    /// that re-delivers does. Whether the receiver acknowledged it; an
    /// error when no callback was sent for that order.
    pub(crate) async fn redeliver(&self, orderid: &str) -> Result<bool, String> {
        let sent = self
            .shared
            .sent
            .lock()
            .map_or(None, |m| m.get(orderid).cloned());
        let Some((url, fields, reply)) = sent else {
            return Err(format!("no callback was sent for vendor order {orderid}"));
        };
        let acked = match self.shared.http.post(&url).form(&fields).send().await {
            Ok(r) if r.status() == StatusCode::OK => {
                r.text().await.is_ok_and(|body| body.trim() == reply)
            }
            _ => false,
        };
        if let Some(order) = self.shared.world().order_mut(orderid) {
            order.callbacks_sent += 1;
            order.callbacks_acked += u32::from(acked);
        }
        Ok(acked)
    }

    /// Stops serving, cancels pending settlements, and waits for the tasks.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        let _ = self.server.await;
    }
}

/// Binds `listen` and serves the upstream of `config` until shut down.
pub async fn start(config: &Config, listen: SocketAddr) -> std::io::Result<SandboxHandle> {
    start_with_clock(config, listen, crate::model::clock::system()).await
}

/// [`start`] on `clock` (a test's, to move the vendor's time with tokio's).
pub async fn start_with_clock(
    config: &Config,
    listen: SocketAddr,
    clock: Arc<dyn Clock>,
) -> std::io::Result<SandboxHandle> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        world: Mutex::new(World::from_config(config, clock.unix())),
        http: crate::upstream::http_client(),
        tasks: TaskTracker::new(),
        cancel: CancellationToken::new(),
        callback_slots: tokio::sync::Semaphore::new(CALLBACK_CONCURRENCY),
        clock,
        sent: Mutex::new(HashMap::new()),
    });
    let app = router(shared.clone());
    let cancel = shared.cancel.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    });
    Ok(SandboxHandle {
        addr,
        shared,
        server,
    })
}

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route(
            "/user/get_vip_rich_info",
            get(qq::vip_info).post(qq::vip_info),
        )
        .route("/oauth2.0/token", get(qq::token).post(qq::token))
        .route("/_sandbox/orders", get(list_orders))
        .route("/_sandbox/accounts", get(list_accounts))
        .route("/_sandbox/accounts/{name}", post(change_account))
        .route("/_sandbox/control", get(get_control).post(set_control))
        .route("/_sandbox/stats", get(stats))
        .fallback(recharge::handle)
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(shared)
}

async fn list_orders(State(sb): State<Arc<Shared>>) -> Response {
    Json(sb.world().orders.clone()).into_response()
}

async fn list_accounts(State(sb): State<Arc<Shared>>) -> Response {
    let world = sb.world();
    let list: Vec<serde_json::Value> = world
        .accounts
        .iter()
        .map(|a| {
            let ends: serde_json::Map<String, serde_json::Value> = Membership::ALL
                .iter()
                .map(|m| (m.as_str().to_owned(), a.ends[*m as usize].into()))
                .collect();
            serde_json::json!({"name": a.name, "qq_number": a.qq_number, "openid": a.openid, "ends": ends})
        })
        .collect();
    Json(list).into_response()
}

/// Body of `POST /_sandbox/accounts/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountChange {
    /// New `*_end` values, unix seconds (0 = none).
    #[serde(default)]
    ends: std::collections::BTreeMap<Membership, i64>,
    /// Revoke every token of the account (ret 100015 from now on).
    #[serde(default)]
    revoke_tokens: bool,
    /// Expire every token of the account (ret 100014 from now on).
    #[serde(default)]
    expire_tokens: bool,
}

async fn change_account(
    State(sb): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(change): Json<AccountChange>,
) -> Response {
    let mut world = sb.world();
    let Some(idx) = world.accounts.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, format!("no account {name}")).into_response();
    };
    for (m, end) in change.ends {
        world.accounts[idx].ends[m as usize] = end;
    }
    let openid = world.accounts[idx].openid.clone();
    let now = sb.clock.unix();
    for t in world.tokens.values_mut().filter(|t| t.openid == openid) {
        t.revoked |= change.revoke_tokens;
        if change.expire_tokens {
            t.expires_at = Some(now - 1);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_sandbox/stats`: requests received so far.
async fn stats(State(sb): State<Arc<Shared>>) -> Response {
    let world = sb.world();
    Json(serde_json::json!({
        "vip_info_requests": world.reads,
        "recharge_requests": world.orders.len(),
    }))
    .into_response()
}

async fn get_control(State(sb): State<Arc<Shared>>) -> Response {
    Json(sb.world().control.clone()).into_response()
}

/// A change of the vendor's run-time settings (`POST /_sandbox/control`,
/// a `vendor:` step of `vipd test`): every part optional.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlChange {
    /// `sync` answers 10000; `async` answers 10023 and calls back.
    pub mode: Option<SandboxMode>,
    /// How long after a sale an async callback is sent.
    pub callback_delay: Option<HumanDuration>,
    /// How long a refreshed access token lives.
    pub token_ttl: Option<HumanDuration>,
    /// Money at the vendor: an amount, or `"unlimited"`.
    pub balance: Option<BalanceChange>,
    /// Faults of the recharge API (replaces them all).
    pub recharge: Option<Knobs>,
    /// Faults of the membership API (replaces them all).
    pub vip_info: Option<Knobs>,
}

/// A balance: an amount, or the word `unlimited`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum BalanceChange {
    Amount(Fen),
    Word(String),
}

impl ControlChange {
    /// Applies the change to `c`, all of it or (refused) none.
    pub(crate) fn apply(self, c: &mut Control) -> Result<Control, String> {
        for (api, knobs) in [("recharge", &self.recharge), ("vip_info", &self.vip_info)] {
            if let Some(k) = knobs {
                k.validate().map_err(|e| format!("{api}: {e}"))?;
            }
        }
        let balance = match self.balance {
            Some(BalanceChange::Amount(fen)) => Some(Some(fen)),
            Some(BalanceChange::Word(w)) if w == "unlimited" => Some(None),
            Some(BalanceChange::Word(w)) => {
                return Err(format!(
                    "balance: {w:?} is neither an amount nor \"unlimited\""
                ));
            }
            None => None,
        };
        if let Some(mode) = self.mode {
            c.mode = mode;
        }
        if let Some(delay) = self.callback_delay {
            c.callback_delay = delay;
        }
        if let Some(ttl) = self.token_ttl {
            c.token_ttl = ttl;
        }
        if let Some(b) = balance {
            c.balance = b;
        }
        if let Some(k) = self.recharge {
            c.recharge = k;
        }
        if let Some(k) = self.vip_info {
            c.vip_info = k;
        }
        Ok(c.clone())
    }
}

async fn set_control(State(sb): State<Arc<Shared>>, Json(change): Json<ControlChange>) -> Response {
    match change.apply(&mut sb.world().control) {
        Ok(c) => Json(c).into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, e).into_response(),
    }
}
