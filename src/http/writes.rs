//! The admin API's manual writes: resolve, approve, decline, recharge and
//! release. Each is recorded with who made it (the request's [`Caller`]:
//! a token's name, or the local user on the control socket) and why (a
//! `reason`, required). A recharge may carry an `Idempotency-Key`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Caller;
use super::idempotency::{self, Replay};
use crate::engine::{Engine, ManualError, ManualOrder, Operator, ResolveError};
use crate::ledger::OrderState;

/// Who made a request, as recorded with a manual change.
fn who(caller: Option<axum::Extension<Caller>>) -> String {
    caller.map_or_else(|| "admin API".to_owned(), |c| c.0.0.to_string())
}

/// A resolve, an answer or a release not taken: 404 for no such order,
/// 409 for one that cannot take it (or no reason), 503 when the store
/// failed.
fn not_answered(e: ResolveError) -> Response {
    let status = match e {
        ResolveError::NotFound(_) => StatusCode::NOT_FOUND,
        ResolveError::NotResolvable(_) => StatusCode::CONFLICT,
        ResolveError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, e.to_string()).into_response()
}

#[derive(Deserialize)]
pub(super) struct ResolveBody {
    #[serde(rename = "as")]
    as_state: OrderState,
    /// Why: required.
    reason: String,
}

/// `POST /api/orders/{key}/resolve`: `{"as": "succeeded"|"failed", "reason"}`.
pub(super) async fn resolve(
    State(engine): State<Arc<Engine>>,
    caller: Option<axum::Extension<Caller>>,
    Path(key): Path<String>,
    Json(body): Json<ResolveBody>,
) -> Response {
    let paid = match body.as_state {
        OrderState::Succeeded => true,
        OrderState::Failed => false,
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("resolve as succeeded or failed, not {other}"),
            )
                .into_response();
        }
    };
    let by = who(caller);
    let who = Operator {
        by: &by,
        why: &body.reason,
    };
    let now = engine.clock().unix();
    match crate::engine::resolve(&**engine.store(), &key, paid, who, now).await {
        Ok((order, event)) => {
            engine.runtime().hooks.notify(event);
            Json(order).into_response()
        }
        Err(e) => not_answered(e),
    }
}

/// The body of a write that needs nothing but why.
#[derive(Deserialize)]
pub(super) struct Reason {
    reason: String,
}

/// `POST /api/orders/{key}/approve`: `{"reason"}`.
pub(super) async fn approve(
    State(engine): State<Arc<Engine>>,
    caller: Option<axum::Extension<Caller>>,
    Path(key): Path<String>,
    Json(body): Json<Reason>,
) -> Response {
    answer(engine, key, true, &who(caller), body).await
}

/// `POST /api/orders/{key}/decline`: `{"reason"}`.
pub(super) async fn decline(
    State(engine): State<Arc<Engine>>,
    caller: Option<axum::Extension<Caller>>,
    Path(key): Path<String>,
    Json(body): Json<Reason>,
) -> Response {
    answer(engine, key, false, &who(caller), body).await
}

async fn answer(
    engine: Arc<Engine>,
    key: String,
    approve: bool,
    by: &str,
    body: Reason,
) -> Response {
    let who = Operator {
        by,
        why: &body.reason,
    };
    match engine.answer_approval(&key, approve, who).await {
        Ok(order) => Json(order).into_response(),
        Err(e) => not_answered(e),
    }
}

#[derive(Deserialize)]
struct RechargeBody {
    account: String,
    product: String,
    #[serde(default)]
    dry_run: bool,
    /// Pay a membership that is not due yet (one period early at most).
    #[serde(default)]
    ahead: bool,
    /// Why: required.
    reason: String,
}

/// `POST /api/recharge`. With an `Idempotency-Key`, the first answer to
/// a key is kept (24 h and more, in the store, so every node and a
/// restart know it): the same key with the same body gets it again,
/// with another body a 409.
pub(super) async fn recharge(
    State(engine): State<Arc<Engine>>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: RechargeBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, format!("recharge: {e}")).into_response();
        }
    };
    let by = who(caller);
    let run = || async {
        let order = ManualOrder {
            account: &parsed.account,
            product: &parsed.product,
            dry_run: parsed.dry_run,
            ahead: parsed.ahead,
            who: Operator {
                by: &by,
                why: &parsed.reason,
            },
        };
        match engine.manual_recharge(order).await {
            Ok(msg) => (StatusCode::OK, msg),
            Err(e) => {
                let status = match e {
                    ManualError::NoAccount(_) | ManualError::NoProduct(_) => StatusCode::NOT_FOUND,
                    ManualError::Read(_) => StatusCode::BAD_GATEWAY,
                    ManualError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                    ManualError::NoReason(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    ManualError::NotDue(_) | ManualError::NotRenewing(_) | ManualError::NotPaid => {
                        StatusCode::CONFLICT
                    }
                };
                (status, e.to_string())
            }
        }
    };
    let Some(key) = headers.get(idempotency::HEADER) else {
        return run().await.into_response();
    };
    let store = engine.store();
    let now = engine.clock().unix();
    match idempotency::once(&engine.keyed_manual, &**store, key, &body, now, run).await {
        Ok(Replay::Fresh(status, text)) => (status, text).into_response(),
        Ok(Replay::Again(status, text)) => {
            (status, [(idempotency::REPLAYED, "true")], text).into_response()
        }
        Err((status, why)) => (status, why).into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct ReleaseBody {
    account: Option<String>,
    /// Why: required.
    reason: String,
}

/// `POST /api/store/release`: `{"account": A, "reason"}` or
/// `{"account": null, "reason"}` for all; answers what stays held
/// (`null`: nothing).
pub(super) async fn store_release(
    State(engine): State<Arc<Engine>>,
    caller: Option<axum::Extension<Caller>>,
    Json(body): Json<ReleaseBody>,
) -> Response {
    let by = who(caller);
    let who = Operator {
        by: &by,
        why: &body.reason,
    };
    let now = engine.clock().unix();
    match crate::engine::release(&**engine.store(), body.account.as_deref(), who, now).await {
        Ok(left) => Json(left).into_response(),
        Err(e) => not_answered(e),
    }
}
