//! `vipd test` as an operator runs it: exit codes, the report, JUnit XML,
//! the schema of test files, and a broken rule caught with its story.

use std::path::Path;

use crate::common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A folder holding a copy of rules.yaml (with `broken` applied), its
/// plugin and the shipped test file for it, laid out as in the
/// repository.
fn copy_of_the_default_rules_test(broken: Option<(&str, &str)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = std::fs::read_to_string(root().join("rules.yaml")).unwrap();
    if let Some((from, to)) = broken {
        assert!(rules.contains(from), "{from}");
        rules = rules.replace(from, to);
    }
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::copy(
        root().join("scripts/activity.lua"),
        dir.path().join("scripts/activity.lua"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("examples/tests")).unwrap();
    std::fs::copy(
        root().join("examples/tests/default-rules.test.yaml"),
        dir.path().join("examples/tests/default-rules.test.yaml"),
    )
    .unwrap();
    dir
}

/// The shipped test passes (exit 0) and its JUnit XML says so; with the
/// product's `adds` broken, it fails (exit 1) at the step's line, saying
/// what was expected and what was found, with the order's story.
#[test]
fn a_broken_rule_fails_its_test_with_the_step_and_the_trace() {
    let dir = copy_of_the_default_rules_test(None);
    let junit = dir.path().join("out.xml");
    let (code, out, err) = run(vipd()
        .current_dir(dir.path())
        .args(["test", "examples/tests", "--junit"])
        .arg(&junit));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 tests: 5 passed, 0 failed"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"5\" failures=\"0\""), "{xml}");

    let dir = copy_of_the_default_rules_test(Some(("adds: 30d", "adds: 10d")));
    let junit = dir.path().join("out.xml");
    let (code, out, err) = run(vipd()
        .current_dir(dir.path())
        .args(["test", "examples/tests", "--junit"])
        .arg(&junit));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL  examples/tests/default-rules.test.yaml: alice is renewed at once"),
        "{out}"
    );
    assert!(
        out.contains("examples/tests/default-rules.test.yaml:10:9: expected alice's qq_vip to end 32d after the start"),
        "{out}"
    );
    assert!(
        out.contains("got 2027-01-27T08:00:00Z (12d after the start)"),
        "{out}"
    );
    assert!(
        out.contains("transition   succeeded          callback: success"),
        "{out}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<failure message=\"examples/tests/default-rules.test.yaml:10:9: expected alice&apos;s qq_vip"), "{xml}");
}

/// A test file with a mistake is exit 78 naming its line, before anything
/// runs; so is a folder with no test file.
#[test]
fn an_invalid_test_file_is_exit_78_at_its_line() {
    let dir = copy_of_the_default_rules_test(None);
    let bad = dir.path().join("bad.test.yaml");
    std::fs::write(
        &bad,
        "tests:\n  - name: t\n    rules: rules.yaml\n    timeline:\n      - advance: soon\n",
    )
    .unwrap();
    let (code, out, err) = run(vipd().arg("test").arg(&bad));
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("bad.test.yaml:5:"), "{err}");
    assert!(err.contains("invalid duration \"soon\""), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run(vipd().arg("test").arg(empty.path()));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no test files"), "{err}");
}

/// `vipd schema --tests` is the committed `vipd-test.schema.json`, and
/// every shipped test file is valid against it.
#[test]
fn the_test_schema_is_committed_and_fits_the_shipped_tests() {
    let (code, out, _) = run(vipd().args(["schema", "--tests"]));
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(root().join("vipd-test.schema.json")).unwrap();
    assert_eq!(
        committed, out,
        "run `vipd schema --tests > vipd-test.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut seen = 0;
    for e in std::fs::read_dir(root().join("examples/tests")).unwrap() {
        let path = e.unwrap().path();
        let doc: serde_json::Value =
            yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        seen += 1;
    }
    assert!(seen >= 3);
    let two_keys = serde_json::json!({"tests": [{"name": "t", "rules": "r.yaml",
        "timeline": [{"advance": "1h", "reload": "x.yaml"}]}]});
    assert!(!validator.is_valid(&two_keys));
}

/// Rules on a scale of seconds, so that a real daemon lives them in a few:
/// alice is due at once, bob after three seconds, carol lapsed and skipped.
const SECONDS_RULES: &str = r#"
daemon:
  state_dir: ./state
  timezone: UTC
  admin_listen: 127.0.0.1:0
  callback_listen: 127.0.0.1:0
  sandbox: true
  startup_spread: 1s
providers:
  qq: { kind: qq_connect, base_url: https://graph.qq.com, oauth_consumer_key: "101234567", client_secret: "sandbox-app-key" }
  wapi:
    kind: recharge
    base_url: https://vendor.example
    appid: "1"
    secret: "0123456789abcdef0123456789abcdef"
    callback: { order_field: orderid, status_field: status, reply: success }
products:
  month: { provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }
accounts:
  - { name: alice, qq_number: "5666857", openid: "A1B2C3D4E5F60718293A4B5C6D7E8F90", access_token: "t-alice" }
  - { name: bob, qq_number: "10001", openid: "0F1E2D3C4B5A69788796A5B4C3D2E1F0", access_token: "t-bob" }
  - { name: carol, qq_number: "10002", openid: "FEDCBA98765432100123456789ABCDEF", access_token: "t-carol" }
rules:
  - { name: keep, accounts: { names: [alice, bob] }, check: { every: 1s }, membership: qq_vip, renew_before: 5s, product: month }
  - { name: guests, accounts: { names: [carol] }, check: { every: 1s }, membership: qq_vip, renew_before: 5s, product: month, when_lapsed: skip }
sandbox:
  mode: async
  callback_delay: 300ms
  prices: { month: 15.00 }
  memberships:
    alice: { qq_vip: 3s }
    bob: { qq_vip: 8s }
    carol: { qq_vip: -1d }
"#;

/// What two runs of one timeline must agree on: per account and rule,
/// each order's state, price, attempts and verification.
fn ledger_of(orders: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = orders
        .iter()
        .map(|o| {
            format!(
                "{} {} {} price {} attempts {} {}",
                o["account"],
                o["rule"],
                o["state"],
                o["price"],
                o["attempts"],
                o["verification"]["status"]
            )
        })
        .collect();
    out.sort();
    out
}

/// One timeline both ways: simulated by `vipd test`, and lived by a real
/// daemon against the sandbox on the wall clock. The ledgers agree.
#[tokio::test]
async fn a_simulated_run_and_a_real_daemon_keep_the_same_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, SECONDS_RULES).unwrap();
    let test = dir.path().join("seconds.test.yaml");
    std::fs::write(
        &test,
        "tests:\n  - name: seconds\n    rules: rules.yaml\n    run_for: 15s\n",
    )
    .unwrap();
    let ready = vipd::simulate::load(&[test]).unwrap_or_else(|e| panic!("{e}"));
    let simulated = vipd::simulate::run_all(&ready);
    assert!(simulated[0].passed(), "{}", simulated[0].text());
    let simulated: Vec<serde_json::Value> = simulated[0]
        .orders
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    let want = ledger_of(&simulated);
    assert_eq!(want.len(), 2, "{want:#?}");

    let mut daemon = vipd()
        .args(["run", "--config"])
        .arg(&rules)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let lived = loop {
        let (code, out, _) = run(vipd().args(["orders", "--json", "--config"]).arg(&rules));
        let orders: Vec<serde_json::Value> = if code == 0 {
            serde_json::from_str(&out).unwrap_or_default()
        } else {
            Vec::new()
        };
        let settled = orders.len() == want.len()
            && orders
                .iter()
                .all(|o| o["verification"]["status"] == "verified");
        if settled || started.elapsed() > std::time::Duration::from_secs(30) {
            break orders;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(ledger_of(&lived), want);
}
