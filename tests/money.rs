//! Money safety under a hostile world, where only processes
//! show it: plugins (Lua, on their own thread and clock) that loop on
//! payments or attack the daemon's listeners, and the admin API over HTTP.
//! The vendor's re-delivered and replayed callbacks are in `paying/callbacks.rs`, in
//! process on paused time.

use std::time::Duration;

use crate::common::stack::{SILENT_VENDOR, Stack, StackConfig};

const LONG: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Plugins calling `vipd.recharge` in a loop, and the admin API asked
/// again and again: a membership that is not due is never paid; asked
/// `ahead`, one within a period of due is paid once, and the manual budget
/// still caps what that spends.
#[tokio::test]
async fn a_recharge_loop_pays_only_what_is_due_or_asked_ahead_once() {
    let mut cfg = StackConfig::due(0);
    // None due under the rule (renew_before 3d); only the plugins ask.
    cfg.accounts = vec![
        ("a0".into(), Some("40d".into())),
        ("a1".into(), Some("20d".into())),
        ("a2".into(), Some("20d".into())),
    ];
    cfg.sandbox = "  mode: sync".into();
    cfg.files = vec![(
        "scripts/loop.lua".into(),
        r#"vipd.every("1s", function()
  for _, ask in ipairs({
    {account = "a0", product = "qq_vip_month"},
    {account = "a1", product = "qq_vip_month", ahead = true},
    {account = "a2", product = "qq_vip_month", ahead = true},
  }) do
    local ok, r = pcall(vipd.recharge, ask)
    vipd.log.info("loop recharge", {account = ask.account, ok = ok, result = tostring(r)})
  end
end)
"#
        .into(),
    )];
    // max_price 20.00 is held per order, 15.00 is paid: one fits in 30.00.
    cfg.top = "manual: { budget: { per_day: 30.00 } }".into();
    let stack = Stack::start(&cfg).await;
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for ahead in [false, false, true, true] {
        let reply = http
            .post(format!("{}/api/recharge", stack.admin))
            .json(&serde_json::json!({"account": "a0", "product": "qq_vip_month", "ahead": ahead, "reason": "loop"}))
            .send()
            .await
            .unwrap();
        answers.push((reply.status().as_u16(), reply.text().await.unwrap()));
        stack.after_reads(2, None).await;
    }
    let billed = stack.billed().await;
    let log = stack.log();
    assert_eq!(billed.get("a0"), None, "{billed:?}\n{log}");
    for (code, body) in &answers[..2] {
        assert_eq!(*code, 409, "{body}");
        assert!(
            body.contains("not due") && body.contains("due at"),
            "{body}"
        );
        assert!(body.contains("ahead"), "it says how to pay earlier: {body}");
    }
    for (code, body) in &answers[2..] {
        assert_eq!(*code, 409, "{body}");
        assert!(body.contains("more than one period ahead"), "{body}");
    }
    assert!(log.contains("not due: qq_vip ends in"), "{log}");
    // a1 and a2 are within a period of due: asked ahead, the first paid
    // once (its new end is then two periods off), the other was stopped by
    // the manual budget.
    let ahead: usize = ["a1", "a2"].iter().filter_map(|a| billed.get(*a)).sum();
    assert_eq!(ahead, 1, "{billed:?}\n{log}");
    assert!(log.contains("budget"), "the refusals say why:\n{log}");
    let orders = stack.orders().await;
    assert!(orders.iter().all(|o| o["rule"] == "manual"));
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
    stack.after_reads(2, None).await;
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
