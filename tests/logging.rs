//! What `vipd` writes to its logs and to the journal: a log filter without
//! a level refused, fatal errors in the configured format, journal records
//! with priorities and no timestamp.

use crate::common::*;

/// `VIPD_LOG=warnings` would silence every log line: it
/// is a usage error (exit 2) naming the variable and the directive.
#[test]
fn a_log_filter_without_a_level_is_refused() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml");
    let (code, _, err) = run(vipd()
        .env("VIPD_LOG", "warnings")
        .args(["check", "--config", rules]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("VIPD_LOG=\"warnings\": `warnings` is not a level"),
        "{err}"
    );
}

/// A fatal error was plain text under `--log-format json`: every line on
/// stderr must be a JSON error event, one per configuration error.
#[test]
fn fatal_errors_follow_the_log_format() {
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/invalid/bad-cron.yaml"
    );
    let (code, _, err) = run(vipd()
        .args(["--log-format", "json", "run", "--config", bad])
        .env("VIPD_FIXTURE_SECRET", "fixture-secret-value"));
    assert_eq!(code, 78, "{err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!events.is_empty());
    let fatal = events.last().unwrap();
    assert_eq!(fatal["level"], "ERROR");
    let message = fatal["fields"]["message"].as_str().unwrap();
    assert!(message.contains("bad-cron.yaml:"), "{message}");
    assert!(message.contains("has 3 fields"), "{message}");
}

/// Under journald (stderr is the stream `JOURNAL_STREAM` names) every
/// record starts with its syslog priority and carries no timestamp of
/// its own; the fatal error too.
#[test]
fn journal_records_carry_priorities_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // The admin port is taken, so the daemon stops with a fatal error
    // after its start-up warnings (a literal secret).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/invalid/bad-cron.yaml"
    ))
    .unwrap()
    .replace("\"${env:VIPD_FIXTURE_SECRET}\"", "literal-secret")
    .replace("check: \"* * *\"", "check: { every: 1h }");
    let config = write_config(
        dir.path(),
        &format!(
            "daemon:\n  admin_listen: {}\n  state_dir: ./state\n{text}",
            taken.local_addr().unwrap()
        ),
    );
    let log = dir.path().join("journal.txt");
    let stream = std::fs::File::create(&log).unwrap();
    let meta = stream.metadata().unwrap();
    let status = vipd()
        .args(["run", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("VIPD_LOG")
        .env_remove("RUST_LOG")
        .stderr(stream)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("written literally")),
        "{text}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("<3>vipd: cannot listen on admin_listen"),
        "{text}"
    );
    for line in &lines {
        let prio = line.get(..3).unwrap_or("");
        assert!(["<3>", "<4>", "<6>", "<7>"].contains(&prio), "{line}");
        let record = line[3..].trim_start();
        assert!(
            !record.starts_with(|c: char| c.is_ascii_digit()),
            "a timestamp of our own: {line}"
        );
    }
}
