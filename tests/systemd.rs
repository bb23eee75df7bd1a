//! `Type=notify` with a real datagram socket as `NOTIFY_SOCKET` and the
//! real daemon: start, reloads (valid and refused), watchdog pings, and
//! SIGTERM with an order in flight.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::stack::{Stack, StackConfig};

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Manager {
    fn bind(dir: &std::path::Path) -> (Manager, String) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        (
            Manager {
                socket,
                seen: Vec::new(),
            },
            path.display().to_string(),
        )
    }

    /// Reads datagrams until one satisfies `want` (returned), or panics.
    fn until(&mut self, what: &str, limit: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if want(&msg) {
                    return msg;
                }
            }
        }
        panic!("no {what} within {limit:?}; saw {:#?}", self.seen);
    }

    /// The protocol messages so far, in order (watchdog pings and
    /// status-only refreshes left out).
    fn sequence(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|m| *m != "WATCHDOG=1" && !m.starts_with("STATUS="))
            .map(|m| m.lines().next().unwrap_or("").to_owned())
            .collect()
    }
}

#[tokio::test]
async fn notify_protocol_through_start_reloads_watchdog_and_stop() {
    let mut cfg = StackConfig::due(2);
    cfg.sandbox = "  mode: async\n  callback_delay: 1500ms".into();
    let mut stack = Stack::sandbox_only(&cfg).await;
    let (mut manager, socket) = Manager::bind(stack.dir.path());
    stack.daemon_env = vec![
        ("NOTIFY_SOCKET".into(), socket),
        ("WATCHDOG_USEC".into(), "400000".into()),
    ];
    stack.start_daemon().await;

    let ready = manager.until("READY=1", Duration::from_secs(10), |m| {
        m.starts_with("READY=1")
    });
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap();
    assert!(status.starts_with("2 accounts, "), "{status}");
    assert!(status.contains(" unknown, next check "), "{status}");
    // Watchdog pings at half of WATCHDOG_USEC: several within a second.
    let t = Instant::now();
    for _ in 0..3 {
        manager.until("WATCHDOG=1", Duration::from_secs(2), |m| m == "WATCHDOG=1");
    }
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // A valid reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    stack.sighup();
    let reloading = manager.until("RELOADING=1", Duration::from_secs(10), |m| {
        m.starts_with("RELOADING=1")
    });
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading}");
    let ready = manager.until("READY=1 after reload", Duration::from_secs(10), |m| {
        m.starts_with("READY=1")
    });
    assert!(!ready.contains("FAILED"), "{ready}");
    assert_eq!(stack.status().await["generation"], 2);

    // A refused reload still ends with READY=1 (the old one serves) and
    // says so in STATUS.
    let good = std::fs::read_to_string(&stack.config).unwrap();
    std::fs::write(&stack.config, good.replace("renew_before", "renew_befor")).unwrap();
    stack.sighup();
    manager.until("RELOADING=1", Duration::from_secs(10), |m| {
        m.starts_with("RELOADING=1")
    });
    let ready = manager.until("READY=1 after refusal", Duration::from_secs(10), |m| {
        m.starts_with("READY=1")
    });
    assert!(ready.contains("last reload FAILED"), "{ready}");
    assert_eq!(stack.status().await["generation"], 2);
    std::fs::write(&stack.config, &good).unwrap();

    // SIGTERM while orders wait for their callbacks: STOPPING=1, exit 0.
    stack
        .wait_for("orders in flight", Duration::from_secs(10), || async {
            let orders = stack.orders().await;
            (orders.len() == 2 && orders.iter().all(|o| o["state"] == "pending")).then_some(())
        })
        .await;
    assert_eq!(stack.stop_daemon(), Some(0), "{}", stack.log());
    manager.until("STOPPING=1", Duration::from_secs(2), |m| {
        m.starts_with("STOPPING=1")
    });
    assert_eq!(
        manager.sequence(),
        [
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "STOPPING=1"
        ]
    );

    // Nothing lost: after a restart the orders settle (the vendor calls
    // back again) and each account was billed once.
    stack.start_daemon().await;
    stack
        .wait_for("both succeeded", Duration::from_secs(20), || async {
            let orders = stack.orders().await;
            (orders.len() == 2 && orders.iter().all(|o| o["state"] == "succeeded")).then_some(())
        })
        .await;
    let billed = stack.billed().await;
    assert_eq!(billed.values().sum::<usize>(), 2, "{billed:?}");
}
