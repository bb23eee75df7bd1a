//! Start-up and idle footprint: N accounts (none due), `vipd run` with a
//! real `NOTIFY_SOCKET`; prints the time from spawn to `READY=1`, then the
//! RSS once every account has had its first check and the daemon idles.
//!
//! ```text
//! cargo bench --bench startup -- 10000     # N defaults to 10000
//! NO_PLUGINS=1 ...                         # without scripts/activity.lua
//! BENCH_MALLOC_ARENA_MAX=8 ...             # glibc's arenas instead of vipd's one
//! BENCH_HOLD=1 ...                         # keep the daemon up (smaps, gdb, heaptrack)
//! cargo bench --bench startup -- 1000000 --jsonl   # accounts from accounts_file:
//! ... --cycle      # then time the first full check cycle (every account read once)
//! ```

mod common;

use common::Kill;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon's configuration and, separately, the sandbox's: the sandbox
/// section (10,000 memberships) is not something a production `rules.yaml`
/// carries, so the daemon does not parse or hold it here.
/// With `jsonl`, the accounts are in `accounts.jsonl` (see [`jsonl`]) and
/// both configurations name it.
fn config(n: usize, upstream: &str, jsonl: bool) -> (String, String) {
    let (accounts, memberships) = common::accounts(n, "40d");
    let daemon = common::rules_yaml(
        upstream,
        if jsonl { "  []\n" } else { &accounts },
        "  scripts_dir: ./scripts\n  startup_spread: 5s\n",
        "",
    );
    let daemon = if jsonl {
        format!("{daemon}accounts_file: accounts.jsonl\n")
    } else {
        daemon
    };
    let sandbox = format!("{daemon}sandbox:\n  memberships:\n{memberships}");
    (daemon, sandbox)
}

/// The same accounts as [`common::accounts`], one JSON object a line.
fn jsonl(n: usize) -> String {
    let mut out = String::with_capacity(n * 90);
    for i in 0..n {
        out.push_str(&format!(
            "{{\"name\": \"a{i}\", \"qq_number\": \"{}\", \"openid\": \"O{i}\", \"access_token\": \"t{i}\"}}\n",
            100_000 + i
        ));
    }
    out
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let bin = common::vipd_bin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    let plugins = std::env::var_os("NO_PLUGINS").is_none();
    if plugins {
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/activity.lua"),
            dir.path().join("scripts/activity.lua"),
        )
        .unwrap();
    }
    let from_file = std::env::args().any(|a| a == "--jsonl");
    if from_file {
        std::fs::write(dir.path().join("accounts.jsonl"), jsonl(n)).unwrap();
    }
    let sandbox_path = dir.path().join("sandbox.yaml");
    std::fs::write(&sandbox_path, config(n, "http://127.0.0.1:1", from_file).1).unwrap();
    let (_sandbox, upstream) = common::spawn_sandbox(&sandbox_path);
    std::fs::write(&path, config(n, &upstream, from_file).0).unwrap();

    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let daemon = Command::new(bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("VIPD_LOG", "warn")
        .env("NOTIFY_SOCKET", &socket_path)
        .envs(
            std::env::var("BENCH_MALLOC_ARENA_MAX")
                .ok()
                .map(|v| ("MALLOC_ARENA_MAX", v)),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let _daemon = Kill(daemon);
    let mut buf = [0u8; 4096];
    let status = loop {
        let len = socket.recv(&mut buf).expect("no READY=1 within 60 s");
        let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
        if msg.starts_with("READY=1") {
            break msg;
        }
    };
    let ready = started.elapsed();
    let rss_ready = common::rss_mb(pid, "VmRSS:");
    if std::env::args().any(|a| a == "--cycle") {
        cycle(n, pid, &upstream, started);
    }
    // First checks are spread over 5 s; then nothing is due for an hour.
    std::thread::sleep(Duration::from_secs(12));
    let rss_checked = common::rss_mb(pid, "VmRSS:");
    // Idle: past the HTTP pool's 30 s idle timeout, so the connections the
    // first checks opened are closed, as they are between hourly checks.
    std::thread::sleep(Duration::from_secs(25));
    println!(
        "vipd startup: {n} accounts (none due{}), {}; spawn → READY=1 in {:.0} ms ({})",
        if from_file {
            ", from accounts_file"
        } else {
            ""
        },
        if plugins { "1 plugin" } else { "no plugins" },
        ready.as_secs_f64() * 1e3,
        status.lines().nth(1).unwrap_or("")
    );
    println!(
        "RSS at READY {rss_ready:.1} MB; after every first check {rss_checked:.1} MB; idle {:.1} MB (peak {:.1} MB)",
        common::rss_mb(pid, "VmRSS:"),
        common::rss_mb(pid, "VmHWM:")
    );
    println!(
        "  idle: heap and other anonymous memory {:.1} MB, mapped files (the binary) {:.1} MB",
        common::rss_mb(pid, "RssAnon:"),
        common::rss_mb(pid, "RssFile:")
    );
    if std::env::var_os("BENCH_HOLD").is_some() {
        println!("holding pid {pid}; press enter to stop");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
}

/// Waits until every account has been read once (the sandbox's count of
/// `get_vip_rich_info` requests: the daemon's `/metrics` is itself a
/// linear pass over every account, too heavy to poll at a million),
/// printing progress; then the cycle's length, its rate and the daemon's
/// memory.
fn cycle(n: usize, pid: u32, sandbox: &str, started: Instant) {
    let addr = sandbox.trim_start_matches("http://").trim_end_matches('/');
    let reads = || -> f64 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return 0.0;
        };
        let _ = write!(s, "GET /_sandbox/stats HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("{}");
        serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()["vip_info_requests"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let mut last = Instant::now();
    loop {
        let done = reads();
        if done >= n as f64 {
            break;
        }
        if last.elapsed() > Duration::from_secs(30) {
            println!(
                "  cycle: {done:.0} of {n} read at {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "first full check cycle: {n} reads by {secs:.1} s after spawn ({:.0} reads/s including start-up); RSS {:.1} MB (peak {:.1} MB)",
        n as f64 / secs,
        common::rss_mb(pid, "VmRSS:"),
        common::rss_mb(pid, "VmHWM:")
    );
}
