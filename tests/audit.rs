//! Who and why, as processes: named admin tokens recorded as who answered
//! an approval (a read token refused), the Unix user the control socket
//! reports, reasons required, and an `Idempotency-Key` on the admin
//! recharge answered once, across a restart.

use std::time::Duration;

use crate::common::stack::{Stack, StackConfig};
use crate::common::{run, vipd};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

/// `a0` is due and its renewal (20.00) waits for approval; `a1` ends in
/// 20 days. Tokens: `admin`, `alice` (admin), `grafana` (read).
fn config() -> StackConfig {
    let mut cfg = StackConfig::due(1);
    cfg.accounts.push(("a1".into(), Some("20d".into())));
    cfg.sandbox = "  mode: sync".into();
    cfg.rule = "    budget: { approve_above: 10.00 }".into();
    cfg.daemon = "  admin_token: \"${file:admin.txt}\"\n  tokens:\n    alice: { token: \"${file:alice.txt}\" }\n    grafana: { token: \"${file:grafana.txt}\", access: read }".into();
    cfg.files = vec![
        ("admin.txt".into(), "admin-token-0123456789\n".into()),
        ("alice.txt".into(), "alice-token-0123456789\n".into()),
        ("grafana.txt".into(), "grafana-token-0123456789\n".into()),
    ];
    cfg
}

/// `GET path` with the read token.
async fn read(stack: &Stack, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", stack.admin))
        .bearer_auth("grafana-token-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn orders(stack: &Stack) -> Vec<Value> {
    serde_json::from_value(read(stack, "/api/orders").await).unwrap()
}

async fn post(stack: &Stack, token: &str, path: &str, body: Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", stack.admin))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_token_s_name_is_who_answered_and_a_read_token_cannot() {
    let stack = Stack::start(&config()).await;
    let awaiting = stack
        .wait_for("a0's renewal awaiting approval", LONG, || async {
            orders(&stack)
                .await
                .into_iter()
                .find(|o| o["state"] == "awaiting_approval")
        })
        .await;
    let key = awaiting["key"].as_str().unwrap().to_owned();
    let approve = format!("/api/orders/{key}/approve");
    let (code, text) = post(
        &stack,
        "grafana-token-0123456789",
        &approve,
        json!({"reason": "ok"}),
    )
    .await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("token grafana may only read"), "{text}");
    let (code, text) = post(&stack, "alice-token-0123456789", &approve, json!({})).await;
    assert_eq!(code, 422, "no reason: {text}");
    let (code, text) = post(
        &stack,
        "alice-token-0123456789",
        &approve,
        json!({"reason": "  "}),
    )
    .await;
    assert_eq!(code, 409, "a blank reason: {text}");
    assert!(text.contains("a reason is required"), "{text}");
    let (code, text) = post(
        &stack,
        "alice-token-0123456789",
        &approve,
        json!({"reason": "budgeted"}),
    )
    .await;
    assert_eq!(code, 200, "{text}");
    let paid = stack
        .wait_for("the approved renewal paid", LONG, || async {
            orders(&stack)
                .await
                .into_iter()
                .find(|o| o["key"] == key.as_str() && o["state"] == "succeeded")
        })
        .await;
    assert_eq!(paid["approval"]["by"], "token alice");
    assert_eq!(paid["approval"]["why"], "budgeted");
    let history: Vec<&str> = paid["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["why"].as_str().unwrap())
        .collect();
    assert!(
        history
            .iter()
            .any(|w| w.contains("approved by token alice: budgeted")),
        "{history:#?}"
    );
    // The CLI beside the daemon goes through its control socket: the
    // kernel names the user, whatever the command says.
    let (code, out, err) = run(vipd()
        .arg("orders")
        .arg("--config")
        .arg(&stack.config)
        .args(["resolve", &key[..12], "--as", "failed", "--reason", "test"]));
    assert_ne!(code, 0, "a succeeded order is not resolvable: {out}");
    assert!(err.contains("only pending and unknown"), "{err}");
    // SAFETY: getuid cannot fail.
    let user = vipd::http::serve::user_name(unsafe { libc::getuid() });
    let (code, out, err) = run(vipd()
        .arg("recharge")
        .arg("--config")
        .arg(&stack.config)
        .args([
            "--account",
            "a1",
            "--product",
            "qq_vip_month",
            "--ahead",
            "--reason",
            "early for the audit",
        ]));
    assert_eq!(code, 0, "{err}");
    let manual = orders(&stack)
        .await
        .into_iter()
        .find(|o| o["account"] == "a1")
        .unwrap_or_else(|| panic!("no order for a1: {out}"));
    let planned = manual["history"][0]["why"].as_str().unwrap();
    assert!(
        planned.contains(&format!("manual, by {user}: early for the audit")),
        "{planned}"
    );
}

/// `POST /api/recharge` with an `Idempotency-Key`: status, whether it was
/// an answer given again, and the text.
async fn keyed(stack: &Stack, body: Value, key: &str) -> (u16, bool, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/recharge", stack.admin))
        .bearer_auth("admin-token-0123456789")
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), replayed, r.text().await.unwrap())
}

#[tokio::test]
async fn an_idempotency_key_answers_once_and_outlives_a_restart() {
    let mut stack = Stack::start(&config()).await;
    let body =
        json!({"account": "a1", "product": "qq_vip_month", "ahead": true, "reason": "renew early"});
    let (code, replayed, first) = keyed(&stack, body.clone(), "k-1").await;
    assert_eq!((code, replayed), (200, false), "{first}");
    // The same request again, its keys in another order: the first answer.
    let shuffled =
        json!({"reason": "renew early", "ahead": true, "product": "qq_vip_month", "account": "a1"});
    let (code, replayed, again) = keyed(&stack, shuffled, "k-1").await;
    assert_eq!((code, replayed), (200, true), "{again}");
    assert_eq!(again, first);
    let (code, _, other) = keyed(
        &stack,
        json!({"account": "a1", "product": "qq_vip_month", "ahead": true, "reason": "another"}),
        "k-1",
    )
    .await;
    assert_eq!(code, 409, "{other}");
    assert!(other.contains("Idempotency-Key k-1 was used at"), "{other}");
    let (code, _, bad) = keyed(&stack, body.clone(), "").await;
    assert_eq!(code, 400, "{bad}");
    assert_eq!(stack.billed().await.get("a1"), Some(&1));

    stack.stop_daemon();
    stack.start_daemon().await;
    let (code, replayed, after) = keyed(&stack, body.clone(), "k-1").await;
    assert_eq!((code, replayed), (200, true), "{after}");
    assert_eq!(after, first);
    // A new key is a new request: the ledger refuses paying a1 twice.
    let (code, replayed, second) = keyed(&stack, body, "k-2").await;
    assert_eq!((code, replayed), (409, false), "{second}");
    assert_eq!(stack.billed().await.get("a1"), Some(&1));
}

/// `vipd forecast` beside the daemon: a1 (ends in 20 days, renew_before
/// 3d) is renewed 17 days on and every 30 days after; its price is above
/// `approve_above`, so each needs approval. As JSON and as text.
#[tokio::test]
async fn the_forecast_names_each_renewal_its_spend_and_its_approval() {
    let stack = Stack::start(&config()).await;
    stack
        .wait_for("both pairs checked", LONG, || async {
            let o = orders(&stack).await;
            (!o.is_empty()).then_some(())
        })
        .await;
    let forecast = |json: bool| {
        let mut c = vipd();
        c.arg("forecast")
            .arg("--config")
            .arg(&stack.config)
            .args(["--days", "60"]);
        if json {
            c.arg("--json");
        }
        run(&mut c)
    };
    let (code, out, err) = forecast(true);
    assert_eq!(code, 0, "{err}");
    let f: Value = serde_json::from_str(&out).unwrap();
    let a1: Vec<i64> = f["renewals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["account"] == "a1")
        .map(|r| {
            assert_eq!(r["needs_approval"], true, "{r}");
            let days = (r["at"].as_i64().unwrap() - f["from"].as_i64().unwrap()) as f64 / 86_400.0;
            days.round() as i64
        })
        .collect();
    assert_eq!(a1, [17, 47], "{out}");
    let (code, text, err) = forecast(false);
    assert_eq!(code, 0, "{err}");
    assert!(text.starts_with("forecast from "), "{text}");
    assert!(text.contains("(needs approval)"), "{text}");
}

/// A restore and a release change no order; who made them and why are
/// in the event log: the restore as the Unix user running it, the release
/// as the token that asked.
#[tokio::test]
async fn a_restore_and_a_release_are_in_the_event_log_with_who_and_why() {
    let mut stack = Stack::start(&config()).await;
    stack
        .wait_for("a first order", LONG, || async {
            (!orders(&stack).await.is_empty()).then_some(())
        })
        .await;
    let backup = stack.dir.path().join("backup.vipd");
    let config = stack.config.clone();
    let store = |args: &[&str]| run(vipd().arg("store").args(args).arg("--config").arg(&config));
    let (code, _, err) = store(&["backup", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    stack.stop_daemon();
    let state = stack.dir.path().join("state");
    std::fs::rename(&state, stack.dir.path().join("state.old")).unwrap();
    let (code, _, err) = store(&["restore", backup.to_str().unwrap()]);
    assert_ne!(code, 0, "a restore says why");
    assert!(err.contains("--reason"), "{err}");
    let (code, _, err) = store(&[
        "restore",
        backup.to_str().unwrap(),
        "--reason",
        "disk replaced",
    ]);
    assert_eq!(code, 0, "{err}");
    stack.start_daemon().await;
    let (code, text) = post(
        &stack,
        "alice-token-0123456789",
        "/api/store/release",
        json!({"account": null, "reason": "checked the vendor's order list"}),
    )
    .await;
    assert_eq!(code, 200, "{text}");
    let status = read(&stack, "/api/status").await;
    let detail = |kind: &str| -> String {
        status["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .map(|e| e["detail"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {kind} event: {status}"))
    };
    // SAFETY: getuid cannot fail.
    let user = vipd::http::serve::user_name(unsafe { libc::getuid() });
    assert!(
        detail("store_restored").ends_with(&format!("by {user}: disk replaced")),
        "{}",
        detail("store_restored")
    );
    assert_eq!(
        detail("store_released"),
        "every held order released by token alice: checked the vendor's order list"
    );
}
