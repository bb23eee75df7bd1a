//! What an operator does beside a running daemon, as processes: manual
//! orders (`vipd recharge`, through the daemon and offline) under the same
//! ledger guards and the not-due rule, followed up until shown; the admin
//! API's bearer and read tokens, a reload that cannot drop the token of a
//! public admin API, and approvals answered through the daemon, offline,
//! and across a restart.

use std::time::Duration;

use crate::common::stack::{Stack, StackConfig};
use crate::common::{run, vipd};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

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
            "--reason",
            "new hire",
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
    crate::common::post_json(
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
        "/api/forecast",
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
        ("/api/orders/x/approve", json!({"reason": "ok"})),
        ("/api/orders/x/decline", json!({"reason": "no"})),
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
        .args([
            "--account",
            "a0",
            "--product",
            "qq_vip_month",
            "--ahead",
            "--reason",
            "early",
        ])
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
    assert!(!crate::common::events_of(&verified, "renewal_verified").is_empty());
    let (code, text, err) = run(vipd().arg("status").arg("--config").arg(&stack.config));
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("manual / a0 (qq_vip, qq_vip_month)"),
        "{text}"
    );
    assert!(text.contains("verified    yes: ends"), "{text}");
    // Its story, from the running daemon (the trace API) ...
    let config = stack.config.clone();
    let explain = |what: &str, json: bool| {
        let mut cmd = vipd();
        cmd.arg("explain").arg(what).arg("--config").arg(&config);
        if json {
            cmd.arg("--json");
        }
        run(&mut cmd)
    };
    let (code, text, err) = explain("a0", true);
    assert_eq!(code, 0, "{err}");
    let traces: serde_json::Value = serde_json::from_str(&text).unwrap();
    let steps: Vec<(String, String)> = traces[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().into(),
                s["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("decision", "manual"),
        ("transition", "planned"),
        ("transition", "succeeded"),
        ("attempt", "1"),
        ("verification", "verified"),
        ("event", "renewal_verified"),
    ] {
        assert!(
            steps.contains(&(want.0.into(), want.1.into())),
            "{want:?} not in {steps:?}"
        );
    }
    assert_eq!(steps[0].0, "decision", "{steps:?}");
    let key = traces[0]["order"]["key"].as_str().unwrap().to_owned();
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
    // ... and from the store, by a key's prefix.
    let (code, text, err) = explain(&key[..8], false);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.starts_with(&format!("order {key}  manual / a0")),
        "{text}"
    );
    assert!(text.contains("verification verified"), "{text}");
    let (code, _, err) = explain("nosuchorder", false);
    assert_eq!(code, 1);
    assert!(err.contains("no order with key nosuchorder"), "{err}");
}

/// Renewals above `approve_above` wait: one approved and one declined
/// while the daemon is stopped (recorded as the Unix user's), both kept
/// across the restart; the approved one is paid once, the declined one
/// never; a second answer through the running daemon is refused (409).
#[tokio::test]
async fn approvals_are_answered_offline_kept_across_a_restart_and_given_once() {
    let mut cfg = StackConfig::due(2);
    cfg.rule = "    budget: { approve_above: 10.00 }".into();
    let mut stack = Stack::start(&cfg).await;
    let awaiting = stack
        .wait_for("two orders awaiting approval", LONG, || async {
            let o = stack.orders().await;
            (o.len() == 2 && o.iter().all(|o| o["state"] == "awaiting_approval")).then_some(o)
        })
        .await;
    assert_eq!(stack.sandbox_orders().await.len(), 0, "nothing sent");
    let key_of = |account: &str| -> String {
        let o = awaiting.iter().find(|o| o["account"] == account).unwrap();
        o["key"].as_str().unwrap().to_owned()
    };
    let (approved, declined) = (key_of("a0"), key_of("a1"));
    let config = stack.config.clone();
    let answer = |verb: &str, key: &str, reason: &str| {
        run(vipd().arg("orders").arg("--config").arg(&config).args([
            verb,
            &key[..12],
            "--reason",
            reason,
        ]))
    };
    stack.stop_daemon();
    let (code, out, err) = answer("approve", &approved, "invoice checked");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("approved by ") && out.contains(": invoice checked"),
        "{out}"
    );
    let (code, out, err) = answer("decline", &declined, "account closing");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is now failed: declined by "), "{out}");
    let (code, _, err) = answer("approve", &declined, "changed my mind");
    assert_ne!(code, 0);
    assert!(err.contains("does not await approval"), "{err}");
    let (code, _, err) = answer("approve", &approved, "");
    assert_ne!(code, 0, "a reason is required");
    assert!(err.contains("a reason is required"), "{err}");

    stack.start_daemon().await;
    stack
        .wait_for("the approved renewal paid", LONG, || async {
            let o = stack.orders().await;
            o.iter()
                .any(|o| o["key"] == approved.as_str() && o["state"] == "pending")
                .then_some(())
        })
        .await;
    let billed = stack.billed().await;
    assert_eq!(billed.get("a0"), Some(&1), "{billed:?}");
    assert_eq!(billed.get("a1"), None, "{billed:?}");
    // Through the running daemon's API: refused, and said why.
    let (code, _, err) = answer("approve", &approved, "again");
    assert_ne!(code, 0);
    assert!(
        err.contains("409") || err.contains("does not await approval"),
        "{err}"
    );
    let orders = stack.orders().await;
    let paid = orders
        .iter()
        .find(|o| o["key"] == approved.as_str())
        .unwrap();
    assert_eq!(paid["approval"]["why"], "invoice checked");
    assert_eq!(paid["attempts"], 1);
    assert_eq!(stack.sandbox_orders().await.len(), 1);
}
