//! What the process-level benchmarks share: a child killed on drop, the
//! sandbox as a child process, and RSS read from /proc.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A child process killed (and reaped) when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `vipd sandbox` on a free port with `config`; returns it and its
/// URL.
pub fn spawn_sandbox(config: &Path) -> (Kill, String) {
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("VIPD_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sandbox.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("sandbox listening on ")
        .expect(&line)
        .to_owned();
    (Kill(sandbox), url)
}

/// A `/proc/PID/status` memory field (`VmRSS:`, `VmHWM:`) in MB.
pub fn rss_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
