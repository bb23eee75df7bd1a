//! The daemon as a service: `/metrics` after a renewal cycle, parsed by a
//! real Prometheus text parser and compared with the ledger.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::stack::{Stack, StackConfig};
use prometheus_parse::{Sample, Scrape, Value};

async fn scrape(stack: &Stack) -> (String, Vec<Sample>) {
    let resp = reqwest::get(format!("{}/metrics", stack.admin))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (text, scrape.samples)
}

fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:#?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        other => panic!("{metric}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_after_a_renewal_cycle_match_the_ledger() {
    let mut cfg = StackConfig::due(3);
    cfg.accounts.push(("later".into(), Some("40d".into())));
    cfg.sandbox = "  mode: sync".into();
    cfg.files = vec![(
        "scripts/fails.lua".into(),
        "vipd.on('order_settled', function() error('no') end)".into(),
    )];
    let stack = Stack::start(&cfg).await;
    let orders = stack
        .wait_for("three succeeded", Duration::from_secs(20), || async {
            let o = stack.orders().await;
            (o.len() == 3 && o.iter().all(|o| o["state"] == "succeeded")).then_some(o)
        })
        .await;
    // A forged callback.
    let r = reqwest::Client::new()
        .post(format!("{}/notify/wapi", stack.callbacks))
        .form(&[("orderid", "X"), ("status", "success"), ("sign", "bad")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Let the plugin calls land.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (text, samples) = scrape(&stack).await;
    // Every sample line is `name{labels} value`, every family has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap());
        assert!(
            name.starts_with("vipd_") || name.starts_with("process_"),
            "{line}"
        );
        assert!(
            rest.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
            "{line}"
        );
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        assert!(text.contains(&format!("# HELP {family} ")), "{line}");
    }

    let mut by_state: HashMap<String, f64> = HashMap::new();
    for o in &orders {
        *by_state
            .entry(o["state"].as_str().unwrap().to_owned())
            .or_default() += 1.0;
    }
    for state in [
        "planned",
        "sent",
        "pending",
        "succeeded",
        "failed",
        "unknown",
    ] {
        assert_eq!(
            value(&samples, "vipd_orders", &[("state", state)]),
            by_state.get(state).copied().unwrap_or(0.0),
            "{state}"
        );
    }
    let unverified = orders
        .iter()
        .filter(|o| o["verification"]["status"] == "unverified")
        .count();
    assert_eq!(
        value(&samples, "vipd_renewals_unverified", &[]),
        unverified as f64
    );
    let attempts: f64 = orders.iter().map(|o| o["attempts"].as_f64().unwrap()).sum();
    // Each attempt waited at least once for its order to be durable before
    // it was sent, and some commit answered every wait.
    let waits = value(&samples, "vipd_store_durable_waits_total", &[]);
    let commits = value(&samples, "vipd_store_commits_total", &[]);
    assert!(waits >= attempts, "{waits} waits for {attempts} attempts");
    assert!(commits >= 1.0 && commits <= waits, "{commits} commits");
    assert_eq!(
        value(
            &samples,
            "vipd_recharge_attempts_total",
            &[("class", "accepted")]
        ),
        attempts
    );
    assert_eq!(
        value(
            &samples,
            "vipd_upstream_request_duration_seconds",
            &[("provider", "wapi"), ("api", "recharge")]
        ),
        attempts
    );
    let spent: f64 = orders
        .iter()
        .map(|o| o["spent"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(spent, 45.0);
    assert_eq!(
        value(
            &samples,
            "vipd_spend_yuan",
            &[("rule", "keep"), ("period", "day")]
        ),
        spent
    );
    // Every membership is renewed: today would need what it spent, and
    // the next periods fall a month away.
    assert_eq!(
        value(
            &samples,
            "vipd_forecast_spend",
            &[("budget", "keep"), ("window", "day")]
        ),
        spent
    );
    assert!(value(&samples, "vipd_polls_total", &[("result", "ok")]) >= 4.0);
    assert_eq!(
        value(
            &samples,
            "vipd_callback_signature_failures_total",
            &[("provider", "wapi")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "vipd_plugin_errors_total", &[("plugin", "fails")]),
        3.0
    );
    assert_eq!(value(&samples, "vipd_config_generation", &[]), 1.0);
    assert_eq!(value(&samples, "vipd_config_last_reload_success", &[]), 1.0);
    // The expiry gauge says what the last check read.
    let status = stack.status().await;
    for check in status["checks"].as_array().unwrap() {
        let account = check["account"].as_str().unwrap();
        let end = check["observed_end"].as_f64().unwrap();
        assert_eq!(
            value(
                &samples,
                "vipd_membership_end_timestamp_seconds",
                &[("account", account), ("membership", "qq_vip")]
            ),
            end,
            "{account}"
        );
    }
}

/// When the only account was last checked.
async fn checked(stack: &Stack) -> Option<i64> {
    stack.status().await["checks"][0]["checked_at"].as_i64()
}

/// A stack whose account a0 carries a refresh token and whose reader has
/// the app's client secret.
fn refreshable() -> StackConfig {
    StackConfig::refreshable("40d")
}

/// The reasons of every refresh in `log`, in order.
fn refreshes(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split("access token refreshed (").nth(1))
        .map(|rest| {
            rest.split("); the rotated pair")
                .next()
                .unwrap_or(rest)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_token_with_a_known_expiry_is_refreshed_ahead_of_it() {
    let mut stack = Stack::start(&refreshable()).await;
    stack
        .wait_for("a first read", Duration::from_secs(10), || checked(&stack))
        .await;
    // Refreshed tokens live 6 s, so vipd should refresh each at half its
    // life (3 s), before the sandbox would refuse it.
    let control = format!("{}/_sandbox/control", stack.sandbox_url);
    let s = crate::common::post_json(&control, serde_json::json!({ "token_ttl": "6s" })).await;
    assert!(s.is_success());
    // The configured token has no known expiry: it is refreshed when the
    // sandbox refuses it.
    let s = crate::common::post_json(
        &format!("{}/_sandbox/accounts/a0", stack.sandbox_url),
        serde_json::json!({ "expire_tokens": true }),
    )
    .await;
    assert!(s.is_success());
    stack
        .wait_for(
            "two refreshes ahead of expiry",
            Duration::from_secs(20),
            || async {
                let ahead = refreshes(&stack.log())
                    .iter()
                    .filter(|r| *r == "expires soon")
                    .count();
                (ahead >= 2).then_some(())
            },
        )
        .await;
    let log = stack.log();
    let reasons = refreshes(&log);
    // One refresh forced by the refused configured token; every later one
    // came ahead of expiry, so no rotated token was ever refused.
    assert!(!reasons[0].contains("expires soon"), "{reasons:?}");
    assert!(
        reasons[1..].iter().all(|r| r == "expires soon"),
        "{reasons:?}\n{log}"
    );
    let after_first = &log[log.find("access token refreshed").unwrap()..];
    assert!(
        !after_first.contains("membership read failed"),
        "{after_first}"
    );
    assert!(
        !after_first.contains("account_auth_failed"),
        "{after_first}"
    );
    assert_eq!(stack.stop_daemon(), Some(0));
}

#[tokio::test]
async fn token_rotation_survives_a_restart_and_a_revoked_grant_alerts_once() {
    let mut stack = Stack::start(&refreshable()).await;
    stack
        .wait_for("a first read", Duration::from_secs(10), || checked(&stack))
        .await;
    let sandbox_account = format!("{}/_sandbox/accounts/a0", stack.sandbox_url);
    // The configured token expires: vipd refreshes (spending rt-a0) and
    // reads on.
    let s = crate::common::post_json(
        &sandbox_account,
        serde_json::json!({ "expire_tokens": true }),
    )
    .await;
    assert!(s.is_success());
    stack
        .wait_for("a refresh", Duration::from_secs(10), || async {
            stack.log().contains("access token refreshed").then_some(())
        })
        .await;
    assert_eq!(stack.stop_daemon(), Some(0));

    // After a restart the stored pair is used: the configured token is
    // expired and its refresh token spent, yet reads go on without
    // another refresh or an alert.
    let before = stack.log().len();
    stack.start_daemon().await;
    let start = checked(&stack).await.unwrap_or(0);
    stack
        .wait_for("reads after restart", Duration::from_secs(10), || async {
            checked(&stack).await.filter(|t| *t > start + 1)
        })
        .await;
    let since = stack.log()[before..].to_owned();
    assert!(!since.contains("access token refreshed"), "{since}");
    assert!(!since.contains("account_auth_failed"), "{since}");
    assert!(!since.contains("membership read failed"), "{since}");

    // The grant is revoked: one alert however many checks fail.
    let s = crate::common::post_json(
        &sandbox_account,
        serde_json::json!({ "revoke_tokens": true }),
    )
    .await;
    assert!(s.is_success());
    // Four checks that fail on the revoked grant.
    stack.after_reads(4, Some("auth_error")).await;
    let status = stack.status().await;
    let alerts: Vec<_> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "account_auth_failed")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}\n{}", stack.log());
    assert!(status["attention"]["a0"].is_string(), "{status:#}");
}

/// Right after start, before any read or payment: the build and process
/// metrics, every known label value at 0 (so a rate or an alert on it
/// has a series), and the configuration's load time.
#[tokio::test]
async fn metrics_are_present_from_start() {
    // No account: nothing is read or paid.
    let cfg = StackConfig::due(0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let stack = Stack::start(&cfg).await;
    let (text, samples) = scrape(&stack).await;
    assert_eq!(
        value(
            &samples,
            "vipd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let started = value(&samples, "process_start_time_seconds", &[]);
    assert!(
        (before - 5.0..before + 30.0).contains(&started),
        "{started} vs {before}"
    );
    assert!(value(&samples, "process_resident_memory_bytes", &[]) > 1e6);
    for result in ["ok", "error", "auth_error"] {
        assert_eq!(
            value(
                &samples,
                "vipd_polls_total",
                &[("provider", "qq"), ("result", result)]
            ),
            0.0,
            "{text}"
        );
    }
    for class in ["accepted", "pending", "transient", "rejected", "unknown"] {
        assert_eq!(
            value(
                &samples,
                "vipd_recharge_attempts_total",
                &[("provider", "wapi"), ("class", class)]
            ),
            0.0,
            "{text}"
        );
    }
    assert_eq!(
        value(
            &samples,
            "vipd_callback_signature_failures_total",
            &[("provider", "wapi")]
        ),
        0.0
    );
    let loaded = value(&samples, "vipd_config_last_reload_timestamp_seconds", &[]);
    assert!(loaded >= before.floor() - 1.0, "{loaded} vs {before}");

    // Every metric the shipped dashboard and alert rules query is one the
    // daemon exports (a family it declares, even before its first sample).
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "packaging/grafana/vipd-dashboard.json",
        "packaging/prometheus/vipd-alerts.yaml",
    ] {
        let queries: String = std::fs::read_to_string(root.join(file))
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let mut named = 0;
        for word in queries.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(word.starts_with("vipd_") || word.starts_with("process_")) {
                continue;
            }
            let family = word
                .strip_suffix("_bucket")
                .or_else(|| word.strip_suffix("_sum"))
                .or_else(|| word.strip_suffix("_count"))
                .unwrap_or(word);
            assert!(
                exported.contains(&family) || exported.contains(&word),
                "{file} queries {word}, which vipd does not export:\n{text}"
            );
            named += 1;
        }
        assert!(named >= 6, "{file} names only {named} metrics");
    }
}
