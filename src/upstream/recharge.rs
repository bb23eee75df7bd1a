//! The recharge client (README "The upstream protocol, as built"): builds and signs the request, sends it
//! by GET or POST, and classifies what came back.
//!
//! The client never decides whether to pay; the engine does, and records
//! the order durably before it calls [`RechargeClient::send`]. The client's
//! one piece of policy is the clock: a 10004 reply ("time differs by more
//! than 10 minutes") is not billed, so the client corrects its offset from
//! the reply's `curtime` and sends once more at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::lenient::{int_field, shorten, text_field};
use super::outcome::{Outcome, OutcomeClass, Wire, classify};
use super::{Clock, ReadError, read_capped, wire_of_error};
use crate::model::HttpMethod;
use crate::model::sign::{SIGN_FIELD, Signer};
use crate::units::Fen;

/// A recharge reply larger than this is not a reply.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// A parsed vendor reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RechargeReply {
    /// The status code (10000-10025), sent as a number or a string.
    pub codeid: i64,
    /// The vendor's words.
    pub message: String,
    /// The vendor's order number, when it gave one.
    pub orderid: Option<String>,
    /// The price billed, when given and readable.
    pub price: Option<Fen>,
    /// The vendor's clock (unix seconds), used to correct ours on 10004.
    pub curtime: Option<i64>,
}

/// Why a reply body is not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not JSON at all (HTML error pages, truncated bodies).
    #[error("not JSON ({reason}); body starts with {start:?}")]
    NotJson { reason: String, start: String },
    /// JSON, but not an object.
    #[error("JSON but not an object")]
    NotObject,
    /// No `codeid`, or one that is not an integer.
    #[error("no usable codeid: {0}")]
    Codeid(String),
}

impl RechargeReply {
    /// Parses a reply body. Lenient where vendors are sloppy (numbers as
    /// strings, missing fields), strict where it matters (`codeid`).
    pub fn parse(body: &[u8]) -> Result<RechargeReply, ReplyError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| ReplyError::NotJson {
            reason: e.to_string(),
            start: shorten(&String::from_utf8_lossy(&body[..body.len().min(60)])),
        })?;
        let Value::Object(map) = value else {
            return Err(ReplyError::NotObject);
        };
        let codeid = int_field("codeid", map.get("codeid"))
            .map_err(|e| ReplyError::Codeid(e.to_string()))?
            .ok_or_else(|| ReplyError::Codeid("missing".into()))?;
        let price = match map.get("price") {
            Some(Value::String(s)) if !s.trim().is_empty() => Fen::parse_yuan(s).ok(),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => i.checked_mul(100).map(Fen),
                None => n.as_f64().and_then(|f| Fen::from_f64_yuan(f).ok()),
            },
            _ => None,
        };
        Ok(RechargeReply {
            codeid,
            message: text_field(map.get("message")).unwrap_or_default(),
            orderid: text_field(map.get("orderid")).filter(|s| !s.is_empty()),
            price,
            curtime: int_field("curtime", map.get("curtime")).ok().flatten(),
        })
    }
}

/// Everything the client needs from a `kind: recharge` provider.
#[derive(Debug, Clone)]
pub struct RechargeEndpoint {
    /// Where the vendor lives, without a trailing slash.
    pub base_url: String,
    /// The application id.
    pub appid: String,
    /// Signs with the application secret.
    pub signer: Signer,
    /// GET or POST.
    pub method: HttpMethod,
    /// Send `debug=1` (the vendor answers 10024 with fake data).
    pub debug: bool,
    /// The parameter that names the account (`qq_number`).
    pub target_param: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// One recharge to send.
#[derive(Debug, Clone)]
pub struct RechargeRequest<'a> {
    /// The product's path, e.g. `/api/164/310`.
    pub path: &'a str,
    /// The account's number at the vendor (the target parameter's value).
    pub target: &'a str,
    /// Where the vendor should call back, if anywhere.
    pub notify_url: Option<&'a str>,
    /// The product's extra parameters.
    pub extra: &'a [(String, String)],
}

/// The record of one [`RechargeClient::send`].
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What it means for the ledger.
    pub outcome: Outcome,
    /// The parameters sent, without `sign` (the sign is the secret in hash
    /// mode, so it is never kept).
    pub params: Vec<(String, String)>,
    /// From just before the request to the end of the reply.
    pub latency: Duration,
    /// Set when a 10004 made the client correct its clock; the new offset
    /// in seconds.
    pub clock_corrected: Option<i64>,
}

/// The largest clock error (seconds) a 10004 is corrected and resent for at
/// once: decisions are measured in days, so an hour off cannot change one.
pub const MAX_RESEND_SKEW: i64 = 3600;

/// Sends signed recharge requests to one vendor application.
#[derive(Debug, Clone)]
pub struct RechargeClient {
    http: reqwest::Client,
    endpoint: Arc<RechargeEndpoint>,
    clock: Arc<Clock>,
}

impl RechargeClient {
    /// A client for `endpoint`, sharing `http` (its connection pool) and
    /// `clock` (the offset learned from 10004 replies).
    pub fn new(http: reqwest::Client, endpoint: RechargeEndpoint, clock: Arc<Clock>) -> Self {
        RechargeClient {
            http,
            endpoint: Arc::new(endpoint),
            clock,
        }
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &RechargeEndpoint {
        &self.endpoint
    }

    /// The request parameters, signed, in a stable order (sign last).
    pub fn signed_params(&self, req: &RechargeRequest<'_>) -> Vec<(String, String)> {
        let ep = &self.endpoint;
        let mut params: Vec<(String, String)> = vec![
            ("appid".into(), ep.appid.clone()),
            (ep.target_param.clone(), req.target.to_owned()),
            ("format".into(), "json".into()),
            ("time".into(), self.clock.now_unix().to_string()),
        ];
        if let Some(url) = req.notify_url {
            params.push(("notify_url".into(), url.to_owned()));
        }
        if ep.debug {
            params.push(("debug".into(), "1".into()));
        }
        params.extend(req.extra.iter().cloned());
        let sign = ep
            .signer
            .sign(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        params.push((SIGN_FIELD.into(), sign));
        params
    }

    /// Sends one recharge and classifies the result. On a 10004 reply with
    /// a `curtime`, corrects the clock and sends once more.
    pub async fn send(&self, req: &RechargeRequest<'_>) -> Attempt {
        let started = Instant::now();
        let (mut outcome, mut params) = self.send_once(req).await;
        let mut clock_corrected = None;
        if outcome.class == OutcomeClass::Clock {
            if let Some(server) = outcome.reply.as_ref().and_then(|r| r.curtime) {
                let offset = self.clock.correct_to(server);
                clock_corrected = Some(offset);
                if offset.abs() <= MAX_RESEND_SKEW {
                    tracing::warn!(
                        offset_secs = offset,
                        "vendor says our clock is off; corrected, sending again"
                    );
                    (outcome, params) = self.send_once(req).await;
                } else {
                    // The decision to pay was made on a clock this far
                    // off: it may be wrong. Not billed; the engine decides
                    // again on the vendor's time.
                    tracing::warn!(
                        offset_secs = offset,
                        "vendor says our clock is off by more than {MAX_RESEND_SKEW} s; not sending again"
                    );
                }
            }
        }
        params.retain(|(k, _)| k != SIGN_FIELD);
        Attempt {
            outcome,
            params,
            latency: started.elapsed(),
            clock_corrected,
        }
    }

    async fn send_once(&self, req: &RechargeRequest<'_>) -> (Outcome, Vec<(String, String)>) {
        let ep = &self.endpoint;
        let params = self.signed_params(req);
        let url = format!("{}{}", ep.base_url, req.path);
        let builder = match ep.method {
            HttpMethod::Get => self.http.get(&url).query(&params),
            HttpMethod::Post => {
                let body = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(params.iter())
                    .finish();
                self.http
                    .post(&url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded;charset=utf-8",
                    )
                    .body(body)
            }
        };
        let outcome = match builder.timeout(ep.timeout).send().await {
            Err(e) => classify(&wire_of_error(&e)),
            Ok(resp) => {
                let status = resp.status().as_u16();
                match read_capped(resp, MAX_REPLY_BYTES).await {
                    Ok(body) => classify(&Wire::Reply {
                        status,
                        body: &body,
                    }),
                    Err(ReadError::TooLarge(limit)) => classify(&Wire::NoReply {
                        reason: format!("HTTP {status} reply body over {limit} bytes"),
                    }),
                    Err(ReadError::Transport(reason)) => classify(&Wire::NoReply {
                        reason: format!("HTTP {status}, then the body broke off: {reason}"),
                    }),
                }
            }
        };
        (outcome, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vendor_sample_reply() {
        let body = r#"{"codeid":10000,"message":"操作成功!","orderid":"4B629017745K00002946","price":"12.11","curtime":"1629017745","retdata":[]}"#;
        let r = RechargeReply::parse(body.as_bytes()).unwrap();
        assert_eq!(r.codeid, 10000);
        assert_eq!(r.message, "操作成功!");
        assert_eq!(r.orderid.as_deref(), Some("4B629017745K00002946"));
        assert_eq!(r.price, Some(Fen(1211)));
        assert_eq!(r.curtime, Some(1629017745));
    }

    #[test]
    fn accepts_numbers_as_strings_and_the_reverse() {
        let r = RechargeReply::parse(
            br#"{"codeid":"10023","price":12.11,"curtime":1629017745,"orderid":123}"#,
        )
        .unwrap();
        assert_eq!(r.codeid, 10023);
        assert_eq!(r.price, Some(Fen(1211)));
        assert_eq!(r.orderid.as_deref(), Some("123"));
        let r = RechargeReply::parse(br#"{"codeid":10000,"price":15}"#).unwrap();
        assert_eq!(r.price, Some(Fen(1500)));
        let r = RechargeReply::parse(br#"{"codeid":10000,"price":"n/a"}"#).unwrap();
        assert_eq!(r.price, None);
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        let cases: [(&[u8], &str); 5] = [
            (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
            (br#"{"codeid":10000,"mess"#, "not JSON"),
            (br#"{"codeid":"abc"}"#, "codeid"),
            (br#"[10000]"#, "not an object"),
            (b"", "not JSON"),
        ];
        for (body, needle) in cases {
            let e = RechargeReply::parse(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }
}
