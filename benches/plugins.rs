//! Plugin dispatch: the cost of delivering one `recharge_result` event to a
//! trivial Lua handler (payload table built, coroutine created, resumed,
//! finished, limits charged), and the memory of a Lua state with the
//! shipped plugins loaded; and the cost of the pattern-matching guard
//! beside bare Lua.
//!
//! `cargo bench --bench plugins`

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use vipd::config::Config;
use vipd::engine::events::{Event, EventKind};
use vipd::ledger::Ledger;
use vipd::plugins::{Host, Plugins};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load(config: &Path, scripts: Option<&Path>, ledger: &Arc<Ledger>) -> Plugins {
    let mut config = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
    if let Some(dir) = scripts {
        config.daemon.scripts_dir = dir.to_owned();
    }
    Plugins::load(&Arc::new(config), Host::new(Some(ledger.clone())))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn event() -> Event {
    let mut ev = Event::new(
        EventKind::RechargeResult,
        1_790_000_000,
        "attempt 1: success: codeid 10000: ok → order succeeded",
    )
    .about("alice", "keep-staff-vip")
    .key("0123456789abcdef0123456789abcdef");
    ev.state = Some("succeeded".into());
    ev.membership = Some("qq_vip".into());
    ev.product = Some("qq_vip_month".into());
    ev.provider = Some("wapi".into());
    ev.old_end = Some(1_790_100_000);
    ev.price = Some(15.0);
    ev.class = Some("success".into());
    ev.codeid = Some(10000);
    ev.message = Some("ok".into());
    ev.attempt = Some(1);
    ev
}

fn bench(c: &mut Criterion) {
    let state = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(state.path()).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    // Memory of the shipped plugins' states.
    for (what, config, scripts) in [
        ("rules.yaml + scripts/", root().join("rules.yaml"), None),
        (
            "examples/plugins.yaml + examples/plugins/ (4 plugins)",
            root().join("examples/plugins.yaml"),
            None,
        ),
        (
            "no plugins (empty state)",
            root().join("rules.yaml"),
            Some(state.path().join("none")),
        ),
    ] {
        let p = load(&config, scripts.as_deref(), &ledger);
        eprintln!(
            "Lua state memory, {what}: {:.1} KiB ({} plugins)",
            p.memory() as f64 / 1024.0,
            p.names().len()
        );
    }

    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(
        scripts.path().join("trivial.lua"),
        "local n = 0\nvipd.on('recharge_result', function(ev) n = n + 1 end)",
    )
    .unwrap();
    let trivial = load(&root().join("rules.yaml"), Some(scripts.path()), &ledger);
    let ev = event();
    c.bench_function("deliver recharge_result to a trivial handler", |b| {
        b.iter(|| runtime.block_on(trivial.deliver(&ev)))
    });
    let shipped = load(&root().join("rules.yaml"), None, &ledger);
    c.bench_function("deliver recharge_result to scripts/activity.lua", |b| {
        b.iter(|| runtime.block_on(shipped.deliver(&ev)))
    });

    // The limits' cost, side by side: the same loop of about 1.2M Lua
    // instructions in a bare state and under the instruction/time hook
    // (which also notes where Lua runs, for memory-limit errors).
    const SPIN: &str = "local n = 0\nfor i = 1, 200000 do n = n + i % 7 end\nreturn n";
    {
        let lua = mlua::Lua::new();
        let f = lua.load(SPIN).into_function().unwrap();
        c.bench_function("a 1.2M-instruction loop, bare Lua", |b| {
            b.iter(|| f.call::<i64>(()).unwrap())
        });
        let lua = mlua::Lua::new();
        vipd::plugins::limits::install(&lua).unwrap();
        let f = lua.load(SPIN).into_function().unwrap();
        let budget =
            vipd::plugins::limits::Budget::new(u64::MAX / 2, std::time::Duration::from_secs(60));
        c.bench_function("a 1.2M-instruction loop, under the limits", |b| {
            b.iter(|| vipd::plugins::limits::with_budget(&budget, || f.call::<i64>(()).unwrap()))
        });
    }

    // The pattern guard's cost, side by side: the same 100 calls in a bare
    // Lua state and in one with the guard installed.
    const LOOP: &str = r#"
local s, t = "order_id=ABC123", ("word "):rep(40)
return function()
  for _ = 1, 25 do
    s:match("^(%w+)=(%w*)$")
    s:find("=", 1, true)
    t:gsub("%s+", " ")
    for _ in t:gmatch("%a+") do end
  end
end"#;
    for guarded in [false, true] {
        let lua = mlua::Lua::new();
        if guarded {
            vipd::plugins::pattern::install(&lua, &lua.globals().get("string").unwrap()).unwrap();
        }
        let f: mlua::Function = lua.load(LOOP).call(()).unwrap();
        let name = if guarded {
            "100 string pattern calls, guarded"
        } else {
            "100 string pattern calls, bare Lua"
        };
        c.bench_function(name, |b| b.iter(|| f.call::<()>(()).unwrap()));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
