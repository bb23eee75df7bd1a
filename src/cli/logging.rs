//! Logging on stderr: the filter from `VIPD_LOG`/`RUST_LOG`, text or JSON,
//! and the journal's conventions when stderr is a journal stream.
//!
//! Under systemd stderr usually goes to journald as a stream
//! (`JOURNAL_STREAM` names it). There each line becomes one record, so:
//! - every record starts with its syslog priority (`<3>` error, `<4>`
//!   warning, `<6>` info, `<7>` debug; sd-daemon(3)), which journald strips
//!   and stores, so `journalctl -p warning -u vipd` filters;
//! - no timestamp of our own (journald stamps every record);
//! - a message that spans lines is kept on one line (its line breaks
//!   written as `\n`), so its cause is never a record without a level.

use std::io::Write;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log records are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber. A filter that does not parse, or names
/// no level, is an error naming the variable and the directive: the caller
/// exits 2 (usage) rather than run with logging the operator did not ask
/// for. Without `VIPD_LOG` or `RUST_LOG`, the filter is `default`.
pub(crate) fn init(format: Format, default: &str) -> Result<(), String> {
    let filter = match std::env::var("VIPD_LOG")
        .map(|s| ("VIPD_LOG", s))
        .or_else(|_| std::env::var("RUST_LOG").map(|s| ("RUST_LOG", s)))
    {
        Ok((var, spec)) => filter(&spec).map_err(|why| format!("{var}={spec:?}: {why}"))?,
        Err(_) => EnvFilter::new(default),
    };
    let journal = journal_stream();
    // Colours only for a person at a terminal; `NO_COLOR` set to anything
    // but the empty string turns them off (no-color.org).
    let ansi = !journal
        && colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match (format, journal) {
        (Format::Text, false) => builder.with_writer(std::io::stderr).try_init(),
        (Format::Json, false) => builder.json().with_writer(std::io::stderr).try_init(),
        (Format::Text, true) => builder.without_time().with_writer(Journal).try_init(),
        (Format::Json, true) => builder.json().with_writer(Journal).try_init(),
    };
    Ok(())
}

/// Colour for a terminal unless `NO_COLOR` holds a non-empty value.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Parses a log filter, refusing a directive without `=` that is not a
/// level: operators write levels, and a bare word is a module name
/// (`VIPD_LOG=warnings` silenced every log line).
pub fn filter(spec: &str) -> Result<EnvFilter, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    for &directive in &directives {
        if !directive.contains('=')
            && !directive.contains("::")
            && !directive.starts_with('[')
            && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive))
        {
            return Err(format!(
                "`{directive}` is not a level (trace, debug, info, warn, error, off); \
                 for one module write module=level"
            ));
        }
    }
    EnvFilter::try_new(directives.join(",")).map_err(|e| e.to_string())
}

/// Whether stderr is the journal stream `JOURNAL_STREAM` names (its
/// `device:inode`, as systemd.exec(5) says to check: a child whose stderr
/// was redirected inherits the variable but not the stream).
pub(crate) fn journal_stream() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    stream_is(&var.to_string_lossy(), libc::STDERR_FILENO)
}

fn stream_is(var: &str, fd: libc::c_int) -> bool {
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into the zeroed struct we own; fd is only read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The syslog priority of a level (sd-daemon(3) prefixes).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Writes one journal record per event (see the module doc).
struct Journal;

impl<'a> MakeWriter<'a> for Journal {
    type Writer = Record;
    fn make_writer(&'a self) -> Record {
        Record::new(6)
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Record {
        Record::new(priority(meta.level()))
    }
}

/// One event, collected, then written in one `write` on drop (the fmt
/// layer formats an event completely before writing it).
struct Record {
    priority: u8,
    text: Vec<u8>,
}

impl Record {
    fn new(priority: u8) -> Record {
        Record {
            priority,
            text: Vec::with_capacity(256),
        }
    }
}

impl Write for Record {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let line = journal_line(self.priority, &self.text);
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

/// `<P>` + the text on one line + `\n`.
pub(crate) fn journal_line(priority: u8, text: &[u8]) -> Vec<u8> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut line = format!("<{priority}>").into_bytes();
    for &b in body {
        match b {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => {}
            b => line.push(b),
        }
    }
    line.push(b'\n');
    line
}

/// Writes fatal errors (and `check`-style lines) to stderr in the chosen
/// format: plain lines for text, one JSON error event each for JSON, with
/// a priority prefix under the journal.
pub fn fatal(format: Format, lines: &[String]) {
    let journal = journal_stream();
    let mut err = std::io::stderr().lock();
    for line in lines {
        let out = match format {
            Format::Text => line.clone(),
            Format::Json => serde_json::json!({
                "timestamp": crate::timefmt::utc(super::now()),
                "level": "ERROR",
                "fields": { "message": line },
                "target": "vipd",
            })
            .to_string(),
        };
        let bytes = if journal {
            journal_line(3, out.as_bytes())
        } else {
            format!("{out}\n").into_bytes()
        };
        let _ = err.write_all(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `VIPD_LOG=warnings` was taken for a module name and silenced every
    /// log line.
    #[test]
    fn log_filters_must_name_a_level() {
        for ok in [
            "warn",
            "WARN",
            "info,vipd=debug",
            "vipd::engine",
            "error, sled=off",
            "",
        ] {
            assert!(filter(ok).is_ok(), "{ok:?}");
        }
        for bad in ["warnings", "verbose", "info,loud"] {
            let e = filter(bad).unwrap_err();
            assert!(e.contains("is not a level"), "{bad}: {e}");
        }
    }

    #[test]
    fn journal_records_are_one_line_with_a_priority() {
        assert_eq!(
            journal_line(4, b"WARN reload refused:\n  cause\n"),
            b"<4>WARN reload refused:\\n  cause\n"
        );
        assert_eq!(journal_line(3, b"x"), b"<3>x\n");
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    /// `NO_COLOR=` (empty) turned colour off; no-color.org says only a
    /// non-empty value does.
    #[test]
    fn no_color_needs_a_value() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    /// The stream check compares device and inode, as systemd.exec(5) asks.
    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::tempfile().unwrap();
        let meta = file.metadata().unwrap();
        let fd = file.as_raw_fd();
        assert!(stream_is(&format!("{}:{}", meta.dev(), meta.ino()), fd));
        assert!(!stream_is(
            &format!("{}:{}", meta.dev(), meta.ino() + 1),
            fd
        ));
        assert!(!stream_is("garbage", fd));
        assert!(!stream_is("", fd));
    }
}
