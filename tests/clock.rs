//! Wall-clock steps: the real daemon under libfaketime
//! (`LD_PRELOAD`), whose offset the test changes through a file while the
//! daemon runs; the monotonic clock and the sandbox keep real time.
//! `.ci/run` installs Debian's `faketime`; without it these tests say
//! SKIPPED and pass.
//!
//! These show the real wall clock (`SystemClock`) is the one the daemon
//! decides with; the engine's handling of steps is tested in process on
//! paused time, with a stepped clock, in `paying/`.

use std::path::{Path, PathBuf};

use crate::common::stack::{Stack, StackConfig};
use serde_json::Value;

const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A stack whose daemon's wall clock is `offset` (libfaketime syntax,
/// e.g. `+0`, `+28d`, `-1h`) from real time, changeable while it runs.
async fn faked(cfg: &StackConfig) -> Option<(Stack, PathBuf)> {
    if !Path::new(LIB).exists() {
        eprintln!("SKIPPED: {LIB} is missing (apt-get install faketime)");
        return None;
    }
    let mut stack = Stack::sandbox_only(cfg).await;
    let file = stack.dir.path().join("faketime");
    std::fs::write(&file, "+0\n").unwrap();
    stack.daemon_env = vec![
        ("LD_PRELOAD".into(), LIB.into()),
        ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    stack.start_daemon().await;
    Some((stack, file))
}

fn step(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

fn clock_alerts(status: &Value) -> usize {
    status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().unwrap_or("").contains("wall clock"))
        .count()
}

#[tokio::test]
async fn a_clock_stepped_28_days_ahead_pays_nothing_early() {
    let mut cfg = StackConfig::due(0);
    // 31 days left: not due (renew_before 3d) unless the clock lies.
    cfg.accounts = vec![("a0".into(), Some("31d".into()))];
    cfg.sandbox = "  mode: sync".into();
    let Some((stack, file)) = faked(&cfg).await else {
        return;
    };
    stack.after_reads(2, None).await;
    step(&file, "+28d");
    // Checks run every second on the monotonic clock, which is not faked.
    stack.after_reads(6, None).await;
    assert_eq!(
        stack.sandbox_orders().await.len(),
        0,
        "nothing sent on a clock 28 days off\n{}",
        stack.log()
    );
    let status = stack.status().await;
    assert_eq!(clock_alerts(&status), 1, "one alert per step: {status}");
}
