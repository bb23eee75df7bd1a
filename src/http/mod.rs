//! The daemon's two HTTP listeners (axum):
//!
//! - callbacks on `callback_listen`: `/notify/{provider}` as GET query, POST
//!   form or POST JSON; bodies over 64 KiB get 413;
//! - the admin API on `admin_listen`: `/healthz`, `/metrics`, `/api/status`,
//!   `/api/orders`, `/api/orders/{key}/resolve`, `/api/orders/{key}/approve`
//!   and `/decline`, `/api/plan`,
//!   `/api/recharge`, `/api/reload`, `/api/store/*`, behind an optional
//!   bearer token; the same API, without a token, on the local control
//!   socket.
//!
//! Both are served by [`serve::serve`], which bounds slow and idle peers.

mod conns;
mod idempotency;
pub mod serve;
mod writes;

pub use serve::Caller;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::{Access, Secret};
use crate::engine::Engine;
use crate::ledger::{ErrorKind, LedgerError, OrderState};

/// Callback bodies larger than this are refused with 413.
pub(crate) const MAX_CALLBACK_BODY: usize = 64 << 10;

/// Admin request bodies larger than this are refused with 413.
const MAX_ADMIN_BODY: usize = 64 << 10;

/// The callback receiver.
pub fn callback_router(engine: Arc<Engine>) -> axum::Router {
    axum::Router::new()
        .route("/notify/{provider}", get(callback).post(callback))
        .layer(DefaultBodyLimit::max(MAX_CALLBACK_BODY))
        .layer(middleware::from_fn(|req, next| {
            serve::limit_body(MAX_CALLBACK_BODY, req, next)
        }))
        .with_state(engine)
}

/// Flattens a callback's fields from the query and a form or JSON body.
pub(crate) fn callback_fields(
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if is_json {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("JSON body: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err("JSON body is not an object".into());
        };
        for (k, v) in map {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            fields.push((k, text));
        }
    } else {
        fields.extend(form_urlencoded::parse(body).into_owned());
    }
    Ok(fields)
}

async fn callback(
    State(engine): State<Arc<Engine>>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match callback_fields(&uri, &headers, &body) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(provider, "unreadable callback: {e}");
            return (StatusCode::BAD_REQUEST, e).into_response();
        }
    };
    let reply = engine.handle_callback(&provider, &fields).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, reply.body).into_response()
}

/// What `POST /api/reload` calls: the service's reloader, which this layer
/// does not know (it is above us), only this port.
pub(crate) trait Reload: Send + Sync + 'static {
    /// Reloads; the generation in force, or why the old one stays.
    fn reload<'a>(
        &'a self,
        trigger: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'a>>;
}

/// The admin API on `admin_listen`: behind the bearer tokens and the
/// same-site checks.
pub(crate) fn admin_router(engine: Arc<Engine>, reloader: Arc<dyn Reload>) -> axum::Router {
    let api = api_routes(reloader)
        .route_layer(middleware::from_fn_with_state(engine.clone(), bearer))
        .route_layer(middleware::from_fn_with_state(engine.clone(), same_site));
    with_health(engine, api)
}

/// The same API on the local control socket (`control.sock` in the state
/// folder), with no token: the socket's owner and mode (and its folder's)
/// say who may connect, as for `systemctl` or `chronyc`, and no browser
/// can reach a Unix socket.
pub(crate) fn control_router(engine: Arc<Engine>, reloader: Arc<dyn Reload>) -> axum::Router {
    with_health(engine, api_routes(reloader))
}

fn api_routes(reloader: Arc<dyn Reload>) -> axum::Router<Arc<Engine>> {
    axum::Router::new()
        .route("/api/reload", post(reload).layer(axum::Extension(reloader)))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .route("/api/orders", get(orders))
        .route("/api/orders/count", get(order_counts))
        .route("/api/orders/{key}/resolve", post(writes::resolve))
        .route("/api/orders/{key}/approve", post(writes::approve))
        .route("/api/orders/{key}/decline", post(writes::decline))
        .route("/api/orders/{key}/trace", get(order_trace))
        .route("/api/accounts/{name}/trace", get(account_trace))
        .route("/api/plan", get(plan))
        .route("/api/forecast", get(forecast))
        .route("/api/recharge", post(writes::recharge))
        .route("/api/store/backup", get(store_backup))
        .route("/api/store/release", post(writes::store_release))
}

fn with_health(engine: Arc<Engine>, api: axum::Router<Arc<Engine>>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .layer(middleware::from_fn(|req, next| {
            serve::limit_body(MAX_ADMIN_BODY, req, next)
        }))
        .with_state(engine)
}

/// Refuses what a web page could make a browser send to the admin API.
///
/// - Without a token, only loopback `Host` names are served: a page on a
///   domain that re-resolves to 127.0.0.1 (DNS rebinding) sends its own
///   domain as `Host`.
/// - A request with an `Origin` other than the API's own is refused: vipd
///   serves no pages, so no legitimate client sends one (curl and the
///   `vipd` commands send none).
/// - Writes must be `application/json`: the content types a page can send
///   without a CORS preflight (forms, `text/plain`) are refused, and the
///   preflight is never answered.
async fn same_site(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let has_token = engine.runtime().config.daemon.guarded();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !has_token && !loopback_host(&host) {
        return (
            StatusCode::FORBIDDEN,
            "without admin_token only loopback Host names are served",
        )
            .into_response();
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let own = [format!("http://{host}"), format!("https://{host}")];
        if !own
            .iter()
            .any(|o| origin.as_bytes().eq_ignore_ascii_case(o.as_bytes()))
        {
            return (StatusCode::FORBIDDEN, "cross-site requests are refused").into_response();
        }
    }
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !json {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send writes as Content-Type: application/json",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the read token may do: `GET`/`HEAD` of status, orders and their
/// traces, plan and metrics. Not the store backup (every record at once)
/// and no write.
fn read_scope(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let trace = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("/trace"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
    };
    (*method == Method::GET || *method == Method::HEAD)
        && (matches!(
            path,
            "/metrics"
                | "/api/status"
                | "/api/orders"
                | "/api/orders/count"
                | "/api/plan"
                | "/api/forecast"
        ) || trace("/api/orders/")
            || trace("/api/accounts/"))
}

/// Each token is named and may do everything (`access: admin`,
/// `daemon.admin_token`) or only what [`read_scope`] allows, so a scrape
/// credential cannot spend money. The token's name goes with the request
/// as its [`Caller`] (who made a manual change). Without a token that may
/// write, the API is open to loopback peers (the configuration refuses a
/// read token then, and a non-loopback `admin_listen`). Read from the
/// configuration in force, so a reload rotates them.
async fn bearer(State(engine): State<Arc<Engine>>, mut req: Request, next: Next) -> Response {
    let rt = engine.runtime();
    let daemon = &rt.config.daemon;
    if !daemon.guarded() {
        req.extensions_mut()
            .insert(Caller("admin API (no token)".into()));
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = daemon.tokens.iter().find(|t| authorized(given, &t.secret)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"vipd\"")],
            "missing or wrong bearer token",
        )
            .into_response();
    };
    if token.access == Access::Read && !read_scope(req.method(), req.uri().path()) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "token {} may only read status, orders, plan and metrics: this needs a token with access: admin",
                token.name
            ),
        )
            .into_response();
    }
    req.extensions_mut()
        .insert(Caller(format!("token {}", token.name).into()));
    next.run(req).await
}

/// Whether an `Authorization` header carries `token` as a bearer token.
/// The scheme is case-insensitive (RFC 9110 §11.1); the token is compared
/// byte for byte, in time that depends only on the lengths.
fn authorized(header: Option<&str>, token: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    let Some((scheme, given)) = header.and_then(|h| h.split_once(' ')) else {
        return false;
    };
    let (given, expected) = (given.trim().as_bytes(), token.expose().as_bytes());
    scheme.eq_ignore_ascii_case("bearer")
        && given.len() == expected.len()
        && bool::from(given.ct_eq(expected))
}

/// `GET /healthz`: 200 `ok` while the store can make a write durable,
/// 503 with the reason otherwise. Open, like a liveness probe: it names
/// no account.
async fn healthz(State(engine): State<Arc<Engine>>) -> Response {
    match engine.store().probe().await {
        Ok(()) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {e}")).into_response(),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

/// A store's failure as HTTP says it: what kind of failure, whatever the
/// backend. An unreachable or fenced store is 503 (ask again later), a
/// damaged one 500.
fn store_error(e: &LedgerError) -> Response {
    (store_status(e), e.to_string()).into_response()
}

fn store_status(e: &LedgerError) -> StatusCode {
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable | ErrorKind::NotDurable | ErrorKind::Fenced => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::Damaged => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn status(State(engine): State<Arc<Engine>>) -> Response {
    match engine.status().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn orders(
    State(engine): State<Arc<Engine>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let state = match q.get("state").map(|s| s.parse::<OrderState>()).transpose() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    match engine.store().orders(state).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => store_error(&e),
    }
}

/// Orders by state, without the orders: cheap to poll.
async fn order_counts(State(engine): State<Arc<Engine>>) -> Response {
    match engine.store().count_by_state().await {
        Ok(counts) => {
            let by_name: std::collections::BTreeMap<&str, usize> =
                counts.into_iter().map(|(s, n)| (s.as_str(), n)).collect();
            Json(by_name).into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// One order's story (`vipd explain ORDER`); a unique key prefix is enough.
async fn order_trace(State(engine): State<Arc<Engine>>, Path(key): Path<String>) -> Response {
    match crate::engine::trace::order(&**engine.store(), &key).await {
        Ok(trace) => Json(trace).into_response(),
        Err(e) => store_error(&e),
    }
}

/// The stories of an account's latest orders, newest first (`?last=N`,
/// default 5).
async fn account_trace(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let last = match q.get("last").map(|s| s.parse::<usize>()).transpose() {
        Ok(n) => n.unwrap_or(5),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("last: {e}")).into_response(),
    };
    match crate::engine::trace::account(&**engine.store(), &name, last).await {
        Ok(traces) => Json(traces).into_response(),
        Err(e) => store_error(&e),
    }
}

/// `GET /metrics` (behind the bearer token like `/api/*`: it names
/// accounts).
async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    // Off the runtime's workers: it reads every account's records.
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(engine.render_metrics())).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// `POST /api/reload`: 200 with the new generation, or 422 with the
/// errors (the old generation stays in force).
async fn reload(axum::Extension(reloader): axum::Extension<Arc<dyn Reload>>) -> Response {
    match reloader.reload("api").await {
        Ok(generation) => Json(serde_json::json!({"generation": generation})).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"error": e})),
        )
            .into_response(),
    }
}

async fn plan(
    State(engine): State<Arc<Engine>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let at = match q.get("at").map(|s| s.parse::<i64>()).transpose() {
        Ok(at) => at,
        Err(_) => return (StatusCode::BAD_REQUEST, "at must be unix seconds").into_response(),
    };
    match engine.plan(q.get("account").map(String::as_str), at).await {
        Ok(lines) => Json(lines).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// `GET /api/forecast[?days=N]`: the renewals and spend the known ends
/// bring (default 90 days, at most 3660).
async fn forecast(
    State(engine): State<Arc<Engine>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let days = match q.get("days").map(|s| s.parse::<u32>()) {
        None => 90,
        Some(Ok(d)) if (1..=3660).contains(&d) => d,
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "days must be 1 to 3660").into_response();
        }
    };
    match engine.forecast(days).await {
        Ok(f) => Json(f).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /api/store/backup`: the store's backup, as `vipd store backup`
/// writes it.
async fn store_backup(State(engine): State<Arc<Engine>>) -> Response {
    match engine.store().backup(engine.clock().unix()).await {
        Ok(body) => body.into_response(),
        Err(e) => store_error(&e),
    }
}

#[cfg(test)]
mod tests;
