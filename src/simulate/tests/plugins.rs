//! Plugins under `vipd test`: loaded as `vipd run` loads them, on the
//! simulated clock, their kv and HTTP requests checked, nothing sent.

use super::{failures, invalid, one, passes};

/// Counts settled orders and the hours that passed, notes the clock at
/// the first hour, and posts every settlement to a webhook.
const COUNTER: &str = r#"
vipd.on("order_settled", function(ev)
  vipd.kv.incr("settled:" .. ev.account)
  vipd.http.post("https://hooks.example/settled?key=secret", { account = ev.account })
end)
vipd.every("1h", function()
  if not vipd.kv.get("first_hour") then vipd.kv.set("first_hour", vipd.now()) end
  vipd.kv.incr("hours")
end)
"#;

/// The plugin's kv values, jobs and requests, as they were on simulated
/// time: alice's one renewal, 24 hours of jobs (the first an hour after
/// the start: 2027-01-15T09:00:00Z), one request that was not sent.
#[test]
fn a_plugin_runs_on_simulated_time_and_its_kv_and_requests_are_checked() {
    let test = one("    scripts_dir: lua
    run_for: 1d30m
    expect:
      kv:
        - { plugin: counter, key: settled:alice, value: 1 }
        - { plugin: counter, key: settled:bob, value: null }
        - { plugin: counter, key: hours, value: 24 }
        - { plugin: counter, key: first_hour, value: 1800003600 }
      http:
        - { url: POST https://hooks.example/settled, count: 1 }
        - { url: GET }
");
    let got = failures(&test, &[("lua/counter.lua", COUNTER)]);
    // The one GET expected is the only failure: every other value held.
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("at least one plugin request to GET")
            && got[0].contains("got 0 (POST https://hooks.example/settled)")
            && !got[0].contains("secret"),
        "{}",
        got[0]
    );
}

/// A kv value that differs is a failure naming the plugin, the key, the
/// value expected and the one found.
#[test]
fn a_kv_value_that_differs_fails_with_both_values() {
    let test = one("    scripts_dir: lua
    run_for: 2h30m
    expect:
      kv:
        - { plugin: counter, key: settled:alice, value: 2 }
        - { plugin: counter, key: hours, value: null }
");
    let got = failures(&test, &[("lua/counter.lua", COUNTER)]);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].contains("counter's kv \"settled:alice\" = 2") && got[0].contains("got 1"),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains("\"hours\" = not set") && got[1].contains("got 2"),
        "{}",
        got[1]
    );
}

/// An operator's `resolve:` reaches the plugins as the admin API's does,
/// and an expectation right after it sees what they did with it.
#[test]
fn an_expectation_waits_for_the_plugins_to_handle_what_came_before() {
    let test = one("    scripts_dir: lua
    sandbox:
      callback_delay: 1h
      faults: { recharge: { drop_callback_rate: 1.0 } }
    timeline:
      - advance: 5m
      - expect: { kv: [{ plugin: counter, key: settled:alice, value: null }] }
      - resolve: { account: alice, as: succeeded }
      - expect:
          kv: [{ plugin: counter, key: settled:alice, value: 1 }]
          http: [{ url: POST https://hooks.example/settled, count: 1 }]
");
    passes(&test, &[("lua/counter.lua", COUNTER)]);
}

/// A `before_recharge` veto holds in a test as in the daemon: nothing is
/// paid, and the veto is an event.
#[test]
fn a_plugin_veto_stops_the_renewal() {
    let veto = r#"vipd.on("before_recharge", function(ev) return { skip = "frozen" } end)"#;
    let test = one("    scripts_dir: lua
    run_for: 2h
    expect:
      orders: [{ account: alice, state: succeeded, count: 0 }]
      billed: { alice: 0 }
      events: [{ kind: renewal_vetoed, account: alice }]
");
    passes(&test, &[("lua/veto.lua", veto)]);
}

/// The rules file's own `scripts_dir` is loaded when the test names none,
/// as `vipd run` would load it.
#[test]
fn the_rules_files_plugins_load_by_default() {
    let veto = r#"vipd.on("before_recharge", function(ev) return { skip = "frozen" } end)"#;
    let test = one("    run_for: 2h
    expect:
      billed: { alice: 0 }
");
    passes(&test, &[("scripts/veto.lua", veto)]);
}

/// A plugin that does not load makes the file invalid (exit 78), named
/// at its script and line.
#[test]
fn a_plugin_that_does_not_load_is_named_at_its_line() {
    let test = one("    scripts_dir: lua\n");
    let got = invalid(&test, &[("lua/broken.lua", "local x = 1\nvipd.on(\n")]);
    assert!(got.contains("broken.lua:"), "{got}");
    let got = invalid(
        &test,
        &[("lua/broken.lua", "vipd.on(\"no_such_event\", print)\n")],
    );
    assert!(got.contains("broken.lua"), "{got}");
}
