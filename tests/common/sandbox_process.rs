//! `vipd sandbox` as a child process on a free loopback port. Shared by
//! the integration tests and (through `#[path]`) the process benchmarks.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `vipd sandbox --config CONFIG --listen 127.0.0.1:0` with
/// `VIPD_LOG=log`; returns the child and the URL from its first line.
pub fn spawn_sandbox(config: &Path, log: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .arg("sandbox")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env("VIPD_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("sandbox listening on ")
        .expect(&line)
        .to_owned();
    (child, url)
}
