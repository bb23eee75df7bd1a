//! Money safety under a hostile world (issue 10): a vendor that
//! re-delivers and replays callbacks. The real `vipd run` against the real
//! `vipd sandbox`; the test plays the vendor's callbacks.

mod common;

use std::time::Duration;

use common::stack::{SILENT_VENDOR, Stack, StackConfig};
use common::{events_of, signed};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

async fn callback(stack: &Stack, fields: &[(&str, &str)]) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/notify/wapi", stack.callbacks))
        .form(&signed(fields))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

/// A daemon whose vendor never calls back (the test plays it), its first
/// order pending, and that order's attempt 1 failed by a signed callback.
/// Returns the stack, attempt 1's vendor id, and the callback's `time`.
async fn attempt_one_failed() -> (Stack, String, String) {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    let stack = Stack::start(&cfg).await;
    let first = stack.pending_order(LONG).await;
    let v1 = first["vendor_orderid"].as_str().unwrap().to_owned();
    let t = now();
    let failed = [
        ("orderid", v1.as_str()),
        ("status", "failed"),
        ("time", t.as_str()),
    ];
    assert_eq!(callback(&stack, &failed).await.0, 200);
    (stack, v1, t)
}

async fn order_where(stack: &Stack, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    stack
        .wait_for(what, LONG, || async {
            stack.orders().await.into_iter().find(|o| want(o))
        })
        .await
}

#[tokio::test]
async fn a_redelivered_failed_callback_never_pays_a_period_twice() {
    let (stack, v1, t) = attempt_one_failed().await;
    let failed_v1 = [
        ("orderid", v1.as_str()),
        ("status", "failed"),
        ("time", t.as_str()),
    ];
    // The key is retried (first retry ~10 s with retry_base 1s): attempt 2.
    let second = order_where(&stack, "attempt 2 pending", |o| {
        o["attempts"] == 2 && o["state"] == "pending"
    })
    .await;
    let v2 = second["vendor_orderid"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);

    // The vendor delivers attempt 1's failure again.
    assert_eq!(callback(&stack, &failed_v1).await, (200, "success".into()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let orders = stack.orders().await;
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (&orders[0]["state"], &orders[0]["attempts"]),
        (&Value::from("pending"), &Value::from(2)),
        "attempt 2 is untouched: {}",
        orders[0]
    );

    // Attempt 2's real success is recorded and counted.
    let ok_v2 = [
        ("orderid", v2.as_str()),
        ("status", "success"),
        ("price", "15.00"),
        ("time", t.as_str()),
    ];
    assert_eq!(callback(&stack, &ok_v2).await.0, 200);
    let done = order_where(&stack, "the order succeeded", |o| o["state"] == "succeeded").await;
    assert_eq!(done["spent"], "15.00");
    // A replay of attempt 1's failure now changes nothing either.
    assert_eq!(callback(&stack, &failed_v1).await.0, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let orders = stack.orders().await;
    assert_eq!(orders[0]["state"], "succeeded");
    assert_eq!(
        stack.sandbox_orders().await.len(),
        2,
        "two requests for the period, never a third"
    );
}

#[tokio::test]
async fn a_success_for_an_attempt_recorded_failed_is_counted_and_alerted() {
    let (stack, v1, t) = attempt_one_failed().await;
    order_where(&stack, "attempt 1 failed", |o| o["state"] == "failed").await;
    // Before the retry leaves, the vendor says attempt 1 was billed.
    let ok = [
        ("orderid", v1.as_str()),
        ("status", "success"),
        ("price", "15.00"),
        ("time", t.as_str()),
    ];
    assert_eq!(callback(&stack, &ok).await.0, 200);
    let o = order_where(&stack, "the order succeeded", |o| o["state"] == "succeeded").await;
    assert_eq!(o["spent"], "15.00", "billed money is counted: {o}");
    let events = stack.status().await["events"].as_array().unwrap().clone();
    assert!(
        events.iter().any(|e| e["kind"] == "billing_conflict"),
        "{events:?}"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(stack.sandbox_orders().await.len(), 1, "no retry once paid");
}

#[tokio::test]
async fn stale_and_future_callbacks_are_refused() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    cfg.provider = "    callback: { max_age: 1h }".into();
    let stack = Stack::start(&cfg).await;
    let first = stack.pending_order(LONG).await;
    let v1 = first["vendor_orderid"].as_str().unwrap().to_owned();
    let now: i64 = now().parse().unwrap();
    for t in [now - 3_700, now + 700] {
        let t = t.to_string();
        let fields = [
            ("orderid", v1.as_str()),
            ("status", "failed"),
            ("time", t.as_str()),
        ];
        let (status, body) = callback(&stack, &fields).await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(stack.orders().await[0]["state"], "pending");
}

#[tokio::test]
async fn a_callback_that_never_comes_makes_the_order_unknown_and_a_late_refund_releases_it() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    cfg.provider = "    callback: { within: 2s }".into();
    let stack = Stack::start(&cfg).await;
    let first = stack.pending_order(LONG).await;
    let v1 = first["vendor_orderid"].as_str().unwrap().to_owned();
    let unknown = order_where(&stack, "the order to become unknown", |o| {
        o["state"] == "unknown"
    })
    .await;
    assert_eq!(unknown["spent"], "15.00", "possibly paid: still counted");
    assert!(
        unknown["history"].as_array().unwrap().last().unwrap()["why"]
            .as_str()
            .unwrap()
            .contains("no callback within 2s"),
        "{unknown}"
    );
    let status = stack.status().await;
    assert_eq!(events_of(&status, "order_unknown").len(), 1, "{status}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.sandbox_orders().await.len(),
        1,
        "unknown is never re-sent"
    );

    // The refund arrives late: the money goes back and the period is retried.
    let t = now();
    let refund = [
        ("orderid", v1.as_str()),
        ("status", "failed"),
        ("time", t.as_str()),
    ];
    assert_eq!(callback(&stack, &refund).await.0, 200);
    let retried = order_where(&stack, "the retry", |o| {
        o["attempts"] == 2 && o["state"] == "pending"
    })
    .await;
    let first = &retried["attempt_log"][0];
    assert_eq!(
        (&first["state"], &first["spent"]),
        (&Value::from("not_paid"), &Value::from("0.00")),
        "the refunded attempt's money is released: {retried}"
    );
    assert_eq!(retried["spent"], "15.00", "only attempt 2 counts");
    assert_eq!(stack.sandbox_orders().await.len(), 2);
}

#[tokio::test]
async fn a_due_account_that_will_not_be_renewed_is_alerted_once() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync\n  faults: { recharge: { transient_rate: 1.0 } }".into();
    cfg.rule = "    max_attempts: 1".into();
    let stack = Stack::start(&cfg).await;
    let status = stack
        .wait_for("the give-up alert", LONG, || async {
            let s = stack.status().await;
            events_of(&s, "error")
                .iter()
                .any(|e| {
                    e["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains("will not be renewed")
                })
                .then_some(s)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status2 = stack.status().await;
    let alerts = |s: &Value| {
        events_of(s, "error")
            .iter()
            .filter(|e| {
                e["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("will not be renewed")
            })
            .count()
    };
    assert_eq!(alerts(&status), 1);
    assert_eq!(alerts(&status2), 1, "once per streak, not at every check");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_plugin_in_a_recharge_loop_is_held_to_the_manual_budget() {
    let mut cfg = StackConfig::due(0);
    // Not due: the rule would never pay; only the plugin asks.
    cfg.accounts = vec![("a0".into(), Some("60d".into()))];
    cfg.sandbox = "  mode: sync".into();
    cfg.files = vec![(
        "scripts/loop.lua".into(),
        r#"vipd.every("1s", function()
  local ok, r = pcall(vipd.recharge, {account = "a0", product = "qq_vip_month"})
  vipd.log.info("loop recharge", {ok = ok, result = tostring(r)})
end)
"#
        .into(),
    )];
    // max_price 20.00 is held per order, 15.00 is paid: two fit in 40.00.
    cfg.top = "manual: { budget: { per_day: 40.00 } }".into();
    let stack = Stack::start(&cfg).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let billed = stack.billed().await;
    assert_eq!(billed.get("a0"), Some(&2), "{}", stack.log());
    let orders = stack.orders().await;
    assert!(orders.iter().all(|o| o["rule"] == "manual"));
    assert!(
        stack.log().contains("budget"),
        "the refusals say why:\n{}",
        stack.log()
    );
}

#[tokio::test]
async fn plugins_cannot_reach_the_daemons_own_listeners_or_sign_as_the_vendor() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    let (admin, callbacks) = (free_port(), free_port());
    cfg.rewrite = vec![
        (
            "admin_listen: 127.0.0.1:0".into(),
            format!("admin_listen: 127.0.0.1:{admin}"),
        ),
        (
            "callback_listen: 127.0.0.1:0".into(),
            format!("callback_listen: 127.0.0.1:{callbacks}"),
        ),
    ];
    cfg.files = vec![(
        "scripts/attack.lua".into(),
        format!(
            r#"vipd.every("1s", function()
  local tries = {{
    resolve = function() return vipd.http.post("http://127.0.0.1:{admin}/api/orders/x/resolve", {{as = "failed"}}) end,
    reload = function() return vipd.http.post("http://localhost:{admin}/api/reload", {{}}) end,
    forged = function() return vipd.http.post("http://[::1]:{callbacks}/notify/wapi", "orderid=SB1&status=failed") end,
    sign = function() return vipd.sign({{orderid = "SB1", status = "failed"}}, {{provider = "wapi"}}) end,
  }}
  for name, try in pairs(tries) do
    local ok, err = pcall(try)
    vipd.log.warn("attack " .. name, {{ok = ok, err = tostring(err)}})
  end
end)
"#
        ),
    )];
    let stack = Stack::start(&cfg).await;
    stack.pending_order(LONG).await;
    let log = stack
        .wait_for("the attacks to run", LONG, || async {
            let log = stack.log();
            (log.matches("attack ").count() >= 8).then_some(log)
        })
        .await;
    let attacks: Vec<&str> = log.lines().filter(|l| l.contains("attack ")).collect();
    for line in &attacks {
        assert!(line.contains(r#"\"ok\":false"#), "{line}");
    }
    assert!(log.contains("plugins may not reach"), "{log}");
    assert!(log.contains("plugins may not sign"), "{log}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let orders = stack.orders().await;
    assert_eq!(
        orders[0]["state"], "pending",
        "nothing the plugin did changed the order"
    );
    assert_eq!(stack.sandbox_orders().await.len(), 1);
}

#[tokio::test]
async fn the_admin_api_refuses_foreign_hosts_and_cross_site_writes() {
    let stack = Stack::start(&StackConfig::due(0)).await;
    let http = reqwest::Client::new();
    let status = format!("{}/api/status", stack.admin);
    let reload = format!("{}/api/reload", stack.admin);
    let code = |r: reqwest::Response| r.status().as_u16();
    // DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    let r = http
        .get(&status)
        .header("host", "evil.example:9610")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 403);
    let r = http.get(&status).send().await.unwrap();
    assert_eq!(code(r), 200);
    // A cross-site form or text/plain fetch: no preflight, so refused here.
    let r = http
        .post(&reload)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 415);
    let r = http.post(&reload).form(&[("a", "b")]).send().await.unwrap();
    assert_eq!(code(r), 415);
    let r = http
        .post(&reload)
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 403);
    let r = http
        .post(&reload)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r), 200);
}
