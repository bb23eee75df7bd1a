//! Fuzz entry points: one function per target, each taking raw bytes and
//! asserting what must hold for every input, not only that nothing panics.
//!
//! The `fuzz/` crate runs them under libFuzzer (`cargo +nightly fuzz run
//! TARGET`); `tests/fuzz_corpus.rs` runs every committed seed and every
//! past finding through the same functions on stable, in `cargo test`.
//! Inputs are taken as they would arrive: a callback as a query, a content
//! type and a body; a vendor reply as an HTTP status and a body; a
//! configuration as file text; a plugin as a Lua file.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{Config, Secret};
use crate::engine::events::{Event, EventKind};
use crate::ledger::Ledger;
use crate::model::sign::{SignMode, Signer};
use crate::plugins::pattern::{MAX_WORK, Op, work};
use crate::plugins::{Host, Plugins};
use crate::upstream::outcome::{OutcomeClass, Wire, classify};
use crate::upstream::recharge::RechargeReply;
use crate::upstream::token::parse_token_reply;
use crate::upstream::vipinfo::parse_vip_info;

/// Splits `data` at the first `sep`: (before, after); all of it before
/// when there is none.
fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A callback: byte 0 picks the content type (odd: JSON), then the query
/// string, a NUL, and the body. The fields are flattened as the receiver
/// does; the signature check must accept exactly the right sign, and the
/// freshness check must never panic.
pub fn callback(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = split(rest, 0);
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(uri) = format!("/notify/wapi?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    let mut headers = axum::http::HeaderMap::new();
    let ct = if flags & 1 == 1 {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        ct.parse().expect("static"),
    );
    let Ok(fields) = crate::http::callback_fields(&uri, &headers, body) else {
        return;
    };
    let signer = Signer::new(
        SignMode::Md5,
        Secret::new("0123456789abcdef0123456789abcdef"),
    );
    let pairs = || {
        fields
            .iter()
            .filter(|(k, _)| k != "sign")
            .map(|(k, v)| (k.as_str(), v.as_str()))
    };
    let right = signer.sign(pairs());
    assert!(signer.verify(pairs(), &right), "own sign refused");
    assert!(signer.verify(pairs(), &right.to_ascii_uppercase()));
    // Any other sign is refused: one hex digit changed, or what was sent.
    let mut wrong = right.clone().into_bytes();
    wrong[usize::from(flags) % 32] ^= 1;
    let wrong = String::from_utf8(wrong).expect("hex");
    assert!(!signer.verify(pairs(), &wrong), "a changed sign verified");
    if let Some((_, sent)) = fields.iter().find(|(k, _)| k == "sign") {
        assert_eq!(
            signer.verify(pairs(), sent),
            sent.eq_ignore_ascii_case(&right)
        );
    }
    // A field added changes the sign unless its value is empty (the
    // vendor's rule: empty values are not signed).
    let mut more = pairs().collect::<Vec<_>>();
    more.push(("zz_added", "1"));
    assert!(
        !signer.verify(more.iter().copied(), &right),
        "an added field kept the sign"
    );
    let time = fields
        .iter()
        .find(|(k, _)| k == "time")
        .map(|(_, v)| v.as_str());
    for now in [0, 1_800_000_000, i64::MIN, i64::MAX] {
        let _ = crate::engine::callback::fresh(time, now, 86_400);
    }
}

/// A recharge reply: two bytes of HTTP status (mod 600), then the body.
/// The class follows the status and the parsed `codeid`, and nothing that
/// was not parsed as a billing code is ever taken as one.
pub fn recharge_reply(data: &[u8]) {
    let (status, body) = match data {
        [a, b, body @ ..] => (u16::from_be_bytes([*a, *b]) % 600, body),
        _ => return,
    };
    let outcome = classify(&Wire::Reply { status, body });
    let parsed = RechargeReply::parse(body);
    if status >= 500 {
        assert_eq!(outcome.class, OutcomeClass::Unknown);
        return;
    }
    match parsed {
        Ok(reply) => {
            assert_eq!(outcome.class, OutcomeClass::of_code(reply.codeid));
            assert_eq!(outcome.reply.as_ref(), Some(&reply));
        }
        Err(_) => {
            // Garbage after a request that may have arrived: possibly
            // billed, never resent.
            assert_eq!(outcome.class, OutcomeClass::Unknown);
            assert!(outcome.class.may_be_billed());
        }
    }
    if outcome.class == OutcomeClass::Accepted {
        assert_eq!(outcome.reply.map(|r| r.codeid), Some(10000));
    }
}

/// A `get_vip_rich_info` reply (JSON or XML, sniffed) or a token reply.
/// Parsing is total, and deterministic.
pub fn vip_info(data: &[u8]) {
    let first = parse_vip_info(data);
    let again = parse_vip_info(data);
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
    if let Ok(info) = first {
        for m in crate::upstream::vipinfo::Membership::ALL {
            let _ = info.end(m);
        }
    }
    let _ = parse_token_reply(data);
}

/// A configuration file. Every error names the file; a configuration that
/// builds can be asked for its warnings.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Secrets may name files: relative ones resolve in an empty folder.
    let base = std::env::temp_dir().join("vipd-fuzz-config/rules.yaml");
    match Config::parse(text, &base) {
        Ok(config) => {
            let _ = config.warnings(1_780_000_000);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert_eq!(e.file, base);
                assert!(!e.message.is_empty());
            }
        }
    }
}

/// A pattern call as a plugin makes it: byte 0 picks the function, then
/// the subject, a NUL, and the pattern. Run through the guarded `string`
/// table on the real C matcher: a call the guard lets through must end
/// fast, whatever the pattern (an underestimate would show as a slow
/// input, which libFuzzer reports).
pub fn pattern(data: &[u8]) {
    thread_local! {
        static LUA: (mlua::Lua, mlua::Function) = {
            let lua = mlua::Lua::new();
            let string: mlua::Table = lua.globals().get("string").expect("string");
            crate::plugins::pattern::install(&lua, &string).expect("install");
            let f = lua
                .load(
                    r#"local op, s, p = ...
                       if op == 0 then return pcall(string.find, s, p)
                       elseif op == 1 then return pcall(string.match, s, p)
                       elseif op == 2 then return pcall(function()
                         local n = 0
                         for _ in string.gmatch(s, p) do n = n + 1; if n > 1e6 then break end end
                         return n end)
                       else return pcall(string.gsub, s, p, "x") end"#,
                )
                .into_function()
                .expect("compiles");
            (lua, f)
        };
    }
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let op = op % 4;
    let (subject, pattern) = split(rest, 0);
    let which = [Op::Find, Op::Match, Op::Gmatch, Op::Gsub][usize::from(op)];
    let estimate = work(which, subject.len(), pattern, false);
    LUA.with(|(lua, f)| {
        let s = lua.create_string(subject).expect("memory");
        let p = lua.create_string(pattern).expect("memory");
        let started = Instant::now();
        let (ok, msg): (bool, mlua::Value) = f.call((op, s, p)).expect("pcall");
        let took = started.elapsed();
        let refused = !ok
            && msg
                .as_string()
                .is_some_and(|m| m.to_string_lossy().contains("matcher steps"));
        assert_eq!(
            refused,
            estimate > MAX_WORK,
            "{which:?} estimate {estimate}"
        );
        assert!(
            took < Duration::from_secs(2),
            "{which:?} with an estimate of {estimate} took {took:?}"
        );
    });
}

/// A plugin file: loaded into the real sandbox with small limits, then
/// every handler it registered is called once. Loading and each call must
/// end within their limits and never take the process down.
pub fn lua(data: &[u8]) {
    struct Fixture {
        dir: PathBuf,
        config: Arc<Config>,
        ledger: Arc<Ledger>,
        runtime: tokio::runtime::Runtime,
    }
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    let f = FIXTURE.get_or_init(|| {
        // One folder per process, left behind (fuzzing runs are long and
        // few); a plugin's kv writes land in its store.
        let dir = std::env::temp_dir().join(format!("vipd-fuzz-lua-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("scripts")).expect("scripts");
        let text = r#"
daemon: { scripts_dir: ./scripts }
providers:
  qq: { kind: qq_connect, base_url: "http://127.0.0.1:1", oauth_consumer_key: "1", client_secret: app-secret }
  wapi: { kind: recharge, base_url: "http://127.0.0.1:1", appid: "1", secret: "0123456789abcdef0123456789abcdef" }
products:
  m: { provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }
accounts:
  - { name: alice, qq_number: "5666857", openid: OPENID-A, access_token: token-alice, tags: [staff] }
plugins: { timeout: 500ms, instructions: 2000000, memory_mb: 16, kv_mb: 1 }
"#;
        let config = Config::parse(text, &dir.join("rules.yaml")).expect("fixture config");
        let ledger = Arc::new(Ledger::open(&dir.join("state")).expect("ledger"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Fixture {
            dir,
            config: Arc::new(config),
            ledger,
            runtime,
        }
    });
    let script = f.dir.join("scripts/fuzz.lua");
    std::fs::write(&script, data).expect("write script");
    let started = Instant::now();
    let Ok(plugins) = Plugins::load(&f.config, Host::new(Some(f.ledger.clone()))) else {
        return;
    };
    let mut ev = Event::new(EventKind::RechargeResult, 1_800_000_000, "fuzz")
        .about("alice", "r")
        .key(&"0".repeat(32));
    ev.provider = Some("wapi".into());
    ev.fields = Some(vec![("orderid".into(), "V1".into())].into_iter().collect());
    f.runtime.block_on(async {
        for kind in [
            EventKind::VipInfo,
            EventKind::RechargeResult,
            EventKind::Error,
            EventKind::OrderUnknown,
        ] {
            ev.kind = kind;
            plugins.deliver(&ev).await;
        }
        ev.kind = EventKind::BeforeRecharge;
        let _ = plugins.veto(&ev).await;
        ev.kind = EventKind::ParseCallback;
        let _ = plugins.parse_callback(&ev).await;
    });
    // Load plus six handler calls, each bounded by the 500 ms timeout.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "plugin ran for {took:?}");
}
