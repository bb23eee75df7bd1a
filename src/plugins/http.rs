//! `vipd.http`: plugins' own HTTP requests (chat webhooks and the like),
//! with a timeout, a request and reply size cap, and no redirects.

use std::time::Duration;

use mlua::{Lua, LuaSerdeExt, Table, Value};

/// The biggest reply body a plugin gets.
pub(crate) const MAX_REPLY: usize = 1 << 20;
/// The biggest request body a plugin may send.
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Default and longest timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// One request, read out of Lua before the await.
#[derive(Debug)]
pub(crate) struct Spec {
    method: reqwest::Method,
    url: url::Url,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    json: bool,
    timeout: Duration,
    /// `sign = NAME` (a `plugins.webhook_secrets` entry) and `id`.
    sign: Option<(String, Option<String>)>,
}

/// A reply, to be turned into a Lua table.
#[derive(Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn err(what: &str, msg: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::RuntimeError(format!("{what}: {msg}"))
}

impl Spec {
    /// Reads `vipd.http.request{...}`, `get(url, opts)` or
    /// `post(url, body, opts)` arguments.
    pub(crate) fn from_lua(
        lua: &Lua,
        method: Option<&str>,
        args: mlua::MultiValue,
    ) -> mlua::Result<Spec> {
        let mut args = args.into_iter();
        let (url, body, opts) = match method {
            None => {
                let Some(Value::Table(t)) = args.next() else {
                    return Err(err(
                        "vipd.http.request",
                        "needs a table {method=, url=, headers=, body=, json=, timeout=}",
                    ));
                };
                (
                    t.get::<Option<String>>("url")?,
                    t.get::<Value>("body")?,
                    Some(t),
                )
            }
            Some(m) => {
                let url = match args.next() {
                    Some(Value::String(s)) => Some(s.to_str()?.to_owned()),
                    _ => None,
                };
                let body = if m == "POST" {
                    args.next().unwrap_or(Value::Nil)
                } else {
                    Value::Nil
                };
                let opts = match args.next() {
                    Some(Value::Table(t)) => Some(t),
                    _ => None,
                };
                (url, body, opts)
            }
        };
        let what = format!(
            "vipd.http.{}",
            method.map_or("request", |m| if m == "GET" { "get" } else { "post" })
        );
        let url = url.ok_or_else(|| err(&what, "needs a url"))?;
        let parsed = url::Url::parse(&url)
            .map_err(|e| err(&what, format!("{}: {e}", url_for_logs(&url))))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(err(
                &what,
                format!("{}: only http and https URLs", url_for_logs(&url)),
            ));
        }
        let what = format!("{what} {}", url_for_logs(&url));
        let opt = |k: &str| -> mlua::Result<Value> {
            opts.as_ref().map_or(Ok(Value::Nil), |t: &Table| t.get(k))
        };
        let method = match (method, opt("method")?) {
            (Some(m), _) => m.parse().expect("GET and POST parse"),
            (None, Value::String(s)) => {
                reqwest::Method::from_bytes(s.to_str()?.to_ascii_uppercase().as_bytes())
                    .map_err(|e| err(&what, format!("method: {e}")))?
            }
            (None, Value::Nil) => reqwest::Method::GET,
            (None, other) => {
                return Err(err(
                    &what,
                    format!("method must be a string, not {}", other.type_name()),
                ));
            }
        };
        let mut headers = Vec::new();
        if let Value::Table(h) = opt("headers")? {
            for pair in h.pairs::<String, String>() {
                headers.push(pair.map_err(|e| err(&what, format!("headers: {e}")))?);
            }
        }
        let (body, json) = match (body, opt("json")?) {
            (_, v @ Value::Table(_)) | (v @ Value::Table(_), _) => {
                let j: serde_json::Value = lua
                    .from_value(v)
                    .map_err(|e| err(&what, format!("json body: {e}")))?;
                (
                    Some(serde_json::to_vec(&j).map_err(|e| err(&what, e))?),
                    true,
                )
            }
            (Value::String(s), _) => (Some(s.as_bytes().to_vec()), false),
            (Value::Nil, _) => (None, false),
            (other, _) => {
                return Err(err(
                    &what,
                    format!(
                        "body must be a string or a table, not {}",
                        other.type_name()
                    ),
                ));
            }
        };
        if body.as_ref().is_some_and(|b| b.len() > MAX_BODY) {
            return Err(err(&what, format!("request body over {MAX_BODY} bytes")));
        }
        let timeout = match opt("timeout")? {
            Value::Nil => DEFAULT_TIMEOUT,
            Value::Integer(n) if n > 0 => Duration::from_secs(n as u64),
            Value::Number(n) if n > 0.0 => Duration::from_secs_f64(n),
            Value::String(s) => {
                crate::units::HumanDuration::parse(&s.to_str()?)
                    .map_err(|e| err(&what, format!("timeout: {e}")))?
                    .0
            }
            other => {
                return Err(err(
                    &what,
                    format!("timeout must be seconds or a duration, not {other:?}"),
                ));
            }
        }
        .min(MAX_TIMEOUT);
        let sign = match (opt("sign")?, opt("id")?) {
            (Value::Nil, Value::Nil) => None,
            (Value::String(name), id) => {
                let id = match id {
                    Value::Nil => None,
                    Value::String(s) if !s.as_bytes().is_empty() && s.as_bytes().len() <= 200 => {
                        Some(s.to_str()?.to_owned())
                    }
                    other => {
                        return Err(err(
                            &what,
                            format!("id must be a string of 1 to 200 bytes, not {other:?}"),
                        ));
                    }
                };
                Some((name.to_str()?.to_owned(), id))
            }
            (Value::Nil, _) => {
                return Err(err(
                    &what,
                    "id is sent with a signature: give sign = NAME too",
                ));
            }
            (other, _) => {
                return Err(err(
                    &what,
                    format!(
                        "sign must name a plugins.webhook_secrets entry, not {}",
                        other.type_name()
                    ),
                ));
            }
        };
        Ok(Spec {
            method,
            url: parsed,
            headers,
            body,
            json,
            timeout,
            sign,
        })
    }

    /// The `plugins.webhook_secrets` entry it asks to be signed with.
    pub(crate) fn signed_with(&self) -> Option<&str> {
        self.sign.as_ref().map(|(name, _)| name.as_str())
    }

    /// Signs it at `t` (unix seconds) with `secret`: the `vipd-signature`
    /// and `vipd-event-id` headers (the plugin's id, else a new one), over
    /// the body exactly as it is sent. Returns the event id.
    pub fn sign(&mut self, secret: &crate::model::Secret, t: i64) -> String {
        use crate::model::webhook;
        let id = self
            .sign
            .as_ref()
            .and_then(|(_, id)| id.clone())
            .unwrap_or_else(webhook::new_event_id);
        let body = self.body.as_deref().unwrap_or_default();
        let signature = webhook::signature(secret.expose().as_bytes(), t, body);
        self.headers.retain(|(k, _)| {
            !k.eq_ignore_ascii_case(webhook::SIGNATURE_HEADER)
                && !k.eq_ignore_ascii_case(webhook::EVENT_ID_HEADER)
        });
        self.headers
            .push((webhook::SIGNATURE_HEADER.to_owned(), signature));
        self.headers
            .push((webhook::EVENT_ID_HEADER.to_owned(), id.clone()));
        id
    }

    /// Where it goes.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// Method and URL without its query, for errors and logs.
    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.method, url_for_logs(self.url.as_str()))
    }
}

/// Sends `spec`; errors name the method and URL (without the query).
pub async fn send(http: &reqwest::Client, spec: &Spec) -> Result<Reply, String> {
    let what = format!("vipd.http {}", spec.describe());
    let mut req = http
        .request(spec.method.clone(), spec.url.clone())
        .timeout(spec.timeout);
    if spec.json {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in &spec.headers {
        req = req.header(k, v);
    }
    if let Some(body) = &spec.body {
        req = req.body(body.clone());
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("{what}: timed out after {:?}", spec.timeout)
        } else {
            format!("{what}: {}", crate::upstream::error_chain(&e))
        }
    })?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = crate::upstream::read_capped(resp, MAX_REPLY)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

impl Reply {
    /// `200` with an empty body: what `vipd test` answers in place of a
    /// receiver.
    pub fn accepted() -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `{status=, headers=, body=, json=}`; `json` when the body parses.
    pub(crate) fn into_lua_table(self, lua: &Lua) -> mlua::Result<Table> {
        let t = lua.create_table()?;
        t.set("status", self.status)?;
        t.set("ok", (200..300).contains(&self.status))?;
        let h = lua.create_table()?;
        for (k, v) in self.headers {
            h.set(k, v)?;
        }
        t.set("headers", h)?;
        if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            t.set("json", lua.to_value(&j)?)?;
        }
        t.set("body", lua.create_string(&self.body)?)?;
        Ok(t)
    }
}

/// A URL as it may appear in errors and logs: without its query, which
/// often holds a webhook key.
pub(crate) fn url_for_logs(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}
