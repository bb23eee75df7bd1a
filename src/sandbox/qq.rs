//! The sandbox's QQ Connect side: `get_vip_rich_info` (JSON or XML, with
//! numbers as strings when a knob says so) and `/oauth2.0/token` refresh
//! with single-use refresh tokens.
//!
//! This is the load target of later benchmarks, so the reply is written
//! straight into a `String` rather than through a JSON tree.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::faults::{ReplyFault, roll_reply_fault};
use super::recharge::{json_as_html, param, request_params};
use super::world::{SimAccount, TokenState};
use crate::model::Membership;

/// `GET|POST /user/get_vip_rich_info`
pub async fn vip_info(State(sb): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let params = request_params(&uri, &body);
    let get = |k: &str| param(&params, k).unwrap_or("");
    let xml = get("format") == "xml";
    let now = sb.clock.unix();
    let (latency, fault, hang, transient, strings, checked) = {
        let mut world = sb.world();
        world.reads += 1;
        let knobs = world.control.vip_info.clone();
        let fault = roll_reply_fault(&knobs, &mut world.rng);
        let transient = world.rng.f64() < knobs.transient_rate;
        let strings = world.rng.f64() < knobs.string_numbers_rate;
        let checked = if !world.readers.contains_key(get("oauth_consumer_key")) {
            Err((100008, "oauth_consumer_key is invalid"))
        } else {
            world
                .check_token(get("access_token"), get("openid"), now)
                .map(|idx| world.accounts[idx].clone())
        };
        (
            knobs.latency(),
            fault,
            knobs.hang_duration(),
            transient,
            strings,
            checked,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(ReplyFault::Http500) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
        }
        Some(ReplyFault::Garbage) => {
            return json_as_html("<html><body>服务器繁忙</body></html>".into());
        }
        Some(ReplyFault::Hang) => {
            tokio::select! {
                _ = tokio::time::sleep(hang) => {}
                _ = sb.cancel.cancelled() => {}
            }
        }
        None => {}
    }
    let body = match (transient, checked) {
        (true, _) => error_body(-1, "系统繁忙,请稍后再试", xml),
        (false, Err((ret, msg))) => error_body(ret, msg, xml),
        (false, Ok(account)) => render(&account, xml, strings, now),
    };
    json_as_html(body)
}

fn error_body(ret: i64, msg: &str, xml: bool) -> String {
    if xml {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><data><ret>{ret}</ret><msg>{msg}</msg></data>"
        )
    } else {
        format!("{{\"ret\":{ret},\"msg\":\"{msg}\"}}")
    }
}

/// Writes a successful reply in the API's field order.
/// `now` is the vendor's time (the `is_*` flags compare with it).
pub fn render(a: &SimAccount, xml: bool, strings: bool, now: i64) -> String {
    let vip = a.ends[Membership::QqVip as usize] > now;
    let year = a.ends[Membership::QqYearVip as usize] > now;
    let mut fields: Vec<(String, i64)> = vec![
        ("is_lost".into(), 0),
        ("is_qq_vip".into(), i64::from(vip)),
        ("is_qq_year_vip".into(), i64::from(year)),
        ("qq_vip_level".into(), if vip { 5 } else { 0 }),
    ];
    for m in Membership::ALL {
        let i = m as usize;
        fields.push((format!("{m}_start"), a.starts[i]));
        fields.push((format!("{m}_end"), a.ends[i]));
        fields.push((format!("{m}_payway"), a.payways[i]));
    }
    fields.push(("history_pay_time".into(), 0));
    fields.push(("history_end_time".into(), 0));
    let mut out = String::with_capacity(700);
    if xml {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><data><ret>0</ret><msg></msg>");
        for (k, v) in &fields {
            let _ = write!(out, "<{k}>{v}</{k}>");
        }
        out.push_str("</data>");
    } else {
        out.push_str(if strings {
            "{\"ret\":\"0\",\"msg\":\"\""
        } else {
            "{\"ret\":0,\"msg\":\"\""
        });
        for (k, v) in &fields {
            if strings {
                let _ = write!(out, ",\"{k}\":\"{v}\"");
            } else {
                let _ = write!(out, ",\"{k}\":{v}");
            }
        }
        out.push('}');
    }
    out
}

/// `GET|POST /oauth2.0/token?grant_type=refresh_token`
pub async fn token(State(sb): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let params = request_params(&uri, &body);
    let get = |k: &str| param(&params, k).unwrap_or("");
    let json = get("fmt") == "json" || get("format") == "json";
    let now = sb.clock.unix();
    let result = {
        let mut world = sb.world();
        refresh(
            &mut world,
            get("grant_type"),
            get("client_id"),
            get("client_secret"),
            get("refresh_token"),
            now,
        )
    };
    let body = match result {
        Ok((access, refresh, ttl)) if json => format!(
            "{{\"access_token\":\"{access}\",\"expires_in\":\"{ttl}\",\"refresh_token\":\"{refresh}\"}}"
        ),
        Ok((access, refresh, ttl)) => {
            format!("access_token={access}&expires_in={ttl}&refresh_token={refresh}")
        }
        Err((code, msg)) => {
            format!("callback( {{\"error\":{code},\"error_description\":\"{msg}\"}} );")
        }
    };
    json_as_html(body)
}

fn refresh(
    world: &mut super::world::World,
    grant_type: &str,
    client_id: &str,
    client_secret: &str,
    refresh_token: &str,
    now: i64,
) -> Result<(String, String, i64), (i64, &'static str)> {
    if grant_type != "refresh_token" {
        return Err((100000, "grant_type must be refresh_token"));
    }
    match world.readers.get(client_id) {
        None => return Err((100008, "client_id is wrong or lost")),
        Some(expected) => {
            let ok = expected.as_deref().is_some_and(|s| {
                crate::model::sign::constant_time_eq_ignore_ascii_case(
                    s.as_bytes(),
                    client_secret.as_bytes(),
                )
            });
            if !ok {
                return Err((100009, "client_secret is wrong"));
            }
        }
    }
    // Single use: the old refresh token is gone whatever happens next.
    let openid = world
        .refresh_tokens
        .remove(refresh_token)
        .ok_or((100013, "refresh token is invalid or already used"))?;
    let revoked = world
        .tokens
        .values()
        .any(|t| t.openid == openid && t.revoked);
    if revoked {
        return Err((100015, "access token has been revoked"));
    }
    let access = world.fresh_id("AT");
    let refresh = world.fresh_id("RT");
    // Whole seconds, at least one: `expires_in` is an integer on the wire.
    let ttl = (world.control.token_ttl.get().as_secs() as i64).max(1);
    world.tokens.insert(
        access.clone(),
        TokenState {
            openid: openid.clone(),
            expires_at: Some(now + ttl),
            revoked: false,
        },
    );
    world.refresh_tokens.insert(refresh.clone(), openid);
    Ok((access, refresh, ttl))
}
