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

mod engine;
mod events;
mod json;
mod kv;
mod log;
mod net;
mod sign;

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
pub(crate) fn lua_value<T: serde::Serialize>(lua: &Lua, v: &T) -> mlua::Result<Value> {
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
    events::register(lua, &vipd, ctx)?;
    sign::register(lua, &vipd, ctx)?;
    engine::register(lua, &vipd, ctx)?;
    net::register(lua, &vipd, ctx)?;
    json::register(lua, &vipd, ctx)?;
    log::register(lua, &vipd, ctx)?;
    kv::register(lua, &vipd, ctx)?;
    put(&vipd, "now", {
        let c = ctx.clone();
        lua.create_function(move |_, ()| Ok(c.host.now()))?
    })?;

    vipd.set("config", config_view.clone())?;
    vipd.set("settings", settings)?;
    vipd.set("plugin", &*ctx.plugin)?;
    Ok(vipd)
}
