//! The runtime on its own: a real Lua state, real scripts on disk, a real
//! store for `vipd.kv`; no engine.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::engine::events::{Event, EventKind};
use crate::ledger::Ledger;

struct Fixture {
    dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn config(dir: &Path, plugins: &str) -> Config {
    let text = format!(
        r#"
daemon: {{ scripts_dir: ./scripts }}
providers:
  qq: {{ kind: qq_connect, base_url: "http://127.0.0.1:1", oauth_consumer_key: "1", client_secret: app-secret-xyz }}
  wapi: {{ kind: recharge, base_url: "http://127.0.0.1:1", appid: "1", secret: "{SECRET}" }}
products:
  m: {{ provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }}
accounts:
  - {{ name: alice, qq_number: "5666857", openid: OPENID-A, access_token: token-alice-secret, tags: [staff] }}
plugins:
  {plugins}
"#
    );
    Config::parse(&text, &dir.join("rules.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

impl Fixture {
    fn new(scripts: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        for (name, text) in scripts {
            let path = dir.path().join("scripts").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let ledger = Arc::new(Ledger::open(&dir.path().join("state")).unwrap());
        Fixture { dir, ledger }
    }

    fn load_with(&self, plugins: &str) -> Result<Plugins, LoadErrors> {
        Plugins::load(
            &Arc::new(config(self.dir.path(), plugins)),
            Host::new(Some(self.ledger.clone())),
        )
    }

    fn load(&self) -> Plugins {
        self.load_with("{ timeout: 2s }")
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn event(kind: EventKind) -> Event {
    Event::new(kind, 1_700_000_000, "test").about("alice", "r")
}

/// A script's top-level expression, evaluated in a handler, as a string.
async fn eval(p: &Plugins, kind: EventKind) -> Option<String> {
    let (plugin, f) = &p.handlers.get(&kind)?[0];
    match p.call(plugin, "test", f, Value::Nil).await? {
        Value::String(s) => Some(s.to_string_lossy()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn finalizers_are_refused_and_libraries_are_per_plugin() {
    // A finalizer that loops would run outside every limit.
    let f = Fixture::new(&[(
        "gc.lua",
        "setmetatable({}, { __gc = function() while true do end end })",
    )]);
    let Err(e) = f.load_with("{ timeout: 1s }") else {
        panic!("a __gc metatable was accepted")
    };
    assert!(e.to_string().contains("__gc"), "{e}");
    assert!(e.to_string().contains("gc.lua:1"), "{e}");
    // One plugin replacing string functions, or reaching for the shared
    // string metatable, changes nothing for another.
    let f = Fixture::new(&[
        (
            "a.lua",
            r#"string.format = function() return "pwned" end
local mt = getmetatable("")
assert(mt == "string", tostring(mt))
table.concat = nil"#,
        ),
        (
            "b.lua",
            r#"vipd.on("error", function()
  return string.format("%d", 1) .. ("%d"):format(2) .. table.concat({ "3" })
end)"#,
        ),
    ]);
    let p = f.load();
    assert_eq!(eval(&p, EventKind::Error).await.as_deref(), Some("123"));
}

#[tokio::test]
async fn pattern_matching_cannot_run_past_the_limits() {
    // `a*b` on 100,000 "a"s is 5e9 matcher steps in C (about 8 s here),
    // where the instruction hook never fires: without the guard the
    // handler ends long after its 1 s timeout.
    let f = Fixture::new(&[(
        "p.lua",
        r#"vipd.on("error", function()
  local s = ("a"):rep(100000)
  local ok, e = pcall(string.find, s, "a*b")
  local ok2, e2 = pcall(function() local r = s:gsub(".-.-b", ""); return r end)
  -- Linear work on the same string still runs: plain search, a trailing
  -- quantifier, an anchored match.
  local plain = s:find("a*b", 1, true)
  local n = select(2, (s .. " x"):gsub("%s+", ""))
  local m = s:match("^(a+)$")
  return tostring(ok) .. "|" .. e .. "|" .. tostring(ok2) .. "|" .. e2 .. "|"
    .. tostring(plain) .. "|" .. n .. "|" .. #m
end)"#,
    )]);
    let p = f.load_with("{ timeout: 1s }").unwrap();
    let started = Instant::now();
    let out = eval(&p, EventKind::Error).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(parts[0], "false", "{out}");
    assert!(
        parts[1].contains("string.find: pattern \"a*b\" on a 100000-byte string"),
        "{out}"
    );
    assert_eq!(parts[2], "false", "{out}");
    // At the plugin's own line, as the library's errors are.
    assert!(
        parts[3].starts_with("p.lua:4: string.gsub: pattern \".-.-b\""),
        "{out}"
    );
    assert_eq!(&parts[4..], ["nil", "1", "100000"], "{out}");
}

#[tokio::test]
async fn kv_writes_stop_at_the_plugins_quota() {
    // Without a quota this loop wrote 1.1 GB in 10 s.
    let f = Fixture::new(&[(
        "fill.lua",
        r#"vipd.on("error", function()
  local big = ("x"):rep(60000)
  for i = 1, 100000 do
    local ok, e = pcall(vipd.kv.set, "k" .. i, big)
    if not ok then return i .. "|" .. tostring(e) end
  end
  return "no limit"
end)"#,
    )]);
    let p = f.load_with("{ timeout: 5s, kv_mb: 1 }").unwrap();
    let out = eval(&p, EventKind::Error).await.unwrap();
    let (n, e) = out.split_once('|').unwrap_or_else(|| panic!("{out}"));
    // 1 MiB holds 17 values of 60,000 bytes.
    assert_eq!(n, "18", "{out}");
    assert!(e.contains("vipd.kv.set(\"k18\")"), "{e}");
    assert!(e.contains("quota is 1048576 (plugins.kv_mb)"), "{e}");
}

#[tokio::test]
async fn sandbox_escapes_fail() {
    // Each probe returns "blocked" when the escape fails, anything else
    // when it works.
    let probes = [
        "io",
        "debug",
        "package",
        "dofile",
        "loadfile",
        "rawset",
        "string.dump",
        "os.execute",
        "os.getenv",
        "os.exit",
        "os.remove",
        "os.rename",
        "os.tmpname",
        "require",
    ];
    let mut script = String::from("local results = {}\n");
    for p in probes {
        let access = match p {
            "require" => "require('../../etc/passwd')".to_owned(),
            other => other.to_owned(),
        };
        script += &format!(
            "do local ok, v = pcall(function() return {access} end)\n  results[{p:?}] = (ok and v ~= nil) and 'OPEN' or 'blocked' end\n"
        );
    }
    script += r#"
-- bytecode: load refuses binary chunks even when asked for them
do
  local ok, f = pcall(load, "\27Lua\84\0\25\147\13\10\26\10", "bin", "b")
  results["load(binary)"] = (ok and f) and 'OPEN' or 'blocked'
end
-- the real globals of the state are not reachable through load's env
do
  local f = load("return io")
  results["load env"] = (f and f() ~= nil) and 'OPEN' or 'blocked'
end
-- collectgarbage cannot stop the collector
do
  local ok = pcall(collectgarbage, "stop")
  results["collectgarbage stop"] = ok and 'OPEN' or 'blocked'
end
-- the string metatable (hidden) does not lead to a dump function
do
  local ok, d = pcall(function() return getmetatable("").__index.dump end)
  results["string mt dump"] = (ok and d ~= nil) and 'OPEN' or 'blocked'
end
-- vipd.config is read-only
do
  local ok = pcall(function() vipd.config.timezone = "x" end)
  results["config write"] = ok and 'OPEN' or 'blocked'
  local ok2 = pcall(setmetatable, vipd.config, {})
  results["config setmetatable"] = ok2 and 'OPEN' or 'blocked'
end
vipd.on("error", function()
  local open = {}
  for k, v in pairs(results) do if v ~= 'blocked' then open[#open + 1] = k end end
  table.sort(open)
  return table.concat(open, ",")
end)
"#;
    let f = Fixture::new(&[("escape.lua", &script)]);
    let p = f.load();
    assert_eq!(
        eval(&p, EventKind::Error).await.as_deref(),
        Some(""),
        "escapes that worked"
    );
}

#[tokio::test]
async fn require_stays_inside_scripts_dir() {
    let f = Fixture::new(&[
        (
            "lib/util.lua",
            "return { twice = function(x) return 2 * x end, plugin = vipd.plugin }",
        ),
        (
            "main.lua",
            r#"
local util = require("lib.util")
assert(require("lib.util") == util, "modules are cached")
vipd.on("error", function() return tostring(util.twice(21)) .. " " .. util.plugin end)
"#,
        ),
    ]);
    let p = f.load();
    assert_eq!(p.names(), ["main"], "modules in subfolders are not plugins");
    assert_eq!(eval(&p, EventKind::Error).await.as_deref(), Some("42 main"));
}

#[tokio::test]
async fn runaway_handlers_are_stopped_by_the_limit_they_pass() {
    let f = Fixture::new(&[(
        "bad.lua",
        r#"
vipd.on("error", function() while true do end end)
vipd.on("order_unknown", function()
  -- hides the loop in a coroutine and a pcall
  local co = coroutine.wrap(function() while true do pcall(function() while true do end end) end end)
  co()
end)
vipd.on("renewal_unverified", function()
  while true do coroutine.resume(coroutine.create(function() while true do end end)) end
end)
vipd.on("budget_exceeded", function()
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
end)
vipd.on("provider_paused", function() return "still fine" end)
"#,
    )]);
    let p = f
        .load_with("{ timeout: 2s, instructions: 5000000, memory_mb: 16 }")
        .unwrap();
    for kind in [
        EventKind::Error,
        EventKind::OrderUnknown,
        EventKind::RenewalUnverified,
        EventKind::BudgetExceeded,
    ] {
        let t = Instant::now();
        assert_eq!(eval(&p, kind).await, None, "{kind:?} was not stopped");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{kind:?} took {:?}",
            t.elapsed()
        );
    }
    let stats = p.host.stats.snapshot()["bad"];
    assert_eq!(stats.instruction_limit, 3, "{stats:?}");
    assert_eq!(stats.memory_limit, 1, "{stats:?}");
    // The state still works after all that.
    assert_eq!(
        eval(&p, EventKind::ProviderPaused).await.as_deref(),
        Some("still fine")
    );
}

#[tokio::test]
async fn a_handler_waiting_on_io_is_stopped_by_the_time_limit() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let script = format!(
        "vipd.on('error', function() return vipd.http.get('http://{addr}/hang', {{ timeout = 30 }}).status end)"
    );
    let f = Fixture::new(&[("slow.lua", &script)]);
    // A local server: plugins reach loopback only where allowed.
    let p = f
        .load_with(&format!("{{ timeout: 1s, http_allow: [\"{addr}\"] }}"))
        .unwrap();
    let t = Instant::now();
    assert_eq!(eval(&p, EventKind::Error).await, None);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(p.host.stats.snapshot()["slow"].time_limit, 1);
}

#[tokio::test]
async fn a_failing_handler_does_not_stop_the_next() {
    let f = Fixture::new(&[
        (
            "a_fails.lua",
            "vipd.on('order_settled', function(ev) error('boom for ' .. ev.account) end)",
        ),
        (
            "b_counts.lua",
            "vipd.on('order_settled', function(ev) vipd.kv.incr('seen') end)",
        ),
    ]);
    let p = f.load();
    p.deliver(&event(EventKind::OrderSettled)).await;
    p.deliver(&event(EventKind::OrderSettled)).await;
    assert_eq!(
        f.ledger.kv_get("b_counts", "seen", 0).unwrap(),
        Some(2.into())
    );
    let stats = p.host.stats.snapshot();
    assert_eq!(stats["a_fails"].errors, 2);
    assert_eq!(stats["b_counts"].errors, 0);
}

#[test]
fn load_errors_name_the_script_and_line() {
    let f = Fixture::new(&[
        ("a_ok.lua", "vipd.on('error', function() end)"),
        ("b_syntax.lua", "local x = 1\nlocal y = = 2\n"),
        ("c_runtime.lua", "\n\nlocal t = nil\nprint(t.x)\n"),
        ("d_event.lua", "vipd.on('recharge_reslt', function() end)"),
        ("e_io.lua", "vipd.kv.set('k', 1)"),
        ("f_loop.lua", "while true do end"),
    ]);
    let errors = f
        .load_with("{ timeout: 1s, instructions: 1000000 }")
        .unwrap_err()
        .0;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 5, "{shown:#?}");
    assert_eq!(errors[0].line, Some(2), "{shown:#?}");
    assert!(shown[0].contains("b_syntax.lua:2:"), "{shown:#?}");
    assert_eq!(errors[1].line, Some(4), "{shown:#?}");
    // The location once, not `c_runtime.lua:4: c_runtime.lua:4:`.
    for (s, n) in [
        (&shown[0], "b_syntax.lua:2:"),
        (&shown[1], "c_runtime.lua:4:"),
    ] {
        let first = s.lines().next().unwrap();
        assert_eq!(first.matches(n).count(), 1, "{s}");
    }
    assert!(
        shown[2].contains("did you mean \"recharge_result\""),
        "{shown:#?}"
    );
    assert!(
        shown[3].contains("not while the plugin loads"),
        "{shown:#?}"
    );
    assert!(
        shown[4].contains("instruction limit exceeded"),
        "{shown:#?}"
    );
}

#[tokio::test]
async fn a_runtime_error_is_reported_with_its_line_and_traceback() {
    let f = Fixture::new(&[(
        "trace.lua",
        "local function inner(ev)\n  return ev.nothing.field\nend\nvipd.on('error', function(ev) local r = inner(ev); return r end)\n",
    )]);
    let p = f.load();
    let (plugin, func) = &p.handlers[&EventKind::Error][0];
    let arg = api::lua_value(&p.lua, &event(EventKind::Error)).unwrap();
    let run = async {
        let thread = p.lua.create_thread(func.clone())?;
        thread.into_async::<Value>(arg)?.await
    };
    let e = run.await.unwrap_err();
    let text = describe_error(&e);
    assert!(text.contains("trace.lua:2:"), "{text}");
    assert!(text.contains("traceback"), "{text}");
    assert!(text.contains("trace.lua:4"), "{text}");
    // And `call` counts it against the plugin.
    let arg = api::lua_value(&p.lua, &event(EventKind::Error)).unwrap();
    assert_eq!(p.call(plugin, "error", func, arg).await, None);
    assert_eq!(p.host.stats.snapshot()["trace"].errors, 1);
}

mod host;
