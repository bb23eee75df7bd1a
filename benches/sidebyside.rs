//! Side by side: vipd and what an operator would otherwise
//! write (`bench/handwritten.py`, sequential and with a thread pool), each
//! against its own fresh `vipd sandbox` with the same accounts, all due.
//!
//! ```text
//! cargo bench --bench sidebyside -- 10000                 # sync, no latency, 32 threads
//! cargo bench --bench sidebyside -- 1000 --latency 50ms   # on each reply of both APIs
//! cargo bench --bench sidebyside -- 1000 --mode async --threads 16
//! cargo bench --bench sidebyside -- 1000 --check          # .ci/run: correctness only
//! cargo bench --bench sidebyside -- 10000 --vipd-only     # vipd alone (profiling)
//! ```
//!
//! Prints, for each side: wall time (start to the last renewal; for vipd,
//! spawn to the ledger showing every order succeeded), renewals/s, CPU
//! seconds and peak RSS of the process (the script's interpreter, the
//! daemon), what the sandbox billed and how many accounts it billed twice,
//! and vipd's ratios to each script; for vipd also the store's durable
//! waits and commits, the requests a renewal, and the sandbox's CPU a
//! request while vipd renewed. `--check` asserts only that every
//! side renewed every account once and none twice; it never asserts time.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kill, SECRET};
use serde_json::Value;

struct Args {
    n: usize,
    latency: Option<String>,
    mode: String,
    threads: usize,
    check: bool,
    vipd_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        n: 1000,
        latency: None,
        mode: "sync".into(),
        threads: 32,
        check: false,
        vipd_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--latency" => a.latency = it.next(),
            "--mode" => a.mode = it.next().expect("--mode sync|async"),
            "--threads" => a.threads = it.next().and_then(|t| t.parse().ok()).expect("--threads N"),
            "--check" => a.check = true,
            "--vipd-only" => a.vipd_only = true,
            "--bench" => {}
            other => {
                if let Ok(n) = other.parse() {
                    a.n = n;
                }
            }
        }
    }
    a
}

/// The configuration both sides share: the daemon's `rules.yaml` and the
/// sandbox's section (mode, latency on both APIs, everyone due in 1 day).
fn config(a: &Args, upstream: &str) -> String {
    let (accounts, memberships) = common::accounts(a.n, "1d");
    let daemon = common::rules_yaml(
        upstream,
        &accounts,
        "  startup_spread: 1s\n  max_concurrent_checks: 64\n",
        ", max_in_flight: 64",
    );
    let faults = match &a.latency {
        Some(l) => {
            format!("  faults: {{ recharge: {{ latency: {l} }}, vip_info: {{ latency: {l} }} }}\n")
        }
        None => String::new(),
    };
    format!(
        "{daemon}sandbox:\n  mode: {}\n  callback_delay: 200ms\n{faults}  prices: {{ qq_vip_month: 15.00 }}\n  memberships:\n{memberships}",
        a.mode
    )
}

/// What one side did.
struct Side {
    name: String,
    wall: f64,
    renewed: usize,
    cpu: f64,
    rss_mb: f64,
    billed: usize,
    twice: usize,
}

/// A fresh sandbox in its own folder: its process, its URL, the config.
fn fresh_sandbox(a: &Args, dir: &Path) -> (Kill, String, std::path::PathBuf) {
    let path = dir.join("rules.yaml");
    let (sandbox, upstream) = common::sandbox_for(&path, |upstream| config(a, upstream));
    (sandbox, upstream, path)
}

/// Waits for `child` (reaping it) and returns its CPU seconds, peak RSS
/// in MB and wait status.
fn wait_with_usage(child: &std::process::Child) -> (f64, f64, i32) {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with valid out-pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(r > 0, "wait4 failed");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(usage.ru_utime) + secs(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
        status,
    )
}

// The script is reaped by `wait4` in `wait_with_usage`, which std's
// `Child::wait` cannot do (it gives no resource usage).
#[allow(clippy::zombie_processes)]
async fn script(a: &Args, threads: usize) -> Side {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, upstream, _) = fresh_sandbox(a, dir.path());
    let accounts: Vec<Value> = (0..a.n)
        .map(|i| {
            serde_json::json!({
                "name": format!("a{i}"), "openid": format!("O{i}"),
                "access_token": format!("t{i}"), "qq_number": (100_000 + i).to_string(),
            })
        })
        .collect();
    let job = dir.path().join("accounts.json");
    std::fs::write(
        &job,
        serde_json::json!({
            "upstream": upstream, "oauth_consumer_key": "101234567", "appid": "1",
            "secret": SECRET, "path": "/api/164/310", "renew_before_secs": 3 * 86_400,
            "accounts": accounts,
        })
        .to_string(),
    )
    .unwrap();
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/handwritten.py");
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(&py)
        .arg(&job)
        .args(["--threads", &threads.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let (cpu, rss_mb, status) = wait_with_usage(&child);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(status, 0, "the script failed");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let (billed, twice) = common::billed(&upstream).await;
    Side {
        name: if threads <= 1 {
            "hand-written, sequential".into()
        } else {
            format!("hand-written, {threads} threads")
        },
        wall,
        renewed: report["renewed"].as_u64().unwrap_or(0) as usize,
        cpu,
        rss_mb,
        billed,
        twice,
    }
}

async fn vipd(a: &Args) -> Side {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, upstream, path) = fresh_sandbox(a, dir.path());
    // The sandbox's own start (its accounts) is not part of serving.
    let sandbox_cpu_before = common::cpu_secs(sandbox.0.id());
    let started = Instant::now();
    let (daemon, pid, admin) = common::run_daemon(&path).await;
    let http = reqwest::Client::new();
    let renewed = loop {
        if let Ok(r) = http.get(format!("{admin}/api/orders/count")).send().await {
            let counts: Value = r.json().await.unwrap_or_default();
            let done = counts["succeeded"].as_u64().unwrap_or(0) as usize;
            if done >= a.n {
                break done;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "not every account renewed in 15 minutes"
        );
        // Counting reads no order (the store keeps the counts), so the
        // poll costs the daemon little; 100 ms bounds the error in wall.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let rss_mb = common::rss_mb(pid, "VmHWM:");
    let cpu = common::cpu_secs(pid);
    let metrics = match http.get(format!("{admin}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let stats: Value = match http.get(format!("{upstream}/_sandbox/stats")).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    let sandbox_cpu = common::cpu_secs(sandbox.0.id()) - sandbox_cpu_before;
    let requests = stats["vip_info_requests"].as_f64().unwrap_or(f64::NAN)
        + stats["recharge_requests"].as_f64().unwrap_or(f64::NAN);
    println!(
        "sandbox: {:.0} µs of CPU a request ({:.0} µs a renewal) while vipd renewed",
        sandbox_cpu * 1e6 / requests,
        sandbox_cpu * 1e6 / renewed as f64
    );
    println!(
        "vipd store: {:.2} durable waits and {:.2} commits a renewal; upstream: {:.2} membership reads and {:.2} recharges a renewal",
        counter("vipd_store_durable_waits_total ") / renewed as f64,
        counter("vipd_store_commits_total ") / renewed as f64,
        stats["vip_info_requests"].as_f64().unwrap_or(f64::NAN) / renewed as f64,
        stats["recharge_requests"].as_f64().unwrap_or(f64::NAN) / renewed as f64,
    );
    drop(daemon);
    let (billed, twice) = common::billed(&upstream).await;
    Side {
        name: "vipd run".into(),
        wall,
        renewed,
        cpu,
        rss_mb,
        billed,
        twice,
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    println!(
        "side by side: {} due accounts, sandbox {} mode, upstream latency {}, script threads {}",
        a.n,
        a.mode,
        a.latency.as_deref().unwrap_or("none"),
        a.threads
    );
    // In async mode the script is not comparable (it does not wait for
    // callbacks), but it still renews: the sandbox bills on acceptance.
    let mut sides = Vec::new();
    if !a.vipd_only {
        sides.push(script(&a, 1).await);
        sides.push(script(&a, a.threads).await);
    }
    sides.push(vipd(&a).await);
    println!(
        "| side | wall | renewals/s | CPU s | peak RSS | renewed | billed | billed twice |\n|---|---|---|---|---|---|---|---|"
    );
    for s in &sides {
        println!(
            "| {} | {:.2} s | {:.0} | {:.2} | {:.1} MB | {} | {} | {} |",
            s.name,
            s.wall,
            s.renewed as f64 / s.wall,
            s.cpu,
            s.rss_mb,
            s.renewed,
            s.billed,
            s.twice
        );
    }
    let (v, scripts) = sides.split_last().expect("vipd ran");
    for s in scripts {
        println!(
            "vipd / {}: renewals/s {:.2}x, CPU {:.2}x, peak RSS {:.2}x",
            s.name,
            (v.renewed as f64 / v.wall) / (s.renewed as f64 / s.wall),
            v.cpu / s.cpu,
            v.rss_mb / s.rss_mb
        );
    }
    println!(
        "vipd CPU per renewal: {:.0} µs",
        v.cpu / v.renewed.max(1) as f64 * 1e6
    );
    if a.check {
        for s in &sides {
            assert_eq!(
                s.renewed, a.n,
                "{}: renewed {} of {}",
                s.name, s.renewed, a.n
            );
            assert_eq!(s.billed, a.n, "{}: billed {} of {}", s.name, s.billed, a.n);
            assert_eq!(s.twice, 0, "{}: {} accounts billed twice", s.name, s.twice);
        }
        println!("check: every side renewed every account once, none twice");
    }
}
