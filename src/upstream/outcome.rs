//! What a recharge attempt means for the ledger (README "The upstream protocol, as built"), as a pure
//! function of what happened on the wire.
//!
//! Every vendor code lands in exactly one [`OutcomeClass`]; so does every
//! way the exchange can break. The one rule that matters most: when the
//! request may have reached the vendor and no parseable reply came back,
//! the order is **possibly billed** ([`OutcomeClass::Unknown`]) and must
//! never be re-sent automatically.

use super::reply::RechargeReply;

/// What happened when a recharge request was attempted.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire<'a> {
    /// The request provably never left this machine: DNS failure,
    /// connection refused, TLS handshake failure, connect timeout.
    NeverSent { reason: String },
    /// The request may have been written, but no reply came back: a
    /// timeout after connecting, a reset, a body cut short.
    NoReply { reason: String },
    /// The vendor answered with this HTTP status and body.
    Reply { status: u16, body: &'a [u8] },
}

pub use crate::model::OutcomeClass;

/// A classified attempt: the class, the parsed reply when there was one,
/// and a one-line reason fit for a log and the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// What it means.
    pub class: OutcomeClass,
    /// The vendor's reply, when one was parsed.
    pub reply: Option<RechargeReply>,
    /// Why, in words: the vendor's message or what broke.
    pub detail: String,
}

/// Classifies one attempt. Pure: no clock, no I/O, no configuration.
///
/// HTTP 5xx is `Unknown` whatever the body says: a proxy or gateway error
/// may follow a request the vendor already processed. Any other status is
/// judged by its body: a parseable `codeid` decides, anything else is
/// `Unknown`.
pub fn classify(wire: &Wire<'_>) -> Outcome {
    match wire {
        Wire::NeverSent { reason } => Outcome {
            class: OutcomeClass::NotSent,
            reply: None,
            detail: format!("request never left: {reason}"),
        },
        Wire::NoReply { reason } => Outcome {
            class: OutcomeClass::Unknown,
            reply: None,
            detail: format!("no reply after the request was sent: {reason}"),
        },
        Wire::Reply { status, .. } if *status >= 500 => Outcome {
            class: OutcomeClass::Unknown,
            reply: None,
            detail: format!("HTTP {status} from the vendor"),
        },
        Wire::Reply { status, body } => match RechargeReply::parse(body) {
            Ok(reply) => Outcome {
                class: OutcomeClass::of_code(reply.codeid),
                detail: format!("codeid {}: {}", reply.codeid, reply.message),
                reply: Some(reply),
            },
            Err(e) => Outcome {
                class: OutcomeClass::Unknown,
                reply: None,
                detail: format!("HTTP {status} with an unparseable reply: {e}"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str) -> String {
        format!(
            r#"{{"codeid":{code},"message":"m","orderid":"O1","price":"12.11","curtime":"1629017745"}}"#
        )
    }

    #[test]
    fn every_vendor_code_has_one_class() {
        use OutcomeClass::*;
        let table: [(i64, OutcomeClass); 26] = [
            (10000, Accepted),
            (10001, Config),
            (10002, Config),
            (10003, Config),
            (10004, Clock),
            (10005, Config),
            (10006, Config),
            (10007, Config),
            (10008, Config),
            (10009, Config),
            (10010, Config),
            (10011, Config),
            (10012, Config),
            (10013, Config),
            (10014, Transient),
            (10015, Config),
            (10016, Rejected),
            (10017, Config),
            (10018, Exhausted),
            (10019, Rejected),
            (10020, Config),
            (10021, Transient),
            (10022, Exhausted),
            (10023, Pending),
            (10024, Debug),
            (10025, Rejected),
        ];
        for (code, class) in table {
            assert_eq!(OutcomeClass::of_code(code), class, "code {code}");
            let b = body(&code.to_string());
            let got = classify(&Wire::Reply {
                status: 200,
                body: b.as_bytes(),
            });
            assert_eq!(got.class, class, "code {code} over the wire");
            assert_eq!(got.reply.unwrap().codeid, code);
            // Same code as a string.
            let b = body(&format!("\"{code}\""));
            assert_eq!(
                classify(&Wire::Reply {
                    status: 200,
                    body: b.as_bytes()
                })
                .class,
                class
            );
        }
        for other in [0, -1, 9999, 10026, 20000] {
            assert_eq!(OutcomeClass::of_code(other), Rejected, "code {other}");
        }
    }

    #[test]
    fn wire_failures() {
        use OutcomeClass::*;
        let cases: Vec<(Wire<'_>, OutcomeClass)> = vec![
            (
                Wire::NeverSent {
                    reason: "connection refused".into(),
                },
                NotSent,
            ),
            (
                Wire::NeverSent {
                    reason: "dns error".into(),
                },
                NotSent,
            ),
            (
                Wire::NeverSent {
                    reason: "tls handshake".into(),
                },
                NotSent,
            ),
            (
                Wire::NoReply {
                    reason: "timed out".into(),
                },
                Unknown,
            ),
            (
                Wire::NoReply {
                    reason: "connection reset".into(),
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 500,
                    body: b"",
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 502,
                    body: br#"{"codeid":10021}"#,
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 200,
                    body: b"<html>oops</html>",
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 200,
                    body: br#"{"codeid":100"#,
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 200,
                    body: br#"{"codeid":"abc"}"#,
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 200,
                    body: br#"{"message":"no code"}"#,
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 404,
                    body: b"not found",
                },
                Unknown,
            ),
            (
                Wire::Reply {
                    status: 403,
                    body: br#"{"codeid":10006}"#,
                },
                Config,
            ),
        ];
        for (wire, class) in cases {
            let got = classify(&wire);
            assert_eq!(got.class, class, "{wire:?}");
            assert!(!got.detail.is_empty());
        }
    }

    #[test]
    fn billing_classes() {
        let billed: Vec<_> = OutcomeClass::ALL
            .into_iter()
            .filter(|c| c.may_be_billed())
            .collect();
        assert_eq!(
            billed,
            [
                OutcomeClass::Accepted,
                OutcomeClass::Pending,
                OutcomeClass::Unknown
            ]
        );
    }
}
