//! What the process-level benchmarks share: a child killed on drop, the
//! sandbox as a child process, and RSS read from /proc.

use std::path::Path;
use std::process::Child;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A daemon `rules.yaml` over `accounts` (from [`accounts`]): both
/// providers at `upstream`, one `every: 1h` rule renewing qq_vip 3 days
/// ahead. `daemon` is more lines for the `daemon:` section and `wapi`
/// more keys for the recharge provider (`, max_in_flight: 64`). No
/// `sandbox:` section: the caller appends one where it needs it.
pub fn rules_yaml(upstream: &str, accounts: &str, daemon: &str, wapi: &str) -> String {
    format!(
        r#"daemon:
  state_dir: ./state
  admin_listen: 127.0.0.1:0
  callback_listen: 127.0.0.1:0
{daemon}providers:
  qq: {{ kind: qq_connect, base_url: "{upstream}", oauth_consumer_key: "101234567", timeout: 10s }}
  wapi: {{ kind: recharge, base_url: "{upstream}", appid: "1", secret: "{SECRET}", timeout: 10s{wapi} }}
products:
  qq_vip_month: {{ provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }}
accounts:
{accounts}rules:
  - name: keep
    accounts: all
    check: {{ every: 1h }}
    membership: qq_vip
    renew_before: 3d
    product: qq_vip_month
"#
    )
}

/// YAML for `n` accounts `a0..`: the `accounts:` entries and the
/// sandbox's `memberships:` entries, each account's qq_vip ending `end`
/// from now (e.g. `1d`).
pub fn accounts(n: usize, end: &str) -> (String, String) {
    let mut accounts = String::new();
    let mut memberships = String::new();
    for i in 0..n {
        accounts.push_str(&format!(
            "  - {{ name: a{i}, qq_number: \"{}\", openid: O{i}, access_token: t{i} }}\n",
            100_000 + i
        ));
        memberships.push_str(&format!("    a{i}: {{ qq_vip: {end} }}\n"));
    }
    (accounts, memberships)
}

/// A child process killed (and reaped) when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[path = "../../tests/common/sandbox_process.rs"]
mod sandbox_process;

/// Starts `vipd sandbox` on a free port with `config`; returns it, killed
/// on drop, and its URL.
pub fn spawn_sandbox(config: &Path) -> (Kill, String) {
    let (child, url) = sandbox_process::spawn_sandbox(config, "error");
    (Kill(child), url)
}

#[allow(dead_code)]
/// A `/proc/PID/status` memory field (`VmRSS:`, `VmHWM:`) in MB.
pub fn rss_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Writes `config(upstream)` to `path` with a placeholder upstream, starts
/// `vipd sandbox` on it (the sandbox reads its accounts from it), then
/// writes it again pointing at the sandbox; returns the sandbox and its URL.
#[allow(dead_code)] // startup.rs keeps the sandbox's section in a file of its own
pub fn sandbox_for(path: &Path, config: impl Fn(&str) -> String) -> (Kill, String) {
    std::fs::write(path, config("http://127.0.0.1:1")).unwrap();
    let (sandbox, upstream) = spawn_sandbox(path);
    std::fs::write(path, config(&upstream)).unwrap();
    (sandbox, upstream)
}

/// A sandbox for one account, `a0`, whose membership ends in 40 days, its
/// configuration written to `path`: the sandbox and its URL.
#[allow(dead_code)]
pub fn one_account_sandbox(path: &Path) -> (Kill, String) {
    let (accounts, memberships) = accounts(1, "40d");
    sandbox_for(path, |up| {
        format!(
            "{}sandbox:\n  memberships:\n{memberships}",
            rules_yaml(up, &accounts, "", "")
        )
    })
}

/// The daemon under test: `VIPD_BIN` when set (to run an older build
/// against the same bench, side by side), else this build's.
#[allow(dead_code)]
pub fn vipd_bin() -> std::path::PathBuf {
    std::env::var_os("VIPD_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_vipd").into())
}

/// Starts `vipd run` on `path` and waits (at most 60 s) until its admin
/// API answers `/healthz`: the daemon, its pid, and the admin URL.
#[allow(dead_code)] // startup.rs waits for READY=1 on NOTIFY_SOCKET instead
pub async fn run_daemon(path: &Path) -> (Kill, u32, String) {
    let started = std::time::Instant::now();
    let daemon = std::process::Command::new(vipd_bin())
        .args(["run", "--config"])
        .arg(path)
        .env("VIPD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let daemon = Kill(daemon);
    let state = path.parent().unwrap().join("state/daemon.json");
    let http = reqwest::Client::new();
    loop {
        if let Ok(text) = std::fs::read(&state) {
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
            let admin = v["admin"].as_str().unwrap().to_owned();
            if http.get(format!("{admin}/healthz")).send().await.is_ok() {
                return (daemon, pid, admin);
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "daemon did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// User and system CPU seconds of a running process, from /proc.
#[allow(dead_code)]
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

#[allow(dead_code)]
/// What the sandbox billed: (billed orders, accounts billed more than once).
pub async fn billed(upstream: &str) -> (usize, usize) {
    let orders: Vec<serde_json::Value> = reqwest::get(format!("{upstream}/_sandbox/orders"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_account = std::collections::HashMap::<String, usize>::new();
    for o in orders.iter().filter(|o| o["billed"] == true) {
        *per_account
            .entry(o["account"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    (
        per_account.values().sum(),
        per_account.values().filter(|&&n| n > 1).count(),
    )
}
