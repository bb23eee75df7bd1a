//! The renewal engine end to end where only processes show it: the real
//! `vipd run` against the real `vipd sandbox`, two processes over
//! loopback (kill -9, SIGTERM, the CLI and the admin API against a running
//! daemon, reloads, start-up pruning, a few hundred accounts). The paying
//! path itself (renewals, callbacks, evidence, budgets, retries, pauses)
//! is tested in process on paused time: `paying/`.

mod common;

use std::time::Duration;

use common::stack::{SILENT_VENDOR, Stack, StackConfig};
use common::{run, signed, vipd};
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
    tokio::time::sleep(Duration::from_secs(4)).await;
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

#[tokio::test]
async fn manual_recharge_uses_the_same_ledger_guards() {
    let mut cfg = StackConfig::due(1);
    cfg.accounts.push(("a1".into(), Some("20d".into())));
    cfg.sandbox = "  mode: sync".into();
    let stack = Stack::sandbox_only(&cfg).await;
    let recharge_as = |account: &str, flag: Option<&str>| {
        let mut c = vipd();
        c.arg("recharge").arg("--config").arg(&stack.config).args([
            "--account",
            account,
            "--product",
            "qq_vip_month",
        ]);
        c.args(flag);
        c.output().unwrap()
    };
    let recharge = |dry: bool| recharge_as("a0", dry.then_some("--dry-run"));
    let dry = recharge(true);
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(said.contains("dry run: would renew"), "{dry:?}");
    // It named the stand-in rule's window (`renew_before 4294967295s`).
    assert!(!said.contains("renew_before"), "{said}");
    assert!(said.contains("qq_vip ends in"), "{said}");
    assert_eq!(stack.sandbox_orders().await.len(), 0);
    let first = recharge(false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("succeeded"));
    let end = stack
        .get(&format!("{}/_sandbox/accounts", stack.sandbox_url))
        .await[0]["ends"]["qq_vip"]
        .as_i64()
        .unwrap();
    let (_, orders_out, _) = run(vipd()
        .arg("orders")
        .arg("--config")
        .arg(&stack.config)
        .arg("--json"));
    let orders: Vec<Value> = serde_json::from_str(&orders_out).unwrap();
    let observed = orders[0]["observed_end"].as_i64().unwrap();
    assert_eq!(end, observed + 30 * 86_400);
    // The end moved 30 days: no longer due, so a second renewal is refused
    // (exit 1, saying when it will be due); asked --ahead it pays once, and
    // then the membership is more than one period from due.
    let again = recharge(false);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("not due") && err.contains("--ahead"), "{err}");
    // a1 has 20 days left: within one period of due, so --ahead pays once;
    // then it is more than a period from due.
    let ahead = || recharge_as("a1", Some("--ahead"));
    let paid_ahead = ahead();
    assert!(paid_ahead.status.success(), "{paid_ahead:?}");
    assert!(String::from_utf8_lossy(&paid_ahead.stdout).contains("succeeded"));
    let twice = ahead();
    assert_eq!(twice.status.code(), Some(1));
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("more than one period ahead"), "{err}");
    assert_eq!(stack.billed().await.get("a1"), Some(&1));
    // The same period twice is never paid: recharge again with the
    // sandbox's end put back to what the first order saw.
    common::post_json(
        &format!("{}/_sandbox/accounts/a0", stack.sandbox_url),
        json!({"ends": {"qq_vip": observed}}),
    )
    .await;
    let second = recharge(false);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("not renewing: order succeeded"), "{err}");
    assert_eq!(stack.billed().await.get("a0"), Some(&1));
}

#[tokio::test]
async fn admin_api_needs_the_bearer_token_when_set() {
    let mut cfg = StackConfig::due(0);
    cfg.daemon = "  admin_token: \"${file:token.txt}\"\n  read_token: \"${file:read.txt}\"".into();
    cfg.files = vec![
        ("token.txt".into(), "s3cret-admin-token\n".into()),
        ("read.txt".into(), "scrape-only\n".into()),
    ];
    let stack = Stack::start(&cfg).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/status", stack.admin);
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer realm=\"vipd\""
    );
    assert_eq!(
        http.get(&url)
            .bearer_auth("S3CRET-ADMIN-TOKEN")
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the token is compared exactly"
    );
    assert_eq!(
        http.get(&url)
            .header("authorization", "bearer s3cret-admin-token")
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the scheme ignores case"
    );
    assert_eq!(
        http.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(&url)
            .bearer_auth("s3cret-admin-token")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/healthz", stack.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The read token reads, and nothing else: a scrape credential cannot
    // spend money, reload, resolve or export the store.
    for path in [
        "/metrics",
        "/api/status",
        "/api/orders",
        "/api/orders/count",
        "/api/plan",
    ] {
        let reply = http
            .get(format!("{}{path}", stack.admin))
            .bearer_auth("scrape-only")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "read token on GET {path}");
    }
    for (path, body) in [
        (
            "/api/recharge",
            json!({"account": "a0", "product": "qq_vip"}),
        ),
        ("/api/reload", json!({})),
        ("/api/orders/x/resolve", json!({"as": "failed"})),
        ("/api/store/release", json!({"account": null})),
    ] {
        let reply = http
            .post(format!("{}{path}", stack.admin))
            .bearer_auth("scrape-only")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 403, "read token on POST {path}");
    }
    let backup = http
        .get(format!("{}/api/store/backup", stack.admin))
        .bearer_auth("scrape-only")
        .send()
        .await
        .unwrap();
    assert_eq!(backup.status(), 403, "the backup is every record at once");
    // The CLI reads the token from the configuration.
    let (code, out, err) = run(vipd()
        .arg("status")
        .arg("--config")
        .arg(&stack.config)
        .arg("--json"));
    assert_eq!(code, 0, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["generation"], 1, "answered by the live daemon");
    assert!(!out.contains("s3cret-admin-token"));
    assert!(!stack.log().contains("s3cret-admin-token"));
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
        .args(["resolve", &key[..10], "--as", "failed"]));
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

/// A reload cannot open an admin API that other hosts reach: with the
/// listener on every interface, a new file that drops the token (and
/// names a loopback address, which only takes effect at restart) is
/// refused and the token stays in force.
#[tokio::test]
async fn a_reload_cannot_drop_the_token_of_a_public_admin_api() {
    let mut cfg = StackConfig::due(0);
    cfg.daemon = "  admin_token: \"${file:token.txt}\"".into();
    cfg.files = vec![("token.txt".into(), "s3cret-admin-token\n".into())];
    cfg.rewrite = vec![(
        "admin_listen: 127.0.0.1:0".into(),
        "admin_listen: 0.0.0.0:0".into(),
    )];
    let stack = Stack::start(&cfg).await;
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let open = text
        .replace("  admin_token: \"${file:token.txt}\"\n", "")
        .replace("admin_listen: 0.0.0.0:0", "admin_listen: 127.0.0.1:0");
    assert_ne!(open, text);
    std::fs::write(&stack.config, open).unwrap();
    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{}/api/reload", stack.admin))
        .bearer_auth("s3cret-admin-token")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 422);
    let body: Value = reply.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("daemon.admin_token: removed"),
        "{body}"
    );
    let status = http
        .get(format!("{}/api/status", stack.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 401, "the token is still in force");
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

/// A manual order through the running daemon is followed up like a rule's
/// (no rule checks it: the rule here checks hourly and a0 is not due; the
/// order is asked ahead), so
/// it is verified within seconds, and `status` shows it. Before, the
/// renewal was verified only at a rule's next check and status never
/// named it.
#[tokio::test]
async fn a_manual_order_is_verified_and_shown() {
    let mut cfg = StackConfig::due(1);
    cfg.accounts = vec![("a0".into(), Some("20d".into()))];
    cfg.sandbox = "  mode: async\n  callback_delay: 200ms".into();
    cfg.rewrite = vec![("check: { every: 1s }".into(), "check: { every: 1h }".into())];
    let mut stack = Stack::start(&cfg).await;
    // The first (spread) check sees a0 not due.
    stack
        .wait_for("first check", Duration::from_secs(10), || async {
            let s = stack.status().await;
            s["checks"][0]["checked_at"].as_i64().map(|_| ())
        })
        .await;
    let out = vipd()
        .arg("recharge")
        .arg("--config")
        .arg(&stack.config)
        .args(["--account", "a0", "--product", "qq_vip_month", "--ahead"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = stack
        .wait_for("manual order verified", Duration::from_secs(10), || async {
            let s = stack.status().await;
            let v = &s["manual"][0]["verification"];
            (v["status"] == "verified").then(|| s.clone())
        })
        .await;
    assert_eq!(verified["manual"][0]["account"], "a0");
    assert_eq!(verified["manual"][0]["order"]["state"], "succeeded");
    assert!(!common::events_of(&verified, "renewal_verified").is_empty());
    let (code, text, err) = run(vipd().arg("status").arg("--config").arg(&stack.config));
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("manual / a0 (qq_vip, qq_vip_month)"),
        "{text}"
    );
    assert!(text.contains("verified    yes: ends"), "{text}");
    // With the daemon stopped nothing checks: no "next check in 17s".
    assert_eq!(stack.stop_daemon(), Some(0));
    let (code, text, err) = run(vipd().arg("status").arg("--config").arg(&stack.config));
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("daemon not running"), "{text}");
    assert!(
        text.contains("next check  - (daemon not running)"),
        "{text}"
    );
    assert!(text.contains("manual / a0"), "{text}");
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
