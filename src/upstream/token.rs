//! Access-token refresh: `/oauth2.0/token?grant_type=refresh_token`.
//!
//! QQ answers form-encoded (`access_token=...&expires_in=7776000&
//! refresh_token=...`) or JSON, and errors as JSON or JSONP
//! (`callback( {"error":100014,"error_description":"..."} );`). Each
//! refresh token works once: the caller must persist the new pair before
//! using it (the engine does; this module only speaks the protocol).

use std::time::Duration;

use serde_json::Value;

use super::lenient::{int_field, parse_int_text, shorten, text_field};
use super::{ReadError, error_chain, read_capped};
use crate::model::Secret;

/// A token reply larger than this is garbage.
const MAX_REPLY_BYTES: usize = 64 << 10;

/// A fresh token pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshedToken {
    /// The new access token.
    pub access_token: Secret,
    /// How long it is valid.
    pub expires_in: Duration,
    /// The next refresh token; QQ rotates it on every refresh.
    pub refresh_token: Option<Secret>,
}

/// Why a refresh failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The server refused (revoked, expired, wrong client secret).
    #[error("token refresh refused: error {code}: {description}")]
    Refused { code: i64, description: String },
    /// The reply could not be understood.
    #[error("malformed token reply: {0}")]
    Malformed(String),
    /// HTTP status other than 200 without an error body.
    #[error("HTTP {0} from the token endpoint")]
    Status(u16),
    /// The request failed.
    #[error("transport: {0}")]
    Transport(String),
}

/// Parses a token reply in any of the forms QQ uses.
pub(crate) fn parse_token_reply(body: &[u8]) -> Result<RefreshedToken, TokenError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| TokenError::Malformed("reply is not UTF-8".into()))?
        .trim();
    // JSONP: callback( {...} );
    let text = match text.strip_prefix("callback(") {
        Some(rest) => rest
            .trim_end()
            .trim_end_matches(';')
            .trim_end()
            .trim_end_matches(')')
            .trim(),
        None => text,
    };
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| TokenError::Malformed(format!("not JSON: {e}")))?;
        let field = |name: &str| v.get(name);
        if let Some(code) = int_field("error", field("error"))
            .ok()
            .flatten()
            .or_else(|| {
                int_field("ret", field("ret"))
                    .ok()
                    .flatten()
                    .filter(|&r| r != 0)
            })
        {
            let description = text_field(field("error_description"))
                .or_else(|| text_field(field("msg")))
                .unwrap_or_default();
            return Err(TokenError::Refused {
                code,
                description: shorten(&description),
            });
        }
        let expires = int_field("expires_in", field("expires_in"))
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        return build(
            text_field(field("access_token")),
            expires,
            text_field(field("refresh_token")),
        );
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let expires = match get("expires_in") {
        Some(text) => {
            parse_int_text("expires_in", &text).map_err(|e| TokenError::Malformed(e.to_string()))?
        }
        None => None,
    };
    build(get("access_token"), expires, get("refresh_token"))
}

fn build(
    access: Option<String>,
    expires_in: Option<i64>,
    refresh: Option<String>,
) -> Result<RefreshedToken, TokenError> {
    let access = access
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TokenError::Malformed("no access_token in the reply".into()))?;
    let expires_in = expires_in
        .filter(|&s| s > 0)
        .ok_or_else(|| TokenError::Malformed("no positive expires_in in the reply".into()))?;
    Ok(RefreshedToken {
        access_token: Secret::new(access),
        expires_in: Duration::from_secs(expires_in as u64),
        refresh_token: refresh.filter(|s| !s.is_empty()).map(Secret::new),
    })
}

/// Refreshes tokens against one QQ Connect application.
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl TokenClient {
    /// A client for `base_url` (e.g. `https://graph.qq.com`).
    pub fn new(http: reqwest::Client, base_url: &str, timeout: Duration) -> Self {
        TokenClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    /// Trades `refresh_token` for a new pair.
    pub async fn refresh(
        &self,
        client_id: &str,
        client_secret: &Secret,
        refresh_token: &Secret,
    ) -> Result<RefreshedToken, TokenError> {
        let resp = self
            .http
            .get(format!("{}/oauth2.0/token", self.base_url))
            .query(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", client_secret.expose()),
                ("refresh_token", refresh_token.expose()),
            ])
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| TokenError::Transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, MAX_REPLY_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge(_) => TokenError::Malformed(e.to_string()),
                ReadError::Transport(_) => TokenError::Transport(e.to_string()),
            })?;
        match parse_token_reply(&body) {
            Err(TokenError::Malformed(_)) if status != 200 => Err(TokenError::Status(status)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_json_and_string_expiry() {
        let form =
            parse_token_reply(b"access_token=AT1&expires_in=7776000&refresh_token=RT1").unwrap();
        assert_eq!(form.access_token.expose(), "AT1");
        assert_eq!(form.expires_in, Duration::from_secs(7_776_000));
        assert_eq!(form.refresh_token.unwrap().expose(), "RT1");
        let json = parse_token_reply(
            br#"{"access_token":"AT2","expires_in":"3600","refresh_token":"RT2"}"#,
        )
        .unwrap();
        assert_eq!(json.expires_in, Duration::from_secs(3600));
        let json = parse_token_reply(br#"{"access_token":"AT3","expires_in":60}"#).unwrap();
        assert_eq!(json.refresh_token, None);
    }

    #[test]
    fn errors_in_every_dress() {
        let jsonp = br#"callback( {"error":100014,"error_description":"token expired"} );"#;
        assert_eq!(
            parse_token_reply(jsonp),
            Err(TokenError::Refused {
                code: 100014,
                description: "token expired".into()
            })
        );
        let json = br#"{"ret":100015,"msg":"revoked"}"#;
        assert!(matches!(
            parse_token_reply(json),
            Err(TokenError::Refused { code: 100015, .. })
        ));
        for garbage in [
            &b"<html>"[..],
            b"expires_in=abc&access_token=x",
            b"",
            b"{\"access_token\":\"x\"}",
        ] {
            assert!(
                matches!(parse_token_reply(garbage), Err(TokenError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn secrets_stay_masked_in_debug() {
        let t = parse_token_reply(b"access_token=SECRET_AT&expires_in=60&refresh_token=SECRET_RT")
            .unwrap();
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("SECRET_AT") && !dbg.contains("SECRET_RT"),
            "{dbg}"
        );
    }
}
