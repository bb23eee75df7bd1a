//! The recharge API's reply body, parsed: read by the outcome classes
//! (`outcome`) and carried by the client's attempts (`recharge`).

use serde::Serialize;
use serde_json::Value;

use super::lenient::{int_field, shorten, text_field};
use crate::units::Fen;

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
