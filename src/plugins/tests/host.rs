//! The host API as handlers see it: vetoes and mapped callbacks, the
//! `vipd` functions, `vipd.kv` across stores, secrets kept out, every
//! function documented, `vipd.config` built lazily.

use super::*;

#[tokio::test]
async fn veto_and_parse_callback_answers() {
    let f = Fixture::new(&[
        (
            "a_pass.lua",
            "vipd.on('before_recharge', function(ev) return nil end)",
        ),
        (
            "b_skip.lua",
            "vipd.on('before_recharge', function(ev) if ev.account == 'alice' then return { skip = 'alice is on leave' } end end)",
        ),
        (
            "c_never.lua",
            "vipd.on('before_recharge', function(ev) return false end)",
        ),
        (
            "d_map.lua",
            "vipd.on('parse_callback', function(ev) return { order = ev.fields.oid, status = ev.fields.st == 'OK' and 'success' or 'failed', price = 9.5 } end)",
        ),
    ]);
    let p = f.load();
    let veto = p.veto(&event(EventKind::BeforeRecharge)).await.unwrap();
    assert_eq!(
        (veto.plugin.as_str(), veto.reason.as_str()),
        ("b_skip", "alice is on leave")
    );
    let mut bob = event(EventKind::BeforeRecharge);
    bob.account = Some("bob".into());
    assert_eq!(p.veto(&bob).await.unwrap().plugin, "c_never");
    let mut cb = event(EventKind::ParseCallback);
    cb.fields = Some(
        [
            ("oid".to_owned(), "V1".to_owned()),
            ("st".to_owned(), "OK".to_owned()),
        ]
        .into(),
    );
    let m = p.parse_callback(&cb).await.unwrap();
    assert_eq!(
        (m.order.as_str(), m.success, m.price),
        ("V1", true, Some(9.5))
    );
}

/// A mapped callback whose price is not a number is set aside (the next
/// plugin answers), never read as "no price given".
#[tokio::test]
async fn parse_callback_with_a_mistyped_field_is_set_aside() {
    let f = Fixture::new(&[
        (
            "a_bad.lua",
            "vipd.on('parse_callback', function(ev) return { order = 'V1', status = 'success', price = 'twenty' } end)",
        ),
        (
            "b_good.lua",
            "vipd.on('parse_callback', function(ev) return { order = 'V2', status = 'success', price = 20 } end)",
        ),
    ]);
    let p = f.load();
    let mut cb = event(EventKind::ParseCallback);
    cb.fields = Some([("oid".to_owned(), "V1".to_owned())].into());
    let m = p.parse_callback(&cb).await.unwrap();
    assert_eq!(
        (m.plugin.as_str(), m.order.as_str(), m.price),
        ("b_good", "V2", Some(20.0))
    );
}

#[tokio::test]
async fn host_api_works_in_handlers() {
    let f = Fixture::new(&[(
        "api.lua",
        r#"
vipd.on("error", function()
  local out = {}
  out[#out + 1] = vipd.sign({ b = "2", a = 1 }, { secret = "k" })
  out[#out + 1] = vipd.sign({ b = "2", a = 1 }, { provider = "wapi" })
  local j = vipd.json.decode('{"x":[1,2,null],"y":"z"}')
  out[#out + 1] = tostring(j.x[2]) .. tostring(j.x[3] == vipd.json.null) .. j.y
  out[#out + 1] = vipd.json.encode({ a = 1 })
  vipd.kv.set("n", { deep = { 1, 2 } }, { ttl = "1h" })
  out[#out + 1] = tostring(vipd.kv.get("n").deep[2])
  out[#out + 1] = tostring(vipd.kv.ttl("n") > 3500)
  out[#out + 1] = tostring(vipd.kv.incr("c", 5))
  out[#out + 1] = tostring(vipd.kv.del("c")) .. tostring(vipd.kv.get("c"))
  out[#out + 1] = tostring(vipd.now() > 1700000000)
  out[#out + 1] = vipd.config.accounts[1].name .. "/" .. vipd.config.accounts[1].tags[1]
  out[#out + 1] = tostring(vipd.settings.greeting)
  local ok, err = pcall(vipd.sign, {}, {})
  out[#out + 1] = tostring(err):match("give exactly one") and "sign-err" or tostring(err)
  ok, err = pcall(vipd.http.post, "http://127.0.0.1:1/x", "{}", { sign = "nope" })
  out[#out + 1] = tostring(err):match('no webhook secret named "nope"') and "no-secret" or tostring(err)
  ok, err = pcall(vipd.http.post, "http://127.0.0.1:1/x", "{}", { id = "e1" })
  out[#out + 1] = tostring(err):match("give sign = NAME too") and "id-alone" or tostring(err)
  return table.concat(out, "|")
end)
"#,
    )]);
    let p = f
        .load_with("{ sign_with: [wapi], settings: { api: { greeting: hello } } }")
        .unwrap();
    let got = eval(&p, EventKind::Error).await.unwrap();
    let md5 = |params: &[(&str, &str)], secret: &str| {
        crate::model::sign::md5_sign(params.iter().copied(), secret)
    };
    let expected = [
        md5(&[("a", "1"), ("b", "2")], "k"),
        md5(&[("a", "1"), ("b", "2")], SECRET),
        "2truez".into(),
        r#"{"a":1}"#.into(),
        "2".into(),
        "true".into(),
        "5".into(),
        "truenil".into(),
        "true".into(),
        "alice/staff".into(),
        "hello".into(),
        "sign-err".into(),
        "no-secret".into(),
        "id-alone".into(),
    ]
    .join("|");
    assert_eq!(got, expected);
}

#[tokio::test]
async fn kv_survives_a_new_state_and_a_reopened_store() {
    let f = Fixture::new(&[(
        "count.lua",
        "vipd.on('error', function() return tostring(vipd.kv.incr('runs')) end)",
    )]);
    assert_eq!(
        eval(&f.load(), EventKind::Error).await.as_deref(),
        Some("1")
    );
    assert_eq!(
        eval(&f.load(), EventKind::Error).await.as_deref(),
        Some("2")
    );
    let dir = f.dir.path().join("state");
    drop(f.ledger);
    let ledger = Arc::new(Ledger::open(&dir).unwrap());
    let p = Plugins::load(
        &Arc::new(config(f.dir.path(), "{}")),
        Host::new(Some(ledger)),
    )
    .unwrap();
    assert_eq!(eval(&p, EventKind::Error).await.as_deref(), Some("3"));
}

#[test]
fn secrets_never_reach_lua() {
    let f = Fixture::new(&[(
        "peek.lua",
        r#"
local seen = {}
local function walk(t, depth)
  if depth > 6 then return end
  for k, v in pairs(t) do
    if type(v) == "table" then walk(v, depth + 1) else seen[#seen + 1] = tostring(k) .. "=" .. tostring(v) end
  end
end
walk(vipd.config, 0)
vipd.settings_dump = table.concat(seen, "\n")
vipd.on("error", function() return vipd.settings_dump end)
"#,
    )]);
    let p = f
        .load_with("{ webhook_secrets: { receiver: whsec-never-in-lua-0123 } }")
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, func) = &p.handlers[&EventKind::Error][0];
    let text: String = p
        .lua
        .create_thread(func.clone())
        .unwrap()
        .resume(())
        .unwrap();
    assert!(text.contains("name=alice"), "{text}");
    for secret in [
        SECRET,
        "app-secret-xyz",
        "token-alice-secret",
        "OPENID-A",
        "whsec-never-in-lua",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} visible in vipd.config:\n{text}"
        );
    }
}

#[test]
fn every_host_function_is_documented_and_typed() {
    let f = Fixture::new(&[(
        "walk.lua",
        r#"
local paths = {}
local function walk(t, prefix)
  for k, v in pairs(t) do
    if type(v) == "function" then paths[#paths + 1] = prefix .. k
    elseif type(v) == "table" and k ~= "config" and k ~= "settings" then walk(v, prefix .. k .. ".") end
  end
end
walk(vipd, "")
table.sort(paths)
PATHS = table.concat(paths, " ")
vipd.on("error", function() return PATHS end)
"#,
    )]);
    let p = f.load();
    let (_, func) = &p.handlers[&EventKind::Error][0];
    let live: String = p
        .lua
        .create_thread(func.clone())
        .unwrap()
        .resume(())
        .unwrap();
    let mut documented: Vec<&str> = API.iter().map(|d| d.path).collect();
    documented.sort_unstable();
    assert_eq!(live, documented.join(" "));
    let meta = types::lua_types();
    assert!(meta.starts_with("---@meta"));
    for d in API {
        assert!(
            meta.contains(&format!("function vipd.{}(", d.path)),
            "vipd.{} missing",
            d.path
        );
    }
    for kind in EventKind::LUA {
        assert!(meta.contains(&format!(
            "---@class vipd.event.{}: vipd.Event",
            kind.as_str()
        )));
        assert!(meta.contains(&format!("fun(event: \"{}\"", kind.as_str())));
    }
    for (field, _, _) in crate::engine::events::FIELDS {
        assert!(
            meta.contains(&format!("---@field {field}")),
            "field {field} missing"
        );
    }
}

#[tokio::test]
async fn config_view_is_built_on_first_read() {
    let f = Fixture::new(&[(
        "view.lua",
        r#"
vipd.on("error", function()
  local function kb()
    collectgarbage("collect")
    return collectgarbage("count")
  end
  local out = {}
  local c0 = kb()
  local tz = vipd.config.timezone
  local c1 = kb()
  local accounts = vipd.config.accounts
  local n = #accounts
  local c2 = kb()
  local again = vipd.config.accounts
  local c3 = kb()
  local keys = {}
  for k in pairs(vipd.config) do keys[#keys + 1] = k end
  table.sort(keys)
  out[#out + 1] = tz
  out[#out + 1] = tostring(n) .. " " .. accounts[2001].name .. " " .. accounts[1].tags[1]
  out[#out + 1] = string.format("%s %s %s", c1 - c0 < 8, c2 - c1 > 200, c3 == c2)
  out[#out + 1] = tostring(again == accounts)
  out[#out + 1] = table.concat(keys, ",")
  out[#out + 1] = vipd.config.providers.wapi .. " " .. vipd.config.products.m.max_price
  out[#out + 1] = pcall(function() accounts[1].name = "x" end) and "OPEN" or "blocked"
  return table.concat(out, "|")
end)
"#,
    )]);
    let mut config = config(f.dir.path(), "{ timeout: 2s }");
    // 2,000 more accounts: built, they are a few hundred KB of Lua tables.
    let alice = config.accounts[0].clone();
    for i in 0..2000 {
        let mut a = alice.clone();
        a.name = format!("a{i}");
        config.accounts.push(a);
    }
    let p = Plugins::load(&Arc::new(config), Host::new(Some(f.ledger.clone())))
        .unwrap_or_else(|e| panic!("{e}"));
    let got = eval(&p, EventKind::Error).await.unwrap();
    assert_eq!(
        got,
        [
            "Asia/Shanghai",
            "2001 a1999 staff",
            // Reading the timezone built no accounts; reading `accounts`
            // did, once.
            "true true true",
            "true",
            "accounts,dry_run,products,providers,rules,timezone",
            "recharge 20.0",
            "blocked",
        ]
        .join("|")
    );
}

/// `vipd lua-types` suggested saving its output in scripts/, where it was
/// then loaded as a plugin and failed `check`: `*.d.lua` are skipped.
#[test]
fn declaration_files_are_not_plugins() {
    let f = Fixture::new(&[
        ("a.lua", "vipd.on('error', function() end)"),
        ("vipd.d.lua", "---@meta\nerror('a declaration file ran')"),
    ]);
    let p = f.load();
    assert_eq!(p.names(), ["a"]);
}
