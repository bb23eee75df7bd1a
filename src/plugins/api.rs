//! The host API: the `vipd` table each plugin sees (README "Lua plugins").
//!
//! Every function is registered through [`put`], which takes its
//! documentation from [`API`]; `vipd lua-types` prints the same table, and
//! a test walks a live `vipd` table to check that every function in it is
//! documented and every documented one exists. So the editor types cannot
//! drift from what the runtime offers.
//!
//! Functions that do I/O are async: the handler's coroutine yields and the
//! daemon goes on. They refuse to run while a plugin loads, so loading
//! (including `vipd check` and a reload candidate) has no side effects.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, LuaSerdeExt, SerializeOptions, Table, Value};

use super::{Ctx, Job};
use crate::config::Check;
use crate::engine::events::EventKind;
use crate::units::HumanDuration;

/// One documented host function.
#[derive(Debug)]
pub struct ApiDoc {
    /// Path under `vipd`, e.g. `http.get`.
    pub path: &'static str,
    /// Parameters: name (with `?` when optional) and LuaLS type.
    pub params: &'static [(&'static str, &'static str)],
    /// LuaLS return type, empty for none.
    pub returns: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// Whether it yields (allowed in handlers and jobs only).
    pub is_async: bool,
}

const fn f(
    path: &'static str,
    params: &'static [(&'static str, &'static str)],
    returns: &'static str,
    doc: &'static str,
) -> ApiDoc {
    ApiDoc {
        path,
        params,
        returns,
        doc,
        is_async: false,
    }
}

/// [`f`] for a function that yields.
const fn a(
    path: &'static str,
    params: &'static [(&'static str, &'static str)],
    returns: &'static str,
    doc: &'static str,
) -> ApiDoc {
    let mut d = f(path, params, returns, doc);
    d.is_async = true;
    d
}

/// Every host function, documented.
pub const API: &[ApiDoc] = &[
    f(
        "on",
        &[
            ("event", "vipd.EventName"),
            ("handler", "fun(ev: vipd.Event): any"),
        ],
        "",
        "Registers `handler` for `event` (only while the plugin loads). Handlers run in plugin name order, each as a coroutine with the per-call limits.",
    ),
    f(
        "every",
        &[("schedule", "string"), ("job", "fun()")],
        "",
        "Runs `job` on a schedule: an interval (`\"5m\"`, `\"1h\"`) or a cron expression (5 or 6 fields, in `daemon.timezone`). Only while the plugin loads.",
    ),
    f(
        "sign",
        &[
            ("params", "table<string, string|number>"),
            ("opts", "vipd.SignOpts"),
        ],
        "string",
        "The vendor signature of `params`: with `opts.provider` (the provider's secret, md5 mode only, and only for providers listed in `plugins.sign_with`; the secret never reaches Lua) or with `opts.secret`.",
    ),
    a(
        "vip_info",
        &[("account", "string")],
        "vipd.VipInfo",
        "Reads an account's memberships now (through the reader's rate limit).",
    ),
    a(
        "recharge",
        &[("req", "vipd.RechargeRequest")],
        "vipd.RechargeResult",
        "One renewal, through the ledger and its guards (the same path as `vipd recharge`, rule `manual`). Raises an error when it does not pay.",
    ),
    a(
        "http.request",
        &[("req", "vipd.HttpRequest")],
        "vipd.HttpResponse",
        "An HTTP request. Redirects are not followed; the reply is capped at 1 MiB; `timeout` defaults to 10 s (at most 30 s). Loopback, link-local and the daemon's own listeners are refused unless the `host:port` is listed in `plugins.http_allow`.",
    ),
    a(
        "http.get",
        &[("url", "string"), ("opts?", "vipd.HttpRequest")],
        "vipd.HttpResponse",
        "`vipd.http.request` with method GET.",
    ),
    a(
        "http.post",
        &[
            ("url", "string"),
            ("body", "string|table"),
            ("opts?", "vipd.HttpRequest"),
        ],
        "vipd.HttpResponse",
        "`vipd.http.request` with method POST; a table body is sent as JSON.",
    ),
    f(
        "json.encode",
        &[("value", "any")],
        "string",
        "JSON text of a Lua value (`vipd.json.null` is null).",
    ),
    f(
        "json.decode",
        &[("text", "string")],
        "any",
        "The Lua value of JSON text (null becomes `vipd.json.null`).",
    ),
    f(
        "log.debug",
        &[("msg", "string"), ("fields?", "table")],
        "",
        "Logs at debug level, tagged with the plugin.",
    ),
    f(
        "log.info",
        &[("msg", "string"), ("fields?", "table")],
        "",
        "Logs at info level, tagged with the plugin. `print` does the same.",
    ),
    f(
        "log.warn",
        &[("msg", "string"), ("fields?", "table")],
        "",
        "Logs at warn level, tagged with the plugin.",
    ),
    f(
        "log.error",
        &[("msg", "string"), ("fields?", "table")],
        "",
        "Logs at error level, tagged with the plugin.",
    ),
    f(
        "kv.get",
        &[("key", "string")],
        "any",
        "This plugin's stored value for `key`, or nil (persistent across restarts).",
    ),
    f(
        "kv.set",
        &[
            ("key", "string"),
            ("value", "any"),
            ("opts?", "vipd.KvOpts"),
        ],
        "",
        "Stores `value` (JSON-like, ≤ 64 KiB) under `key`, for `opts.ttl` seconds when given.",
    ),
    f(
        "kv.del",
        &[("key", "string")],
        "boolean",
        "Removes `key`; whether it held a value.",
    ),
    f(
        "kv.incr",
        &[
            ("key", "string"),
            ("by?", "integer"),
            ("opts?", "vipd.KvOpts"),
        ],
        "integer",
        "Atomically adds `by` (default 1) to the integer under `key` (missing counts as 0); `opts.ttl` applies when the key is created.",
    ),
    f(
        "kv.ttl",
        &[("key", "string")],
        "integer?",
        "Seconds until `key` expires; nil when absent; -1 when it never expires.",
    ),
    f("now", &[], "integer", "Unix seconds now."),
];

/// The documentation of the function at `path`.
pub fn doc(path: &str) -> Option<&'static ApiDoc> {
    API.iter().find(|d| d.path == path)
}

/// Sets `f` at `path` (relative to `vipd`) in `table`, which is the table
/// holding its last segment. Panics on an undocumented path: a test runs
/// every registration.
fn put(table: &Table, path: &'static str, f: Function) -> mlua::Result<()> {
    assert!(doc(path).is_some(), "vipd.{path} has no entry in api::API");
    table.set(path.rsplit('.').next().expect("non-empty"), f)
}

fn rt_err(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(msg.into())
}

/// Values Lua sees: `nil` for absent, never the JSON-null sentinel.
pub fn lua_value<T: serde::Serialize>(lua: &Lua, v: &T) -> mlua::Result<Value> {
    lua.to_value_with(
        v,
        SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false),
    )
}

/// A Lua value as JSON (functions and userdata other than null refuse).
fn to_json(lua: &Lua, v: Value, what: &str) -> mlua::Result<serde_json::Value> {
    lua.from_value(v)
        .map_err(|e| rt_err(format!("{what}: cannot be stored as JSON: {e}")))
}

/// Builds the `vipd` table for one plugin.
pub fn build(
    lua: &Lua,
    ctx: &Arc<Ctx>,
    config_view: &Table,
    settings: Value,
) -> mlua::Result<Table> {
    let vipd = lua.create_table()?;
    let http = lua.create_table()?;
    let json = lua.create_table()?;
    let log = lua.create_table()?;
    let kv = lua.create_table()?;

    // vipd.on / vipd.every
    let c = ctx.clone();
    put(
        &vipd,
        "on",
        lua.create_function(move |_, (event, handler): (String, Function)| {
            c.registering(&format!("vipd.on({event:?})"))?;
            let kind = EventKind::lua_named(&event).ok_or_else(|| {
                let hint =
                    crate::config::error::closest(&event, EventKind::LUA.map(|k| k.as_str()))
                        .map(|s| format!("; did you mean {s:?}?"))
                        .unwrap_or_default();
                rt_err(format!("vipd.on({event:?}): no such event{hint}"))
            })?;
            c.shared
                .registry()
                .handlers
                .push((kind, c.plugin.clone(), handler));
            Ok(())
        })?,
    )?;
    let c = ctx.clone();
    put(&vipd, "every", lua.create_function(move |_, (spec, job): (String, Function)| {
        c.registering(&format!("vipd.every({spec:?})"))?;
        let schedule = match HumanDuration::parse(&spec) {
            Ok(d) if d.0 >= Duration::from_secs(1) => Check::Every(d.0),
            Ok(_) => return Err(rt_err(format!("vipd.every({spec:?}): the interval must be at least 1s"))),
            Err(_) => Check::cron(&spec).map_err(|e| {
                rt_err(format!("vipd.every({spec:?}): neither an interval like \"5m\" nor a cron expression: {e}"))
            })?,
        };
        c.shared.registry().jobs.push(Job { plugin: c.plugin.clone(), spec, schedule, func: job });
        Ok(())
    })?)?;

    // vipd.sign
    let c = ctx.clone();
    put(&vipd, "sign", lua.create_function(move |_, (params, opts): (Table, Table)| {
        let mut pairs = Vec::new();
        for pair in params.pairs::<String, Value>() {
            let (k, v) = pair?;
            let v = match v {
                Value::String(s) => s.to_str()?.to_owned(),
                Value::Integer(i) => i.to_string(),
                Value::Number(n) => n.to_string(),
                other => return Err(rt_err(format!("vipd.sign: parameter {k:?} is a {}, not a string or number", other.type_name()))),
            };
            pairs.push((k, v));
        }
        let params = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let secret: Option<mlua::String> = opts.get("secret")?;
        let provider: Option<String> = opts.get("provider")?;
        match (secret, provider) {
            (Some(secret), None) => Ok(crate::model::sign::md5_sign(params, &secret.to_str()?)),
            (None, Some(p)) => {
                let signer = c.shared.signers.get(&p).ok_or_else(|| {
                    rt_err(format!("vipd.sign{{provider = {p:?}}}: no recharge provider of that name"))
                })?.as_ref().ok_or_else(|| {
                    // A plugin that can sign with a provider's secret can
                    // forge that vendor's callbacks.
                    rt_err(format!("vipd.sign{{provider = {p:?}}}: plugins may not sign with this provider's secret; list it in plugins.sign_with to allow it"))
                })?;
                if signer.mode() != crate::model::sign::SignMode::Md5 {
                    return Err(rt_err(format!(
                        "vipd.sign{{provider = {p:?}}}: the provider signs in hash mode, where the signature is the secret itself; it is not given to plugins"
                    )));
                }
                Ok(signer.sign(params))
            }
            _ => Err(rt_err("vipd.sign: give exactly one of opts.provider and opts.secret")),
        }
    })?)?;

    // vipd.vip_info / vipd.recharge
    let c = ctx.clone();
    put(
        &vipd,
        "vip_info",
        lua.create_async_function(move |lua, account: String| {
            let c = c.clone();
            async move {
                let engine = c.engine(&format!("vipd.vip_info({account:?})"))?;
                let info = engine
                    .plugin_vip_info(&account)
                    .await
                    .map_err(|e| rt_err(format!("vipd.vip_info({account:?}): {e}")))?;
                lua_value(&lua, &info)
            }
        })?,
    )?;
    let c = ctx.clone();
    put(&vipd, "recharge", lua.create_async_function(move |lua, req: Table| {
        let c = c.clone();
        let args: mlua::Result<(String, String, bool)> = (|| {
            Ok((req.get("account")?, req.get("product")?, req.get::<Option<bool>>("dry_run")?.unwrap_or(false)))
        })();
        async move {
            let (account, product, dry_run) =
                args.map_err(|e| rt_err(format!("vipd.recharge: needs {{account = string, product = string, dry_run = boolean?}}: {e}")))?;
            let what = format!("vipd.recharge{{account = {account:?}, product = {product:?}}}");
            let engine = c.engine(&what)?;
            let (acct, prod) = (account.clone(), product.clone());
            let message = c
                .on_daemon(async move {
                    engine
                        .manual_recharge(&acct, &prod, dry_run)
                        .await
                        .map_err(|e| rt_err(format!("{what}: {e}")))
                })
                .await?;
            tracing::info!(plugin = %c.plugin, account, product, dry_run, "{message}");
            let out = lua.create_table()?;
            out.set("ok", true)?;
            out.set("message", message)?;
            Ok(out)
        }
    })?)?;

    // vipd.http
    for (path, method) in [
        ("http.request", None),
        ("http.get", Some("GET")),
        ("http.post", Some("POST")),
    ] {
        let c = ctx.clone();
        put(
            &http,
            path,
            lua.create_async_function(move |lua, args: mlua::MultiValue| {
                let c = c.clone();
                let spec = super::http::Spec::from_lua(&lua, method, args);
                async move {
                    let spec = spec?;
                    c.doing_io(&format!("vipd.{path} {}", spec.describe()))?;
                    let allowed = c
                        .shared
                        .destinations
                        .check(spec.url())
                        .map_err(|e| rt_err(format!("vipd.{path} {}: {e}", spec.describe())))?;
                    let client = if allowed {
                        &c.host.http
                    } else {
                        &c.host.guarded
                    };
                    let reply = super::http::send(client, &spec).await.map_err(rt_err)?;
                    reply.into_lua_table(&lua)
                }
            })?,
        )?;
    }

    // vipd.json
    put(
        &json,
        "json.encode",
        lua.create_function(|lua, v: Value| {
            let j = to_json(lua, v, "vipd.json.encode")?;
            serde_json::to_string(&j).map_err(|e| rt_err(format!("vipd.json.encode: {e}")))
        })?,
    )?;
    put(
        &json,
        "json.decode",
        lua.create_function(|lua, text: mlua::String| {
            let j: serde_json::Value = serde_json::from_slice(&text.as_bytes()).map_err(|e| {
                let shown: String = String::from_utf8_lossy(&text.as_bytes())
                    .chars()
                    .take(60)
                    .collect();
                rt_err(format!("vipd.json.decode({shown:?}…): {e}"))
            })?;
            lua.to_value(&j)
        })?,
    )?;
    json.set("null", lua.null())?;

    // vipd.log (and print)
    use tracing::Level;
    for (path, level) in [
        ("log.debug", Level::DEBUG),
        ("log.info", Level::INFO),
        ("log.warn", Level::WARN),
        ("log.error", Level::ERROR),
    ] {
        let plugin = ctx.plugin.clone();
        put(
            &log,
            path,
            lua.create_function(move |lua, (msg, fields): (Value, Option<Value>)| {
                let msg = match msg {
                    Value::String(s) => s.to_string_lossy(),
                    other => other.to_string()?,
                };
                let fields = match fields {
                    Some(v @ Value::Table(_)) => {
                        Some(to_json(lua, v, "vipd.log fields")?.to_string())
                    }
                    _ => None,
                };
                // No `fields=""` on a line that gave none.
                let fields = fields.as_deref();
                let plugin = &*plugin;
                // tracing's macros want the level as a constant.
                match level {
                    Level::DEBUG => {
                        tracing::debug!(target: "vipd::plugin", plugin, fields, "{msg}")
                    }
                    Level::INFO => tracing::info!(target: "vipd::plugin", plugin, fields, "{msg}"),
                    Level::WARN => tracing::warn!(target: "vipd::plugin", plugin, fields, "{msg}"),
                    _ => tracing::error!(target: "vipd::plugin", plugin, fields, "{msg}"),
                }
                Ok(())
            })?,
        )?;
    }

    // vipd.kv
    let c = ctx.clone();
    put(
        &kv,
        "kv.get",
        lua.create_function(move |lua, key: String| {
            let ledger = c.ledger(&format!("vipd.kv.get({key:?})"))?;
            match ledger.kv_get(&c.plugin, &key, crate::model::now_unix()) {
                Ok(Some(v)) => lua.to_value(&v),
                Ok(None) => Ok(Value::Nil),
                Err(e) => Err(rt_err(format!("vipd.kv.get({key:?}): {e}"))),
            }
        })?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.set",
        lua.create_function(
            move |lua, (key, value, opts): (String, Value, Option<Table>)| {
                let what = format!("vipd.kv.set({key:?})");
                let ledger = c.ledger(&what)?;
                let ttl = ttl_of(opts.as_ref(), &what)?;
                let value = to_json(lua, value, &what)?;
                ledger
                    .kv_set(
                        &c.plugin,
                        &key,
                        value,
                        ttl,
                        crate::model::now_unix(),
                        c.kv_quota,
                    )
                    .map_err(|e| rt_err(format!("{what}: {e}")))
            },
        )?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.del",
        lua.create_function(move |_, key: String| {
            let what = format!("vipd.kv.del({key:?})");
            c.ledger(&what)?
                .kv_del(&c.plugin, &key, crate::model::now_unix())
                .map_err(|e| rt_err(format!("{what}: {e}")))
        })?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.incr",
        lua.create_function(
            move |_, (key, by, opts): (String, Option<i64>, Option<Table>)| {
                let what = format!("vipd.kv.incr({key:?})");
                let ttl = ttl_of(opts.as_ref(), &what)?;
                c.ledger(&what)?
                    .kv_incr(
                        &c.plugin,
                        &key,
                        by.unwrap_or(1),
                        ttl,
                        crate::model::now_unix(),
                        c.kv_quota,
                    )
                    .map_err(|e| rt_err(format!("{what}: {e}")))
            },
        )?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.ttl",
        lua.create_function(move |_, key: String| {
            let what = format!("vipd.kv.ttl({key:?})");
            match c
                .ledger(&what)?
                .kv_ttl(&c.plugin, &key, crate::model::now_unix())
            {
                Ok(None) => Ok(None),
                Ok(Some(None)) => Ok(Some(-1)),
                Ok(Some(Some(secs))) => Ok(Some(secs)),
                Err(e) => Err(rt_err(format!("{what}: {e}"))),
            }
        })?,
    )?;

    put(
        &vipd,
        "now",
        lua.create_function(|_, ()| Ok(crate::model::now_unix()))?,
    )?;

    vipd.set("http", http)?;
    vipd.set("json", json)?;
    vipd.set("log", log)?;
    vipd.set("kv", kv)?;
    vipd.set("config", config_view.clone())?;
    vipd.set("settings", settings)?;
    vipd.set("plugin", &*ctx.plugin)?;
    Ok(vipd)
}

fn ttl_of(opts: Option<&Table>, what: &str) -> mlua::Result<Option<i64>> {
    let Some(opts) = opts else { return Ok(None) };
    match opts.get::<Value>("ttl")? {
        Value::Nil => Ok(None),
        Value::Integer(n) if n > 0 => Ok(Some(n)),
        Value::Number(n) if n >= 1.0 => Ok(Some(n as i64)),
        Value::String(s) => HumanDuration::parse(&s.to_str()?)
            .map(|d| Some(d.0.as_secs() as i64))
            .map_err(|e| rt_err(format!("{what}: ttl: {e}"))),
        other => Err(rt_err(format!(
            "{what}: ttl must be seconds (> 0) or a duration like \"1h\", not {other:?}"
        ))),
    }
}
