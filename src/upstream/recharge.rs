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

use super::outcome::{Outcome, OutcomeClass, Wire, classify};
pub use super::reply::{RechargeReply, ReplyError};
use super::{ReadError, VendorClock, read_capped, wire_of_error};
use crate::model::HttpMethod;
use crate::model::sign::{SIGN_FIELD, Signer};

/// A recharge reply larger than this is not a reply.
pub(crate) const MAX_REPLY_BYTES: usize = 1 << 20;

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
pub(crate) const MAX_RESEND_SKEW: i64 = 3600;

/// Sends signed recharge requests to one vendor application.
#[derive(Debug, Clone)]
pub struct RechargeClient {
    http: reqwest::Client,
    endpoint: Arc<RechargeEndpoint>,
    clock: Arc<VendorClock>,
}

impl RechargeClient {
    /// A client for `endpoint`, sharing `http` (its connection pool) and
    /// `clock` (the offset learned from 10004 replies).
    pub fn new(http: reqwest::Client, endpoint: RechargeEndpoint, clock: Arc<VendorClock>) -> Self {
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
    pub(crate) fn signed_params(&self, req: &RechargeRequest<'_>) -> Vec<(String, String)> {
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
