//! The renewal engine end to end where only processes show it: the real
//! `vipd run` against the real `vipd sandbox`, two processes over
//! loopback (kill -9, SIGTERM, the CLI against a running
//! daemon, reloads, start-up pruning, a few hundred accounts). The paying
//! path itself (renewals, callbacks, evidence, budgets, retries, pauses)
//! is tested in process on paused time: `paying/`; manual orders and the
//! admin API beside a running daemon: `operator.rs`.

use std::time::Duration;

use crate::common::stack::{SILENT_VENDOR, Stack, StackConfig};
use crate::common::{run, signed, vipd};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

fn states(orders: &[Value]) -> Vec<String> {
    orders
        .iter()
        .map(|o| o["state"].as_str().unwrap().to_owned())
        .collect()
}

/// The states an order went through, oldest first.
fn history(order: &Value) -> Vec<&str> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect()
}

async fn settled_and_verified(stack: &Stack, n: usize) -> Vec<Value> {
    stack
        .wait_for("orders succeeded and verified", LONG, || async {
            let orders = stack.orders().await;
            let done = orders
                .iter()
                .filter(|o| o["state"] == "succeeded" && o["verification"]["status"] == "verified")
                .count();
            (done >= n).then_some(orders)
        })
        .await
}

#[tokio::test]
async fn kill_9_with_a_recharge_in_flight_never_pays_twice() {
    let mut cfg = StackConfig::due(1);
    // The vendor bills, then holds the reply: the daemon waits in `sent`.
    cfg.sandbox = "  mode: sync\n  faults: { recharge: { hang_rate: 1.0, hang_for: 20s } }".into();
    cfg.provider = "    max_in_flight: 1".into();
    let mut stack = Stack::sandbox_only(&cfg).await;
    // Let the daemon wait long enough for the kill to land mid-request.
    let text = std::fs::read_to_string(&stack.config).unwrap().replace(
        "    timeout: 2s\n\nproducts",
        "    timeout: 30s\n\nproducts",
    );
    std::fs::write(&stack.config, text).unwrap();
    stack.start_daemon().await;
    stack
        .wait_for("the request to reach the vendor", LONG, || async {
            let sb = stack.sandbox_orders().await;
            (!sb.is_empty()).then_some(())
        })
        .await;
    let in_flight = stack.orders().await;
    assert_eq!(
        states(&in_flight),
        ["sent"],
        "the order is durably `sent` before the request leaves"
    );
    stack.kill_daemon();

    stack.control(json!({"recharge": {}})).await; // faults off
    stack.start_daemon().await;
    // Restart: `sent` → `unknown`; then the end moving settles it.
    let orders = stack
        .wait_for("the in-flight order to resolve", LONG, || async {
            let o = stack.orders().await;
            (o.len() == 1 && o[0]["state"] == "succeeded").then_some(o)
        })
        .await;
    let history = history(&orders[0]);
    assert_eq!(history, ["planned", "sent", "unknown", "succeeded"]);
    assert!(
        orders[0]["history"][3]["why"]
            .as_str()
            .unwrap()
            .starts_with("evidence")
    );
    // Four more checks of a0 (one a second).
    stack.after_reads(4, None).await;
    assert_eq!(
        stack.billed().await.get("a0"),
        Some(&1),
        "never a second billed order"
    );
    assert_eq!(stack.sandbox_orders().await.len(), 1, "nothing re-sent");
}

#[tokio::test]
async fn sigterm_exits_zero_and_keeps_the_ledger() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let mut stack = Stack::start(&cfg).await;
    settled_and_verified(&stack, 1).await;
    assert_eq!(stack.stop_daemon(), Some(0));
    let (code, out, err) = run(vipd()
        .arg("orders")
        .arg("--config")
        .arg(&stack.config)
        .arg("--json"));
    assert_eq!(code, 0, "{err}");
    let orders: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(states(&orders), ["succeeded"]);
}

/// The short form of `cargo bench --bench load`: many accounts due at once,
/// through every concurrency limit and the group commit, each paid once.
#[tokio::test]
async fn three_hundred_due_accounts_are_each_paid_once() {
    let mut cfg = StackConfig::due(300);
    cfg.sandbox = "  mode: async\n  callback_delay: 100ms".into();
    cfg.provider = "    max_in_flight: 16".into();
    let stack = Stack::start(&cfg).await;
    stack
        .wait_for("300 settled orders", Duration::from_secs(60), || async {
            let c = stack
                .get(&format!("{}/api/orders/count", stack.admin))
                .await;
            (c["succeeded"] == 300).then_some(())
        })
        .await;
    let billed = stack.billed().await;
    assert_eq!(billed.len(), 300);
    assert!(billed.values().all(|&n| n == 1));
}

/// The operator's side of tests/paying/operator.rs's unverified renewal: resolved
/// through the CLI, which finds the running daemon's API.
#[tokio::test]
async fn a_paid_renewal_that_never_shows_is_unverified_and_not_repaid() {
    let mut cfg = StackConfig::due(1);
    // The vendor will take 60 s to extend and never calls back itself.
    cfg.sandbox = SILENT_VENDOR.into();
    cfg.rule = "    verify_within: 2s".into();
    let stack = Stack::start(&cfg).await;
    let order = stack.pending_order(LONG).await;
    // The test plays the vendor: "success", though the end will not move.
    let vendor_id = order["vendor_orderid"].as_str().unwrap();
    let good = signed(&[("orderid", vendor_id), ("status", "success")]);
    let r = reqwest::Client::new()
        .post(format!("{}/notify/wapi", stack.callbacks))
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = stack
        .wait_for("renewal_unverified", LONG, || async {
            let s = stack.status().await;
            s["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "renewal_unverified")
                .then_some(s)
        })
        .await;
    let orders = stack.orders().await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["verification"]["status"], "unverified");
    // That nothing is paid again while it is unverified is held in process
    // (tests/paying/operator.rs, over 30 s of checks on paused time).
    assert_eq!(
        stack.sandbox_orders().await.len(),
        1,
        "nothing re-paid: {status}"
    );

    // The operator checks with the vendor: never delivered. Resolving it as
    // failed refunds the budget and lets the same period be retried.
    let key = orders[0]["key"].as_str().unwrap();
    let (code, out, err) = run(vipd()
        .arg("orders")
        .arg("--config")
        .arg(&stack.config)
        .args([
            "resolve",
            &key[..10],
            "--as",
            "failed",
            "--reason",
            "vendor: never delivered",
        ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is now failed"));
    stack
        .wait_for("the retry under the same key", LONG, || async {
            let o = stack.orders().await;
            (o.len() == 1 && o[0]["attempts"] == 2 && o[0]["state"] == "pending").then_some(())
        })
        .await;
    assert_eq!(stack.sandbox_orders().await.len(), 2);
}

#[tokio::test]
async fn events_past_their_retention_are_pruned_at_start_and_orders_stay() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let mut stack = Stack::start(&cfg).await;
    let orders = settled_and_verified(&stack, 1).await;
    let events = stack.status().await["events"].as_array().unwrap().len();
    assert!(events >= 3, "planned, settled, verified: {events}");
    assert_eq!(stack.stop_daemon(), Some(0));

    // Restarted with a retention of one second, two seconds later.
    let text = std::fs::read_to_string(&stack.config).unwrap();
    std::fs::write(
        &stack.config,
        text.replace("daemon:\n", "daemon:\n  event_retention: 1s\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    stack.start_daemon().await;
    let log = stack
        .wait_for("the old events pruned", LONG, || async {
            let log = stack.log();
            log.contains("pruned").then_some(log)
        })
        .await;
    assert!(log.contains(&format!("pruned={events}")), "{log}");
    // stderr is a file here, as under systemd: no colour codes in it.
    assert!(!log.contains('\x1b'), "{log}");
    let status = stack.status().await;
    assert!(
        status["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["at"].as_i64().unwrap() >= restarted - 1),
        "{:#}",
        status["events"]
    );
    // The order and its history are all still there.
    let after = stack.orders().await;
    assert_eq!(after.len(), orders.len());
    assert_eq!(after[0]["history"], orders[0]["history"]);
}

/// A refused reload with two causes logs two records, each with its level
/// and its cause: the message once spanned lines, and a journal made the
/// cause a record without a level.
#[tokio::test]
async fn a_refused_reload_logs_one_record_per_cause() {
    let stack = Stack::start(&StackConfig::due(0)).await;
    // No scripts folder is no plugins: not a warning at every start.
    assert!(!stack.log().contains("cannot watch"), "{}", stack.log());
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let broken = text
        .replace("retry_base: 1s", "retry_base: 1s\n  timezone: Mars/Olympus")
        .replace("    product: qq_vip_month", "    product: qq_vip_yearly");
    assert_ne!(broken, text);
    std::fs::write(&stack.config, broken).unwrap();
    let (code, body) = stack.reload().await;
    assert_eq!(code, 422, "{body}");
    let log = stack.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload refused"))
        .collect();
    assert!(refused.len() >= 2, "{log}");
    for line in &refused {
        assert!(line.contains("ERROR"), "{line}");
    }
    assert!(refused.iter().any(|l| l.contains("Mars/Olympus")), "{log}");
    assert!(refused.iter().any(|l| l.contains("qq_vip_yearly")), "{log}");
}

/// Accounts from `accounts_file:` (JSON Lines) are renewed like any, and a
/// change to that file reloads them through the file watcher; a bad line
/// is refused with its file and line, and the accounts in force stay.
#[tokio::test]
async fn accounts_from_a_json_lines_file_renew_and_reload_when_it_changes() {
    let line = |name: &str, qq: u32| {
        format!(
            r#"{{"name": "{name}", "qq_number": {qq}, "openid": "OPENID-{name}", "access_token": "tok-{name}"}}"#
        )
    };
    let mut cfg = StackConfig::due(1);
    cfg.files
        .push(("accounts.jsonl".into(), format!("{}\n", line("f1", 30001))));
    cfg.top = "accounts_file: accounts.jsonl\n".into();
    // The sandbox reads the same file: f1's membership ends in a day.
    cfg.sandbox = "    f1: { qq_vip: \"1d\" }".into();
    let stack = Stack::start(&cfg).await;
    let renewed = stack
        .wait_for("f1 renewed", LONG, || async {
            stack
                .orders()
                .await
                .into_iter()
                .find(|o| o["account"] == "f1" && o["state"] == "succeeded")
        })
        .await;
    assert_eq!(renewed["rule"], "keep");
    let checked = |s: &Value| -> Vec<String> {
        let mut names: Vec<String> = s["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["account"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(checked(&stack.status().await), ["a0", "f1"]);

    let file = stack.dir.path().join("accounts.jsonl");
    let two = format!("{}\n{}\n", line("f1", 30001), line("f2", 30002));
    std::fs::write(&file, &two).unwrap();
    let status = stack
        .wait_for("the file watcher's reload", LONG, || async {
            let s = stack.status().await;
            (s["generation"] == 2).then_some(s)
        })
        .await;
    assert_eq!(checked(&status), ["a0", "f1", "f2"]);

    std::fs::write(&file, format!("{two}{{\"name\": \"f3\"\n")).unwrap();
    let report = stack
        .wait_for("a refused reload", LONG, || async {
            let s = stack.status().await;
            s["last_reload"]["error"].as_str().map(str::to_owned)
        })
        .await;
    assert!(report.contains("accounts.jsonl:3:"), "{report}");
    let status = stack.status().await;
    assert_eq!(status["generation"], 2);
    assert_eq!(checked(&status), ["a0", "f1", "f2"]);
}
