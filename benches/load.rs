//! Load benchmark: N due accounts renewed end to end.
//!
//! ```text
//! cargo bench --bench load -- 10000        # N defaults to 1000
//! ```
//!
//! Starts `vipd sandbox` (async mode, 200 ms callback delay) and `vipd run`
//! as two separate processes over loopback, every account due at start-up,
//! and waits until the daemon's ledger shows all N orders succeeded. Prints
//! the whole cycle (daemon ready → last order settled), renewals/s, p50 and
//! p99 of planned → settled per order, the daemon's peak RSS (VmHWM), and
//! what the sandbox saw (billed orders, duplicates).

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

fn config(n: usize, upstream: &str) -> String {
    let (accounts, memberships) = common::accounts(n, "1d");
    let daemon = common::rules_yaml(
        upstream,
        &accounts,
        "  startup_spread: 1s\n  max_concurrent_checks: 64\n",
        ", max_in_flight: 64",
    );
    format!(
        "{daemon}sandbox:\n  mode: async\n  callback_delay: 200ms\n  prices: {{ qq_vip_month: 15.00 }}\n  memberships:\n{memberships}"
    )
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    let (_sandbox, upstream) = common::sandbox_for(&path, |upstream| config(n, upstream));

    let started = Instant::now();
    let (_daemon, pid, admin) = common::run_daemon(&path).await;
    let http = reqwest::Client::new();
    let ready = Instant::now();
    let rss_at_ready = common::rss_mb(pid, "VmHWM:");
    println!(
        "vipd load: {n} due accounts, async sandbox (200 ms callbacks); daemon ready in {:.0} ms",
        (ready - started).as_secs_f64() * 1e3
    );
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let resp = http.get(format!("{admin}/api/orders/count")).send().await;
        if let Ok(r) = resp {
            let counts: Value = r.json().await.unwrap_or_default();
            if counts["succeeded"].as_u64().unwrap_or(0) >= n as u64 {
                break;
            }
        }
        assert!(
            ready.elapsed() < Duration::from_secs(600),
            "not done after 10 minutes"
        );
    }
    // Peak RSS of the renewal cycle, before the big listing below.
    let rss = common::rss_mb(pid, "VmHWM:");
    let orders: Vec<Value> = http
        .get(format!("{admin}/api/orders"))
        .query(&[("state", "succeeded")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut first_ms = i64::MAX;
    let mut last_ms = 0;
    let mut latencies: Vec<i64> = orders
        .iter()
        .filter_map(|o| {
            let h = o["history"].as_array()?;
            let planned = h.first()?["at_ms"].as_i64()?;
            let settled = h.iter().find(|t| t["state"] == "succeeded")?["at_ms"].as_i64()?;
            first_ms = first_ms.min(planned);
            last_ms = last_ms.max(settled);
            Some(settled - planned)
        })
        .collect();
    latencies.sort_unstable();
    let ready_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - ready.elapsed().as_millis() as i64;
    let cycle = (last_ms - ready_ms) as f64 / 1000.0;
    let sb: Vec<Value> = http
        .get(format!("{upstream}/_sandbox/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let billed = sb.iter().filter(|o| o["billed"] == true).count();
    let mut per_account = std::collections::HashMap::new();
    for o in sb.iter().filter(|o| o["billed"] == true) {
        *per_account
            .entry(o["account"].as_str().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    let twice = per_account.values().filter(|&&c| c > 1).count();
    println!("  whole cycle (ready → last settled): {cycle:.2} s");
    println!(
        "  renewals/s:                         {:.0}",
        n as f64 / cycle
    );
    println!(
        "  planned → settled: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );
    println!(
        "  first order planned {:.2} s after ready",
        (first_ms - ready_ms) as f64 / 1000.0
    );
    println!("  daemon peak RSS (VmHWM):            {rss:.1} MB (at ready: {rss_at_ready:.1} MB)");
    println!(
        "  sandbox: {} requests, {billed} billed, {twice} accounts billed twice",
        sb.len()
    );
    assert_eq!(twice, 0, "an account was billed twice");
    assert_eq!(billed, n);
}
