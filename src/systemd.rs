//! The systemd notify protocol (`Type=notify`, sd_notify(3)) without
//! libsystemd: datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract socket).
//!
//! Sent: `READY=1` once the store is open, the listeners are bound and the
//! first configuration is live; `RELOADING=1` with `MONOTONIC_USEC` then
//! `READY=1` around every reload (valid or refused); `STOPPING=1` at
//! shutdown; `WATCHDOG=1` at half of `$WATCHDOG_USEC`; `STATUS=` one line.
//! Without `$NOTIFY_SOCKET` every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A handle on `$NOTIFY_SOCKET`.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From the environment; inert when `$NOTIFY_SOCKET` is unset or
    /// unusable (which is logged).
    pub(crate) fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => SocketAddr::from_pathname(&path),
        };
        // Non-blocking: a manager that stops reading must not stall the
        // daemon's runtime (a full socket buffer drops the message).
        let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
        match (socket, addr) {
            (Ok(socket), Ok(addr)) => Notifier {
                target: Some((socket, addr)),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(socket = path, error = %e, "NOTIFY_SOCKET unusable; systemd will not hear from vipd");
                Notifier { target: None }
            }
        }
    }

    /// Whether a service manager listens.
    pub(crate) fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram of `KEY=VALUE` lines.
    pub fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the monotonic time, as `Type=notify-reload` wants.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: finishing requests in flight");
    }

    /// `STATUS=` alone.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when it is
/// set for this process (`$WATCHDOG_PID` absent or ours).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_that_stops_reading_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test alone reads NOTIFY_SOCKET in this process.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        let n = Notifier::from_env();
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(n.is_active());
        let t = std::time::Instant::now();
        for _ in 0..100_000 {
            n.watchdog();
        }
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        n.ready("3 accounts\nsecond line dropped");
        n.reloading();
        let mut buf = [0u8; 512];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=3 accounts");
        let len = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        let usec: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(text.starts_with("RELOADING=1\n"), "{text}");
        assert!(usec > 0 && usec.abs_diff(monotonic_usec()) < 5_000_000);
    }
}
