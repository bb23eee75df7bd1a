//! Secrets never show: distinctive secrets in all three forms (`${env:}`,
//! `${file:}`, `${credential:}`), a renewal cycle, a reload and a failing
//! read, then every output surface scanned for them: the daemon's log,
//! `vipd status`/`check` (text and JSON), `/api/*`, `/metrics`, and what a
//! plugin can see (it logs `vipd.config`, its settings and every event).
//!
//! Its own test binary: it sets process environment for the children.

mod common;

use std::time::Duration;

use common::stack::{Stack, StackConfig};
use common::{SECRET, run, vipd};

const ENV_SECRET: &str = "ENVxSECRETx6c1f0e";
const FILE_SECRET: &str = "FILExSECRETx93ad2b";
const CRED_TOKEN: &str = "CREDxTOKENx5e77c4";
const CRED_ADMIN: &str = "CREDxADMINx0b9d1a";

#[tokio::test]
async fn secrets_appear_on_no_surface() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("a0_token"), CRED_TOKEN).unwrap();
    std::fs::write(creds.path().join("admin"), CRED_ADMIN).unwrap();
    let secret_file = creds.path().join("app_key");
    std::fs::write(&secret_file, FILE_SECRET).unwrap();
    // SAFETY: this binary has one test, so nothing else reads the
    // environment concurrently; the children inherit it.
    unsafe {
        std::env::set_var("VIPD_TEST_RECHARGE_SECRET", ENV_SECRET);
        std::env::set_var("CREDENTIALS_DIRECTORY", creds.path());
    }
    let mut cfg = StackConfig::due(2);
    cfg.sandbox = "  mode: async\n  callback_delay: 200ms".into();
    cfg.daemon = "  admin_token: \"${credential:admin}\"".into();
    cfg.rewrite = vec![
        (
            format!("secret: \"{SECRET}\""),
            "secret: \"${env:VIPD_TEST_RECHARGE_SECRET}\"".into(),
        ),
        (
            "oauth_consumer_key: \"101234567\",".into(),
            format!(
                "oauth_consumer_key: \"101234567\", client_secret: \"${{file:{}}}\",",
                secret_file.display()
            ),
        ),
        (
            "access_token: tok-a0".into(),
            "access_token: \"${credential:a0_token}\"".into(),
        ),
    ];
    cfg.files = vec![(
        "scripts/peek.lua".into(),
        r#"
vipd.log.info("config " .. vipd.json.encode(vipd.config))
for _, e in ipairs({ "vip_info", "before_recharge", "recharge_result", "order_settled",
                     "renewal_verified", "account_auth_failed", "error" }) do
  vipd.on(e, function(ev) vipd.log.info("event " .. vipd.json.encode(ev)) end)
end
"#
        .into(),
    )];
    let stack = Stack::start(&cfg).await;
    let admin = reqwest::Client::new();
    let get = |path: &str| {
        admin
            .get(format!("{}{path}", stack.admin))
            .bearer_auth(CRED_ADMIN)
            .send()
    };
    stack
        .wait_for("both renewed", Duration::from_secs(20), || async {
            let orders: serde_json::Value = get("/api/orders").await.ok()?.json().await.ok()?;
            let orders = orders.as_array()?;
            (orders.len() == 2 && orders.iter().all(|o| o["state"] == "succeeded")).then_some(())
        })
        .await;
    // A reload, and a read that fails (a0's token revoked upstream).
    let r = admin
        .post(format!("{}/api/reload", stack.admin))
        .bearer_auth(CRED_ADMIN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = common::post_json(
        &format!("{}/_sandbox/accounts/a0", stack.sandbox_url),
        serde_json::json!({ "revoke_tokens": true }),
    )
    .await;
    assert!(s.is_success(), "{s}");
    stack
        .wait_for(
            "a0's failed read alerted",
            Duration::from_secs(20),
            || async {
                let status: serde_json::Value = get("/api/status").await.ok()?.json().await.ok()?;
                let events = status["events"].as_array()?;
                events
                    .iter()
                    .any(|e| e["kind"] == "account_auth_failed")
                    .then_some(())
            },
        )
        .await;

    let mut surfaces: Vec<(String, String)> = Vec::new();
    for path in [
        "/api/status",
        "/api/orders",
        "/api/plan",
        "/metrics",
        "/healthz",
    ] {
        let text = get(path).await.unwrap().text().await.unwrap();
        assert!(!text.is_empty(), "{path} answered nothing");
        surfaces.push((path.into(), text));
    }
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["check"],
        vec!["check", "--format", "json"],
        vec!["orders", "--json"],
    ] {
        let (_, out, err) = run(vipd().args(&args).arg("--config").arg(&stack.config));
        let text = format!("{out}{err}");
        surfaces.push((format!("vipd {}", args.join(" ")), text));
    }
    let log = stack.log();
    assert!(
        log.contains("config {"),
        "the plugin did not log vipd.config"
    );
    assert!(log.contains("event {"), "the plugin did not log events");
    assert!(
        log.contains("account_auth_failed"),
        "the revoked token produced no auth failure:\n{log}"
    );
    surfaces.push(("daemon log".into(), log));
    for (surface, text) in &surfaces {
        for secret in [ENV_SECRET, FILE_SECRET, CRED_TOKEN, CRED_ADMIN] {
            assert!(
                !text.contains(secret),
                "{secret} appears in {surface}:\n{text}"
            );
        }
    }
}
