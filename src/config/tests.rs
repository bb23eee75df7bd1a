//! The configuration's tests: valid files, every kind of error with its
//! location, warnings, defaults and lookups.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::units::Fen;

const GOOD: &str = r#"
daemon: { sandbox: true }
providers:
  qq: { kind: qq_connect, base_url: "https://graph.qq.com", oauth_consumer_key: 101234567 }
  wapi:
    kind: recharge
    base_url: https://vendor.example/
    appid: 1
    secret: "0123456789abcdef0123456789abcdef"
products:
  qq_vip_month: { provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }
accounts:
  - { name: alice, qq_number: 5666857, openid: OPENID1, access_token: tok, tags: [staff] }
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("rules.yaml"))
}

/// The defaults the schema states are the ones the configuration
/// applies: a file with every stated default written out builds the
/// same configuration as one that leaves them out.
#[test]
fn the_schemas_defaults_are_the_ones_applied() {
    if std::env::var_os("STATE_DIRECTORY").is_some() {
        return;
    }
    let schema: serde_json::Value = serde_json::from_str(&schema()).unwrap();
    let defs = &schema["$defs"];
    let text = format!(
        "{GOOD}rules:\n  - {{ name: keep, accounts: all, check: {{ every: 1h }}, membership: qq_vip, renew_before: 3d, product: qq_vip_month }}\n"
    );
    let mut doc: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    let provider = |kind: &str| {
        defs["RawProvider"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["properties"]["kind"]["const"] == kind)
            .unwrap()
            .clone()
    };
    let fill = |obj: &mut serde_json::Value, def: &str| {
        let node = match def {
            "RawQqConnect" => provider("qq_connect"),
            "RawRecharge" => provider("recharge"),
            _ => defs[def].clone(),
        };
        let props = node["properties"].as_object().unwrap();
        let mut filled = 0;
        for (k, v) in props {
            if let Some(d) = v.get("default")
                && obj.get(k).is_none()
            {
                obj[k] = d.clone();
                filled += 1;
            }
        }
        assert!(filled > 0, "{def}: no default filled");
    };
    // The root's own sections are inline in the root schema.
    let root_props = schema["properties"].as_object().unwrap();
    assert!(root_props.contains_key("daemon"));
    fill(&mut doc["daemon"], "RawDaemon");
    fill(&mut doc["providers"]["qq"], "RawQqConnect");
    doc["providers"]["wapi"]["callback"] = serde_json::json!({});
    fill(&mut doc["providers"]["wapi"]["callback"], "RawCallback");
    fill(&mut doc["providers"]["wapi"], "RawRecharge");
    fill(&mut doc["rules"][0], "RawRule");
    doc["plugins"] = serde_json::json!({});
    fill(&mut doc["plugins"], "RawPlugins");
    doc["sandbox"] = serde_json::json!({});
    fill(&mut doc["sandbox"], "RawSandbox");
    let explicit = yaml_serde::to_string(&doc).unwrap();
    let implicit = format!("{:?}", parse(&text).unwrap());
    let explicit = format!("{:?}", parse(&explicit).unwrap());
    assert_eq!(implicit, explicit);
}

/// Paths beside a configuration in the current folder printed as
/// `././state`.
#[test]
fn paths_beside_the_file_have_no_dot_components() {
    if std::env::var_os("STATE_DIRECTORY").is_some() {
        return;
    }
    let c = parse(&GOOD.replace(
        "daemon: { sandbox: true }",
        "daemon: { sandbox: true, state_dir: ./state }",
    ))
    .unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("state"));
    assert_eq!(c.daemon.scripts_dir, Path::new("scripts"));
    let c = Config::parse(GOOD, Path::new("/etc/vipd/./rules.yaml")).unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("/etc/vipd/state"));
}

/// 100,000 nested brackets took 126 s before the parser's recursion
/// limit refused them (its flow-level bookkeeping is quadratic); they
/// are refused before parsing, at the bracket past the limit.
#[test]
fn deep_nesting_is_refused_before_parsing() {
    let d = 100_000;
    let text = format!(
        "{GOOD}plugins:\n  settings:\n    x: {}{}\n",
        "[".repeat(d),
        "]".repeat(d)
    );
    let e = parse(&text).unwrap_err().to_string();
    let line = GOOD.lines().count() + 3;
    assert_eq!(
        e,
        format!(
            "rules.yaml:{line}:{}: brackets nested more than 128 deep; refused before parsing",
            8 + 128
        )
    );
    // 128 deep is the parser's own business (its recursion limit).
    let text = format!(
        "{GOOD}plugins:\n  settings:\n    x: {}{}\n",
        "[".repeat(20),
        "]".repeat(20)
    );
    parse(&text).unwrap();
}

/// Found by the config fuzz target (fuzz/regressions/config/): an
/// empty key made the error locator loop forever.
#[test]
fn an_empty_key_is_an_error_not_a_hang() {
    for text in ["\"\" : 1\n", "&a: 1\n", "daemon: { \"\" : 1 }\n"] {
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.contains("unknown field ``") || e.contains("a top-level key must be text"),
            "{text}: {e}"
        );
    }
}

#[test]
fn good_config_builds() {
    let c = parse(GOOD).unwrap();
    let Provider::Recharge(w) = &c.providers["wapi"] else {
        panic!()
    };
    assert_eq!(w.base_url, "https://vendor.example");
    assert_eq!(w.appid, "1");
    assert_eq!(w.max_in_flight, 8);
    assert_eq!(c.products["qq_vip_month"].max_price, Fen(2000));
    assert_eq!(
        c.products["qq_vip_month"].adds,
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(c.accounts[0].provider, "qq");
    assert_eq!(c.accounts[0].qq_number, "5666857");
    assert_eq!(c.daemon.public_url, None);
    assert_eq!(c.daemon.callback_listen.port(), 9611);
    assert_eq!(
        c.literal_secrets,
        ["providers.wapi.secret", "accounts.alice.access_token"]
    );
}

#[test]
fn unknown_keys_suggest_and_locate() {
    let text = GOOD.replace("    appid: 1\n", "    appid: 1\n    secert: x\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.starts_with("rules.yaml:"), "{e}");
    assert!(
        e.contains("unknown field `secert`") && e.contains("did you mean `secret`?"),
        "{e}"
    );
}

#[test]
fn validation_names_entry_and_line() {
    let text = GOOD.replace("provider: wapi,", "provider: wpai,");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("product qq_vip_month: no provider named wpai (did you mean `wapi`?)"),
        "{e}"
    );
    assert!(e.starts_with("rules.yaml:11:"), "{e}");
}

#[test]
fn missing_env_secret_names_the_variable_not_a_value() {
    let text = GOOD.replace(
        "\"0123456789abcdef0123456789abcdef\"",
        "\"${env:VIPD_TEST_SURELY_UNSET_42}\"",
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains(
            "provider wapi: secret: environment variable VIPD_TEST_SURELY_UNSET_42 is not set"
        ),
        "{e}"
    );
}

const RULE: &str = r#"
rules:
  - name: keep
    accounts: { tags: [staff] }
    check: "*/10 * * * *"
    membership: qq_vip
    renew_before: 3d
    product: qq_vip_month
    budget: { per_day: 500, per_month: "3000.50" }
"#;

#[test]
fn rules_build_with_defaults() {
    let c = parse(&format!("{GOOD}{RULE}")).unwrap();
    let r = &c.rules[0];
    assert_eq!(r.accounts, [Arc::from("alice")]);
    assert_eq!(r.max_attempts, 3);
    assert_eq!(r.verify_within, Duration::from_secs(3600));
    assert_eq!(r.when_lapsed, WhenLapsed::Renew);
    assert_eq!(r.budget.per_month, Some(Fen(300_050)));
    assert_eq!(c.daemon.timezone, chrono_tz::Asia::Shanghai);
    assert!(
        c.warnings(1_780_000_000).is_empty(),
        "{:?}",
        c.warnings(1_780_000_000)
    );
}

#[test]
fn rule_errors_name_the_rule() {
    let cases = [
        (
            "product: qq_vip_month",
            "product: qq_vip_mnth",
            "rule keep: no product named qq_vip_mnth (did you mean `qq_vip_month`?)",
        ),
        (
            "membership: qq_vip",
            "membership: qq_haohua",
            "rule keep: watches qq_haohua but product qq_vip_month extends qq_vip",
        ),
        (
            "{ tags: [staff] }",
            "{ names: [alcie] }",
            "rule keep: accounts: no account named alcie (did you mean `alice`?)",
        ),
        (
            "{ tags: [staff] }",
            "everyone",
            "rule keep: accounts: \"everyone\" is not a selector",
        ),
        (
            "\"*/10 * * * *\"",
            "\"* * *\"",
            "rule keep: cron \"* * *\" has 3 fields",
        ),
    ];
    for (from, to, want) in cases {
        let text = format!("{GOOD}{}", RULE.replace(from, to));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(want), "{to}: {e}");
        assert!(e.starts_with("rules.yaml:"), "{e}");
    }
    let text = format!(
        "{GOOD}{}",
        RULE.replace("    accounts: { tags: [staff] }\n", "")
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("missing field `accounts`"), "{e}");
}

#[test]
fn warnings_for_repeat_renewals_and_thin_windows() {
    let text = format!(
        "{GOOD}{}",
        RULE.replace("renew_before: 3d", "renew_before: 30d")
            .replace("\"*/10 * * * *\"", "{ every: 11d }")
    );
    let w = parse(&text).unwrap().warnings(1_780_000_000).join("\n");
    assert!(
        w.contains(
            "rule keep: renew_before (30d) is not smaller than what qq_vip_month adds (30d)"
        ),
        "{w}"
    );
    assert!(w.contains("fewer than three checks"), "{w}");
    let text = format!(
        "{GOOD}{}",
        RULE.replace("{ tags: [staff] }", "{ tags: [nobody] }")
    );
    assert!(
        parse(&text)
            .unwrap()
            .warnings(1_780_000_000)
            .join("")
            .contains("selects no account")
    );
}

#[test]
fn unknown_timezone_is_an_error() {
    let text = GOOD.replace(
        "daemon: { sandbox: true }",
        "daemon: { sandbox: true, timezone: Mars/Olympus }",
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("unknown zone \"Mars/Olympus\""), "{e}");
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = GOOD
        .replace("max_price: 20.00", "max_price: 0")
        .replace("qq_number: 5666857", "qq_number: abc");
    let errs = parse(&text).unwrap_err();
    assert_eq!(errs.0.len(), 2, "{errs}");
}

#[cfg(unix)]
#[test]
fn many_literal_secrets_warn_in_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let readable = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Config::load(&path).unwrap().warnings(1_780_000_000)
    };
    let text = GOOD.replace("daemon: { sandbox: true }", "daemon: { sandbox: false }");
    // Two literal secrets: the vendor's, and alice's token.
    let few = readable(&text);
    assert_eq!(
        few.iter().filter(|w| w.contains("literally")).count(),
        2,
        "{few:?}"
    );

    let mut many = text.clone();
    for i in 0..9 {
        many.push_str(&format!(
            "  - {{ name: b{i}, qq_number: {}, openid: O{i}, access_token: t{i} }}\n",
            1000 + i
        ));
    }
    let warnings = readable(&many);
    let literal: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("literally"))
        .collect();
    assert_eq!(literal.len(), 1, "{warnings:?}");
    assert!(
        literal[0].starts_with("11 secrets are written literally")
            && literal[0].contains("providers.wapi.secret")
            && literal[0].contains("and 8 more"),
        "{}",
        literal[0]
    );
}

#[test]
fn accounts_are_found_by_name_in_any_file_order() {
    let mut text = GOOD.to_owned();
    let names = ["zed", "bob", "carol", "a10", "a2", "a1"];
    for (i, name) in names.iter().enumerate() {
        text.push_str(&format!(
            "  - {{ name: {name}, qq_number: {}, openid: O{i}, access_token: t{i} }}\n",
            1000 + i
        ));
    }
    let c = parse(&text).unwrap();
    for name in names.iter().chain(&["alice"]) {
        assert_eq!(c.account(name).map(|a| a.name.as_str()), Some(*name));
    }
    assert_eq!(c.account("a3").map(|a| &a.name), None);
    assert_eq!(c.account("").map(|a| &a.name), None);
}

/// A credential only the service can read is kept outside it as an
/// `Unavailable` at its key path (what `vipd status` branches on to
/// explain a 401), and refused by the strict load.
#[test]
fn an_unreadable_credential_is_unavailable_at_its_key_path() {
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    let text = GOOD.replace(
        "daemon: { sandbox: true }",
        "daemon: { sandbox: true, admin_token: \"${credential:admin}\" }",
    );
    let c = Config::parse_outside(&text, &path).unwrap();
    assert_eq!(c.unavailable.len(), 1, "{:?}", c.unavailable);
    let u = &c.unavailable[0];
    assert!(u.is_at(&["daemon", "admin_token"]), "{:?}", u.at);
    assert!(!u.is_at(&["daemon"]) && !u.is_at(&["daemon", "admin_token", "x"]));
    assert_eq!(u.error.line, Some(2), "{}", u.error);
    let strict = Config::parse(&text, &path).unwrap_err().to_string();
    assert!(strict.contains("admin_token"), "{strict}");
}

/// A rule's references are resolved when the configuration is built: its
/// product is the product itself, and its accounts are found by place, in
/// config order, whether selected by name, by tag or both.
#[test]
fn rules_carry_their_product_and_accounts_resolved() {
    let text = format!(
        "{GOOD}  - {{ name: bob, qq_number: 5666858, openid: OPENID2, access_token: tok }}\n  - {{ name: carol, qq_number: 5666859, openid: OPENID3, access_token: tok, tags: [staff] }}\n\
         rules:\n  - {{ name: keep, accounts: {{ tags: [staff], names: [bob] }}, check: {{ every: 1h }}, membership: qq_vip, renew_before: 3d, product: qq_vip_month }}\n"
    );
    let c = parse(&text).unwrap();
    let r = &c.rules[0];
    assert!(Arc::ptr_eq(&r.product, &c.products["qq_vip_month"]));
    let names: Vec<&str> = c.accounts_of(r).map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(
        r.accounts,
        [Arc::from("alice"), Arc::from("bob"), Arc::from("carol")]
    );
    assert_eq!(c.accounts_of(r).nth(1).unwrap().qq_number, "5666858");
}
