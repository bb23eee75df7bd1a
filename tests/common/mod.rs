//! Helpers shared by the integration tests: configurations, a callback
//! receiver, a misbehaving upstream, and the `vipd` binary.
#![allow(dead_code)]

pub mod chaos;
pub mod cluster;
pub mod faulty;
pub mod inproc;
pub mod sandbox_process;
pub mod stack;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use vipd::config::Config;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A configuration with two accounts (alice due in 2 days, bob lapsed)
/// and a recharge provider; `extra_sandbox` is appended under `sandbox:`.
pub fn config_text(extra_provider: &str, extra_sandbox: &str) -> String {
    format!(
        r#"
daemon: {{ sandbox: true }}
providers:
  qq: {{ kind: qq_connect, base_url: "http://127.0.0.1:1", oauth_consumer_key: "101234567", client_secret: app-key, timeout: 2s }}
  wapi:
    kind: recharge
    base_url: "http://127.0.0.1:1"
    appid: "1"
    secret: "{SECRET}"
    timeout: 2s
{extra_provider}
products:
  qq_vip_month: {{ provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }}
accounts:
  - {{ name: alice, qq_number: "5666857", openid: OPENID-A, access_token: tok-a, refresh_token: rt-a }}
  - {{ name: bob, qq_number: "10001", openid: OPENID-B, access_token: tok-b }}
sandbox:
  prices: {{ qq_vip_month: 12.11 }}
  memberships:
    alice: {{ qq_vip: 2d }}
    bob: {{ qq_vip: -1d }}
{extra_sandbox}
"#
    )
}

pub fn config(extra_provider: &str, extra_sandbox: &str) -> Config {
    Config::parse(
        &config_text(extra_provider, extra_sandbox),
        Path::new("test.yaml"),
    )
    .unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rules.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One received callback's fields, in arrival order.
pub type Fields = Vec<(String, String)>;

/// Records every callback it receives and answers `success`.
#[derive(Clone, Default)]
pub struct Receiver {
    pub hits: Arc<Mutex<Vec<Fields>>>,
}

impl Receiver {
    pub async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/notify/{provider}", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    pub fn hits(&self) -> Vec<Fields> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until at least `n` callbacks arrived, or `limit` passes.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Fields> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let hits = self.hits();
            if hits.len() >= n || tokio::time::Instant::now() > deadline {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> impl IntoResponse {
    let fields: Fields = form_urlencoded::parse(&body).into_owned().collect();
    r.hits.lock().unwrap().push(fields);
    (StatusCode::OK, "success")
}

/// Runs a command: exit code, stdout, stderr.
/// Membership reads the daemon whose admin API is at `admin` has made,
/// by result (`ok`, `error`, `auth_error`; `None`: all), from `/metrics`.
pub async fn reads_at(admin: &str, result: Option<&str>) -> u64 {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("vipd_polls_total{"))
        .filter(|l| result.is_none_or(|r| l.contains(&format!("result=\"{r}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The wall clock, unix seconds.
pub fn now() -> i64 {
    use vipd::model::Clock;
    vipd::model::SystemClock.unix()
}

pub fn run(cmd: &mut std::process::Command) -> (i32, String, String) {
    let out = cmd.output().expect("vipd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fields` with the `sign` field a vendor would add (md5 mode, [`SECRET`]).
pub fn signed(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let signer = vipd::upstream::Signer::new(Default::default(), vipd::config::Secret::new(SECRET));
    let mut v: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let sign = signer.sign(fields.iter().copied());
    v.push(("sign".into(), sign));
    v
}

/// The events of one kind in a `status` reply.
pub fn events_of(status: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// A chat-webhook stand-in: records every JSON body POSTed to it, and
/// each delivery as sent (its `vipd-` headers and the body's bytes).
#[derive(Clone, Default)]
pub struct Webhook {
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
}

/// One POST as the receiver got it.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `vipd-signature`, when sent.
    pub signature: Option<String>,
    /// `vipd-event-id`, when sent.
    pub event_id: Option<String>,
    pub body: Vec<u8>,
}

impl Webhook {
    /// The `host:port` of a receiver URL, for `plugins.http_allow` (the
    /// receivers listen on loopback, which plugins may not reach otherwise).
    pub fn host_port(url: &str) -> String {
        let u = url::Url::parse(url).unwrap();
        format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
    }

    /// Starts it; returns it and its URL (with a query key, as real robots
    /// have).
    pub async fn start() -> (Webhook, String) {
        let hook = Webhook::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook_receive))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hook, format!("http://{addr}/hook?key=hook-key-do-not-log"))
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

async fn hook_receive(
    State(h): State<Webhook>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    h.deliveries.lock().unwrap().push(Delivery {
        signature: header("vipd-signature"),
        event_id: header("vipd-event-id"),
        body: body.to_vec(),
    });
    match serde_json::from_slice(&body) {
        Ok(v) => {
            h.bodies.lock().unwrap().push(v);
            (StatusCode::OK, r#"{"errcode":0}"#)
        }
        Err(_) => (StatusCode::BAD_REQUEST, r#"{"errcode":1}"#),
    }
}

/// An upstream that answers every request with one fixed status and body.
pub async fn evil_upstream(status: u16, body: Vec<u8>) -> SocketAddr {
    let body = Bytes::from(body);
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { (StatusCode::from_u16(status).unwrap(), body) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The `vipd` binary under test.
pub fn vipd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
}

/// GET a sandbox test endpoint as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// POST JSON to a sandbox test endpoint.
pub async fn post_json(url: &str, body: serde_json::Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}
