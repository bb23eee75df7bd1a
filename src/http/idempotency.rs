//! `Idempotency-Key` on the admin API's recharge, Stripe's way: the first
//! answer to a key is kept with a digest of its body, in the store's
//! `vipd.kv` under a namespace no plugin can name (a plugin's name holds
//! no `/`), for [`KEEP_SECS`]: the same key with the same body gets that
//! answer again (`idempotent-replayed: true`), with another body a 409.
//! Kept in the store, so a restart and every node sharing it know the key.
//!
//! An answer the server could not give for sure (5xx, 502: the store or
//! the vendor failed) is not kept: a retry runs again, as it should. The
//! ledger's guards, not this, are what keep a period from being paid
//! twice; this spares a client that retries the second answer's surprise.

use std::future::Future;

use axum::http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ledger::kv::KvQuota;
use crate::ledger::store::Store;

/// The request header.
pub(crate) const HEADER: &str = "idempotency-key";
/// The reply header on an answer given again.
pub(crate) const REPLAYED: &str = "idempotent-replayed";
/// How long a key's answer is kept: a day, and an hour for clocks.
pub(crate) const KEEP_SECS: i64 = 25 * 3600;
/// Where answers are kept.
const NAMESPACE: &str = "vipd/idempotency";
/// Room for kept answers (each a few hundred bytes).
const QUOTA: KvQuota = KvQuota::of_bytes(64 << 20);

/// One keyed request's answer.
pub(crate) enum Replay {
    /// Run now.
    Fresh(StatusCode, String),
    /// The first answer to this key, given again.
    Again(StatusCode, String),
}

#[derive(Serialize, Deserialize)]
struct Kept {
    digest: String,
    status: u16,
    body: String,
    at: i64,
}

/// Runs `run` once for `key` and `body`, or answers as it did before.
/// `turn` is held while it does: keyed requests of this node run one at a
/// time, so that a client's quick retry waits for its first try's answer
/// instead of racing it.
pub async fn once<F, Fut>(
    turn: &tokio::sync::Mutex<()>,
    store: &dyn Store,
    key: &HeaderValue,
    body: &[u8],
    now: i64,
    run: F,
) -> Result<Replay, (StatusCode, String)>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = (StatusCode, String)>,
{
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or((
            StatusCode::BAD_REQUEST,
            "Idempotency-Key: 1 to 255 visible ASCII characters".to_owned(),
        ))?;
    let digest = digest(body);
    let name = format!("recharge:{key}");
    let _turn = turn.lock().await;
    let unavailable = |e: &dyn std::fmt::Display| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Idempotency-Key {key}: the store cannot say whether it was used: {e}"),
        )
    };
    let kept = store
        .kv_get(NAMESPACE, &name, now)
        .await
        .map_err(|e| unavailable(&e))?;
    if let Some(kept) = kept {
        let kept: Kept = serde_json::from_value(kept).map_err(|e| unavailable(&e))?;
        if kept.digest != digest {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "Idempotency-Key {key} was used at {} with another request body; use a new key for a new request",
                    crate::timefmt::utc(kept.at)
                ),
            ));
        }
        let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
        return Ok(Replay::Again(status, kept.body));
    }
    let (status, text) = run().await;
    if !status.is_server_error() && status != StatusCode::BAD_GATEWAY {
        let kept = Kept {
            digest,
            status: status.as_u16(),
            body: text.clone(),
            at: now,
        };
        let value = serde_json::to_value(&kept).expect("plain fields");
        if let Err(e) = store
            .kv_set(NAMESPACE, &name, value, Some(KEEP_SECS), now, QUOTA)
            .await
        {
            tracing::warn!(key, error = %e, "the answer to an Idempotency-Key is given but not kept: a retry with it runs again (the ledger's guards still hold)");
        }
    }
    Ok(Replay::Fresh(status, text))
}

/// SHA-256 of the body as JSON, whatever its spacing and key order (a
/// body that is not JSON: of its bytes).
fn digest(body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
        .unwrap_or_else(|| body.to_vec());
    crate::units::hex_lower(&Sha256::digest(&canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_spacing_and_key_order_not_values() {
        let a = digest(br#"{"account":"a0","product":"p","reason":"r"}"#);
        assert_eq!(
            a,
            digest(br#"{ "reason": "r", "product": "p",  "account": "a0" }"#)
        );
        assert_ne!(a, digest(br#"{"account":"a1","product":"p","reason":"r"}"#));
    }
}
