//! `vipd test` on small worlds: each expectation kind and each step, seen
//! passing and failing; errors in files named at their line.

use std::path::{Path, PathBuf};

use super::*;

mod approvals;
mod forecasts;
mod plugins;

/// Rules with one rule over alice (ends in 2d) and bob (in 40d), checked
/// hourly, paid by async callback at 15.00.
pub(super) const RULES: &str = r#"
daemon:
  state_dir: ./state
  timezone: UTC
  admin_listen: 127.0.0.1:0
  callback_listen: 127.0.0.1:0
  sandbox: true
  startup_spread: 1s
providers:
  qq:
    kind: qq_connect
    base_url: https://graph.qq.com
    oauth_consumer_key: "101234567"
    client_secret: "sandbox-app-key"
  wapi:
    kind: recharge
    base_url: https://vendor.example
    appid: "1"
    secret: "0123456789abcdef0123456789abcdef"
    sign_mode: md5
    callback: { order_field: orderid, status_field: status, reply: success }
products:
  month: { provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }
accounts:
  - { name: alice, qq_number: "5666857", openid: "A1B2C3D4E5F60718293A4B5C6D7E8F90", access_token: "t-alice" }
  - { name: bob, qq_number: "10001", openid: "0F1E2D3C4B5A69788796A5B4C3D2E1F0", access_token: "t-bob" }
rules:
  - name: keep
    accounts: all
    check: { every: 1h }
    membership: qq_vip
    renew_before: 3d
    product: month
    budget: { per_day: 100.00 }
sandbox:
  mode: async
  callback_delay: 1s
  prices: { month: 15.00 }
  memberships:
    alice: { qq_vip: 2d }
    bob: { qq_vip: 40d }
"#;

/// A folder with `rules.yaml` (and `more` files) and a test file `t.test.yaml`.
pub(super) fn folder(test: &str, more: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    for (name, text) in more {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let path = dir.path().join("t.test.yaml");
    std::fs::write(&path, test).unwrap();
    (dir, path)
}

/// Every outcome of the file at `path`.
fn outcomes(path: &Path) -> Vec<Outcome> {
    let ready = load(&[path.to_owned()]).unwrap_or_else(|e| panic!("invalid:\n{e}"));
    run_all(&ready)
}

/// The failures' lines of the only test of `test`.
pub(super) fn failures(test: &str, more: &[(&str, &str)]) -> Vec<String> {
    let (_dir, path) = folder(test, more);
    let out = outcomes(&path);
    assert_eq!(out.len(), 1);
    out[0].failures.iter().map(Reported::line).collect()
}

/// The only test of `test` passes: no failure at all.
pub(super) fn passes(test: &str, more: &[(&str, &str)]) {
    assert_eq!(failures(test, more), Vec::<String>::new(), "{test}");
}

/// The errors `load` finds in `test`, as text.
pub(super) fn invalid(test: &str, more: &[(&str, &str)]) -> String {
    let (_dir, path) = folder(test, more);
    match load(&[path]) {
        Ok(_) => panic!("accepted:\n{test}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn one(body: &str) -> String {
    format!("tests:\n  - name: t\n    rules: rules.yaml\n{body}")
}

/// A renewal paid by callback: every kind of expectation holds, at a step
/// and at the end.
#[test]
fn every_expectation_kind_holds_for_a_renewal() {
    passes(
        &one("    timeline:
      - advance: 1h
      - expect:
          orders: [{ account: alice, state: succeeded, count: 1, price: 15.00 }]
          billed: { alice: 1 }
    run_for: 2d
    expect:
      orders:
        - { account: alice, rule: keep, count: 1 }
        - { account: bob, count: 0 }
      billed: { alice: 1, bob: 0 }
      events:
        - { kind: renewal_verified, account: alice, count: 1, within: 10m }
        - { kind: budget_exceeded, count: 0 }
      spend: [{ rule: keep, total: 15.00 }]
      memberships:
        - { account: alice, membership: qq_vip, ends: 32d }
        - { account: bob, membership: qq_vip, ends: 40d, tolerance: 1m }
"),
        &[],
    );
}

/// Each kind fails when what it expects is not so, naming the line of the
/// expectation, what was expected and what was found, with the story of
/// the account's orders.
#[test]
fn each_expectation_kind_fails_when_it_does_not_hold() {
    let (_dir, path) = folder(
        &one("    run_for: 1h
    expect:
      orders: [{ account: alice, count: 2 }, { account: alice, price: 14.00 }]
      billed: { alice: 3 }
      events:
        - { kind: renewal_verified, account: alice, count: 0 }
        - { kind: order_settled, within: 0s }
      spend: [{ rule: keep, total: 30.00 }]
      memberships: [{ account: alice, membership: qq_vip, ends: 2d }]
"),
        &[],
    );
    let out = outcomes(&path);
    let lines: Vec<String> = out[0].failures.iter().map(Reported::line).collect();
    let want = [
        "expected 2 orders of alice; got 1 (alice has keep: succeeded)",
        "expected orders of alice at price 14.00; got order",
        "expected the vendor billed alice 3 time(s); got 1",
        "expected 0 renewal_verified event(s) for alice; got 1",
        "expected the first order_settled event(s) within 0s of the start; got after",
        "expected 30.00 spent under keep; got 15.00",
        "expected alice's qq_vip to end 2d after the start",
    ];
    assert_eq!(lines.len(), want.len(), "{lines:#?}");
    for (line, want) in lines.iter().zip(want) {
        assert!(line.contains(want), "{line}\nwants {want}");
        assert!(line.contains("t.test.yaml:5:5: "), "{line}");
    }
    let text = out[0].text();
    assert!(text.starts_with("FAIL  "), "{text}");
    assert!(text.contains("decision     keep"), "{text}");
    assert!(text.contains("callback: success"), "{text}");
}

/// `vendor:` changes the vendor mid-run; `resolve:` settles an order as
/// an operator would; `reload:` swaps the rules; `clock_step:` holds
/// payments while the clock is disputed.
#[test]
fn timeline_steps_change_the_world_as_they_say() {
    // No money at the vendor: the renewal is refused, then paid once the
    // balance is back.
    passes(
        &one("    timeline:
      - vendor: { balance: 0.00 }
      - advance: 2h
      - expect:
          orders: [{ account: alice, state: failed, count: 1 }]
          billed: { alice: 0 }
      - vendor: { balance: unlimited }
      - advance: 1d
    expect:
      orders: [{ account: alice, state: succeeded, count: 1 }]
      billed: { alice: 1 }
"),
        &[],
    );
    // A later renew_before: bob (40d) is due at once.
    let later = RULES.replace("renew_before: 3d", "renew_before: 45d");
    passes(
        &one("    timeline:
      - advance: 2h
      - expect: { orders: [{ account: bob, count: 0 }] }
      - reload: later.yaml
      - advance: 2h
    expect:
      orders: [{ account: bob, state: succeeded, count: 1 }]
"),
        &[("later.yaml", &later)],
    );
    // The daemon's clock two hours ahead of the vendor's: the first reply
    // anchors the time to the vendor's, and nothing is paid while the two
    // disagree (an alert says so); once the clock is set right, alice is
    // renewed.
    passes(
        &one("    timeline:
      - clock_step: +2h
      - advance: 6h
      - expect:
          billed: { alice: 0 }
          events: [{ kind: error }]
      - clock_step: -2h
      - advance: 6h
    expect:
      orders: [{ account: alice, state: succeeded, count: 1 }]
      billed: { alice: 1 }
"),
        &[],
    );
    // A vendor slow to settle that loses its callbacks: the order stays
    // pending until an operator says it was paid.
    passes(
        &one("    sandbox:
      callback_delay: 1h
      faults: { recharge: { drop_callback_rate: 1.0 } }
    timeline:
      - advance: 5m
      - expect: { orders: [{ account: alice, state: pending, count: 1 }] }
      - resolve: { account: alice, as: succeeded }
      - expect: { orders: [{ account: alice, state: succeeded, count: 1 }] }
      - advance: 2h
    expect:
      orders: [{ account: alice, state: succeeded, count: 1 }]
      billed: { alice: 1 }
"),
        &[],
    );
}

/// A vendor that delivers a callback again changes nothing: one order,
/// billed once, still succeeded. The repeats are in the order's story,
/// at most one line a minute.
#[test]
fn a_redelivered_callback_pays_nothing_twice() {
    passes(
        &one("    timeline:
      - advance: 1h
      - redeliver_callback: alice
      - redeliver_callback: alice
      - expect: { events: [{ kind: callback_repeated, account: alice, count: 1 }] }
      - advance: 1h
      - redeliver_callback: alice
    expect:
      orders: [{ account: alice, state: succeeded, count: 1 }]
      billed: { alice: 1 }
      events: [{ kind: callback_repeated, account: alice, count: 2 }]
"),
        &[],
    );
    // A step that cannot run is a failure of the test, at its line.
    let got = failures(
        &one("    timeline:\n      - redeliver_callback: bob\n"),
        &[],
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains(
            "t.test.yaml:5:9: expected the step to run; got redeliver_callback: bob has no order"
        ),
        "{got:?}"
    );
}

/// The same file gives the same result, faults and all.
#[test]
fn the_same_file_gives_the_same_result() {
    let test = one("    sandbox:
      faults:
        recharge: { transient_rate: 0.5, drop_callback_rate: 0.3 }
        vip_info: { transient_rate: 0.3 }
    run_for: 3d
    expect:
      orders: [{ account: alice, count: 9 }]
");
    let (_dir, path) = folder(&test, &[]);
    let first: Vec<String> = outcomes(&path)[0]
        .failures
        .iter()
        .map(|r| format!("{} {}", r.line(), r.traces))
        .collect();
    let again: Vec<String> = outcomes(&path)[0]
        .failures
        .iter()
        .map(|r| format!("{} {}", r.line(), r.traces))
        .collect();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first, again);
}

/// Mistakes in a test file or the rules it names are errors at their
/// line, found before anything runs.
#[test]
fn mistakes_are_named_at_their_line() {
    // (the test file, other files beside it, what the error says)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "tests:\n  - name: t\n    rules: rules.yaml\n    expect: { order: [] }\n",
            &[],
            "t.test.yaml:4:15: tests[0].expect: unknown field `order`",
        ),
        (
            "tests:\n  - name: t\n    rules: rules.yaml\n    timeline:\n      - { advance: 1h, reload: x.yaml }\n",
            &[],
            "t.test.yaml:5:7: tests[0].timeline: a step has exactly one of",
        ),
        (
            "tests:\n  - name: t\n    rules: rules.yaml\n    timeline:\n      - clock_step: soon\n",
            &[],
            "t.test.yaml:5:9: test \"t\": invalid duration \"soon\"",
        ),
        (
            "tests:\n  - name: t\n    rules: rules.yaml\n    start: yesterday\n",
            &[],
            "t.test.yaml:4:5: test \"t\": start \"yesterday\"",
        ),
        (
            "tests:\n  - name: t\n    rules: missing.yaml\n",
            &[],
            "t.test.yaml:3:5: test \"t\": cannot read",
        ),
        (
            "tests:\n  - name: t\n    rules: rules.yaml\n    timeline:\n      - reload: bad.yaml\n",
            &[("bad.yaml", "rules: 3\n")],
            "bad.yaml:1:",
        ),
        (
            "tests:\n  - name: t\n    rules: rules.yaml\n    sandbox: { prices: { nosuch: 1.00 } }\n",
            &[],
            "t.test.yaml:4:5: test \"t\": ",
        ),
        (
            "tests:\n  - name: t\n    rules: rules.yaml\n    expect:\n      memberships: [{ account: a, membership: qq_vip, ends: later }]\n",
            &[],
            "t.test.yaml:5:",
        ),
    ];
    for (test, more, want) in cases {
        let got = invalid(test, more);
        assert!(got.contains(want), "{test}\n  gave {got}\n  wants {want}");
    }
}

/// A re-delivery reaches the receiver, which acknowledges it as it did
/// the first (and pays nothing): the vendor counts two deliveries of the
/// one callback, both acknowledged.
#[test]
fn a_redelivered_callback_is_delivered_and_acknowledged() {
    let (_dir, path) = folder(&one(""), &[]);
    let ready = load(&[path]).unwrap();
    let prepared = &ready[0].1[0];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let world = World::start(prepared.config.clone(), prepared.start)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        redeliver(&world, "alice").await.unwrap();
        let sent = world.sandbox.orders();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!((sent[0].callbacks_sent, sent[0].callbacks_acked), (2, 2));
        assert!(redeliver(&world, "bob").await.is_err());
        world.stop().await;
    });
}

/// A vendor that bills more than the product's `max_price` is counted at
/// what it billed, and said: one `billing_conflict` an order, whether the
/// price came in the reply (sync) or in the callback (async).
#[test]
fn a_vendor_billing_above_max_price_is_a_billing_conflict() {
    for mode in ["sync", "async"] {
        passes(
            &one(&format!(
                "    sandbox:
      mode: {mode}
      prices: {{ month: 25.00 }}
    run_for: 2h
    expect:
      orders: [{{ account: alice, state: succeeded, count: 1, price: 25.00 }}]
      spend: [{{ rule: keep, total: 25.00 }}]
      events: [{{ kind: billing_conflict, account: alice, count: 1 }}]
"
            )),
            &[],
        );
    }
}
