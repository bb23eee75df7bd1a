//! Membership reads: QQ Connect `get_vip_rich_info` (README "Membership reads").
//!
//! Real replies are inconsistent, so the parser is built around one idea:
//! turn JSON or XML into a flat map of field name to text, then read every
//! field through the same lenient accessors. A number may arrive as a JSON
//! number or a numeric string; `0`, `""` and a missing field all mean
//! "none". The Content-Type is ignored (it says `text/html` for JSON).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::fields::{Fields, FieldsError};
use super::lenient::shorten;
use super::{ReadError, error_chain, read_capped};
use crate::model::Secret;

/// A membership reply larger than this is garbage.
pub(crate) const MAX_REPLY_BYTES: usize = 256 << 10;

/// The membership kinds are domain values, kept in [`crate::model`].
pub use crate::model::{Format, Membership};

/// A payment channel code (`*_payway`), with the seed document's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payway(pub i64);

impl Payway {
    /// The channel's name; unlisted numbers are "other channel".
    pub fn name(self) -> &'static str {
        match self.0 {
            5 => "online bank / tenpay",
            100 => "QQ card",
            101 => "voice service",
            102 => "ESALES",
            103 => "gift from another user",
            104 | 110 => "requested",
            105 => "company promotion",
            106 => "free",
            107 => "telecom card",
            108 => "mobile recharge card",
            109 => "Guangzhou payment",
            111 => "Q points",
            112 => "EPAY",
            113 => "MPAY",
            114 => "prepaid voice service",
            115 => "Paipai",
            116 => "appeal refund",
            117 => "mobile IVR",
            118 => "Q coins / Q points",
            119 => "Q points / Q coins",
            _ => "other channel",
        }
    }
}

impl Serialize for Payway {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Payway", 2)?;
        st.serialize_field("code", &self.0)?;
        st.serialize_field("channel", self.name())?;
        st.end()
    }
}

/// One membership's term. `None` means the API reported none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Term {
    /// Last recharge time, unix seconds.
    pub start: Option<i64>,
    /// Expiry, unix seconds.
    pub end: Option<i64>,
    /// Channel of the last recharge.
    pub payway: Option<Payway>,
}

/// A successful `get_vip_rich_info` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct VipInfo {
    /// `is_lost`: the API's own flag (1 = the data may be incomplete).
    pub is_lost: bool,
    /// Whether the user is a QQ member now.
    pub is_qq_vip: bool,
    /// Whether the user is a yearly QQ member now.
    pub is_qq_year_vip: bool,
    /// Member level, if any.
    pub qq_vip_level: Option<i64>,
    /// Terms, in [`Membership::ALL`] order.
    pub terms: [Term; 5],
    /// Non-members: last recharge time.
    pub history_pay_time: Option<i64>,
    /// Non-members: when that recharge ended.
    pub history_end_time: Option<i64>,
}

impl VipInfo {
    /// The term of one membership.
    pub(crate) fn term(&self, m: Membership) -> &Term {
        &self.terms[m as usize]
    }

    /// The expiry of one membership, if any.
    pub fn end(&self, m: Membership) -> Option<i64> {
        self.term(m).end
    }
}

/// Why a membership read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipInfoError {
    /// The API answered `ret != 0`.
    #[error("{kind} error ret={ret}: {msg}")]
    Api {
        ret: i64,
        msg: String,
        kind: ApiErrorKind,
    },
    /// The body is neither JSON nor XML of the expected shape.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// A field that must be a number is not.
    #[error("malformed reply: field {field} is not a number: {value}")]
    Field { field: String, value: String },
    /// HTTP status other than 200.
    #[error("HTTP {status} from the membership API")]
    Status { status: u16 },
    /// The request failed or the body could not be read.
    #[error("transport: {0}")]
    Transport(String),
}

/// What kind of `ret != 0` this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorKind {
    /// The account's credentials need attention (100013-100016, 1002).
    Token,
    /// Anything else: not the account's fault, try again later.
    Other,
}

impl fmt::Display for ApiErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiErrorKind::Token => "token",
            ApiErrorKind::Other => "API",
        })
    }
}

impl ApiErrorKind {
    /// Token problems: 100013 invalid/revoked, 100014 expired, 100015
    /// revoked by the user, 100016 check failed, 1002 not logged in.
    pub(crate) fn of_ret(ret: i64) -> ApiErrorKind {
        match ret {
            100013..=100016 | 1002 => ApiErrorKind::Token,
            _ => ApiErrorKind::Other,
        }
    }
}

impl From<FieldsError> for VipInfoError {
    fn from(e: FieldsError) -> Self {
        match e {
            FieldsError::Malformed(why) => VipInfoError::Malformed(why),
            FieldsError::Field { field, value } => VipInfoError::Field { field, value },
        }
    }
}

impl VipInfoError {
    /// Whether this read failed because the account's token is bad.
    pub fn is_token_problem(&self) -> bool {
        matches!(
            self,
            VipInfoError::Api {
                kind: ApiErrorKind::Token,
                ..
            }
        )
    }
}

/// Each membership's `_start`, `_end` and `_payway` fields, in
/// [`Membership::ALL`] order.
const TERM_FIELDS: [[&str; 3]; 5] = [
    ["qq_vip_start", "qq_vip_end", "qq_vip_payway"],
    ["qq_year_vip_start", "qq_year_vip_end", "qq_year_vip_payway"],
    [
        "qq_zuanhuang_start",
        "qq_zuanhuang_end",
        "qq_zuanhuang_payway",
    ],
    ["qq_haohua_start", "qq_haohua_end", "qq_haohua_payway"],
    ["qq_svip_start", "qq_svip_end", "qq_svip_payway"],
];

/// Parses a `get_vip_rich_info` reply body, JSON or XML (sniffed from the
/// body, never from a header). `ret != 0` is an [`VipInfoError::Api`].
pub fn parse_vip_info(body: &[u8]) -> Result<VipInfo, VipInfoError> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let trimmed = &body[start..];
    let fields = if trimmed.starts_with(b"<") {
        Fields::from_xml(trimmed)?
    } else {
        Fields::from_json(trimmed)?
    };
    let ret = fields
        .int("ret")?
        .ok_or_else(|| VipInfoError::Malformed("no `ret` field".into()))?;
    if ret != 0 {
        return Err(VipInfoError::Api {
            ret,
            msg: shorten(fields.text("msg").unwrap_or("")),
            kind: ApiErrorKind::of_ret(ret),
        });
    }
    let mut terms = [Term::default(); 5];
    for (term, [start, end, payway]) in terms.iter_mut().zip(TERM_FIELDS) {
        *term = Term {
            start: fields.nonzero(start)?,
            end: fields.nonzero(end)?,
            payway: fields.nonzero(payway)?.map(Payway),
        };
    }
    Ok(VipInfo {
        is_lost: fields.flag("is_lost")?,
        is_qq_vip: fields.flag("is_qq_vip")?,
        is_qq_year_vip: fields.flag("is_qq_year_vip")?,
        qq_vip_level: fields.nonzero("qq_vip_level")?,
        terms,
        history_pay_time: fields.nonzero("history_pay_time")?,
        history_end_time: fields.nonzero("history_end_time")?,
    })
}

/// Reads memberships from one QQ Connect application.
#[derive(Debug, Clone)]
pub struct VipInfoClient {
    http: reqwest::Client,
    /// e.g. `https://graph.qq.com`, no trailing slash.
    base_url: String,
    /// The application id (public, not a secret).
    oauth_consumer_key: String,
    /// json or xml.
    format: Format,
    /// Per-request timeout.
    timeout: Duration,
}

impl VipInfoClient {
    /// A client for one application.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        oauth_consumer_key: &str,
        format: Format,
        timeout: Duration,
    ) -> Self {
        VipInfoClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            oauth_consumer_key: oauth_consumer_key.to_owned(),
            format,
            timeout,
        }
    }

    /// One read of one account's memberships.
    pub async fn fetch(
        &self,
        openid: &str,
        access_token: &Secret,
    ) -> Result<VipInfo, VipInfoError> {
        let url = format!("{}/user/get_vip_rich_info", self.base_url);
        let resp = self
            .http
            .get(&url)
            .query(&[
                ("access_token", access_token.expose()),
                ("oauth_consumer_key", &self.oauth_consumer_key),
                ("openid", openid),
                ("format", self.format.as_str()),
            ])
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| VipInfoError::Transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(VipInfoError::Status { status });
        }
        let body = read_capped(resp, MAX_REPLY_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge(_) => VipInfoError::Malformed(e.to_string()),
                ReadError::Transport(_) => VipInfoError::Transport(e.to_string()),
            })?;
        parse_vip_info(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_fields_are_each_memberships_own() {
        for (m, fields) in Membership::ALL.into_iter().zip(TERM_FIELDS) {
            let p = m.as_str();
            assert_eq!(
                fields,
                [
                    format!("{p}_start"),
                    format!("{p}_end"),
                    format!("{p}_payway")
                ]
            );
        }
    }

    const SEED_JSON: &str = r#"{"ret":0,"msg":"","is_lost":0,"is_qq_vip":1,"is_qq_year_vip":0,
        "qq_vip_level":5,"qq_vip_start":1313974842,"qq_vip_end":1359507642,"qq_vip_payway":111,
        "qq_year_vip_start":1326771509,"qq_year_vip_end":1358912309,"qq_year_vip_payway":0,
        "qq_zuanhuang_start":0,"qq_zuanhuang_end":0,"qq_zuanhuang_payway":0,
        "qq_haohua_start":0,"qq_haohua_end":0,"qq_haohua_payway":0,
        "qq_svip_start":0,"qq_svip_end":0,"qq_svip_payway":0,
        "history_pay_time":0,"history_end_time":0}"#;

    const SEED_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<data><ret>0</ret><msg></msg><is_lost>0</is_lost><is_qq_vip>1</is_qq_vip>
<is_qq_year_vip>0</is_qq_year_vip><qq_vip_level>5</qq_vip_level>
<qq_vip_start>1313974842</qq_vip_start><qq_vip_end>1359507642</qq_vip_end>
<qq_vip_payway>111</qq_vip_payway><qq_year_vip_start>1326771509</qq_year_vip_start>
<qq_year_vip_end>1358912309</qq_year_vip_end><qq_year_vip_payway>0</qq_year_vip_payway>
<qq_zuanhuang_start>0</qq_zuanhuang_start><qq_zuanhuang_end>0</qq_zuanhuang_end>
<qq_zuanhuang_payway>0</qq_zuanhuang_payway><qq_haohua_start>0</qq_haohua_start>
<qq_haohua_end>0</qq_haohua_end><qq_haohua_payway>0</qq_haohua_payway>
<qq_svip_start>0</qq_svip_start><qq_svip_end>0</qq_svip_end><qq_svip_payway>0</qq_svip_payway>
<history_pay_time>0</history_pay_time><history_end_time>0</history_end_time></data>"#;

    fn expected_seed() -> VipInfo {
        let mut terms = [Term::default(); 5];
        terms[0] = Term {
            start: Some(1313974842),
            end: Some(1359507642),
            payway: Some(Payway(111)),
        };
        terms[1] = Term {
            start: Some(1326771509),
            end: Some(1358912309),
            payway: None,
        };
        VipInfo {
            is_lost: false,
            is_qq_vip: true,
            is_qq_year_vip: false,
            qq_vip_level: Some(5),
            terms,
            history_pay_time: None,
            history_end_time: None,
        }
    }

    #[test]
    fn seed_json_and_xml_agree() {
        assert_eq!(
            parse_vip_info(SEED_JSON.as_bytes()).unwrap(),
            expected_seed()
        );
        assert_eq!(
            parse_vip_info(SEED_XML.as_bytes()).unwrap(),
            expected_seed()
        );
    }

    #[test]
    fn strings_missing_and_empty_fields() {
        let body = r#"{"ret":"0","is_qq_vip":"1","qq_vip_level":"5","qq_vip_start":"1313974842",
            "qq_vip_end":"1359507642","qq_vip_payway":"111","qq_year_vip_start":1326771509,
            "qq_year_vip_end":"1358912309","qq_year_vip_payway":"","qq_zuanhuang_end":""}"#;
        assert_eq!(parse_vip_info(body.as_bytes()).unwrap(), expected_seed());
    }

    #[test]
    fn token_errors_are_told_apart() {
        for (ret, token) in [
            (100013, true),
            (100014, true),
            (100015, true),
            (100016, true),
            (1002, true),
            (100030, false),
            (-1, false),
        ] {
            let body = format!(r#"{{"ret":{ret},"msg":"请先登录"}}"#);
            let err = parse_vip_info(body.as_bytes()).unwrap_err();
            assert!(matches!(err, VipInfoError::Api { ret: r, .. } if r == ret));
            assert_eq!(err.is_token_problem(), token, "ret {ret}");
        }
        let err = parse_vip_info(b"<data><ret>100014</ret><msg>expired</msg></data>").unwrap_err();
        assert!(err.is_token_problem());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let cases: [(&[u8], &str); 7] = [
            (b"<html><body>busy</body></html>", "expected <data>"),
            (br#"{"ret":0,"qq_vip_end":13595"#, "not JSON"),
            (br#"{"ret":0,"qq_vip_end":"soon"}"#, "qq_vip_end"),
            (br#"{"ret":0,"qq_vip_end":{"a":1}}"#, "qq_vip_end"),
            (br#"{"msg":"no ret"}"#, "ret"),
            (b"[]", "not an object"),
            (b"<data><ret>0</ret><qq_vip_end>x</qq_vip_end>", "not XML"),
        ];
        for (body, needle) in cases {
            let e = parse_vip_info(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn unknown_xml_tags_are_ignored() {
        let body = b"<data><ret>0</ret><new_field><x>1</x></new_field><qq_vip_end>1359507642</qq_vip_end></data>";
        let info = parse_vip_info(body).unwrap();
        assert_eq!(info.end(Membership::QqVip), Some(1359507642));
    }

    #[test]
    fn payway_names() {
        assert_eq!(Payway(111).name(), "Q points");
        assert_eq!(Payway(5).name(), "online bank / tenpay");
        assert_eq!(Payway(4242).name(), "other channel");
    }
}
