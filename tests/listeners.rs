//! Listeners that stay up: slow and idle peers, huge
//! declared bodies, a flood of connections, and a disk that fills. The
//! real daemon, real sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::signed;
use crate::common::stack::{SILENT_VENDOR, Stack, StackConfig};

const LONG: Duration = Duration::from_secs(30);

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes; how long that took.
fn time_to_close(mut s: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) => panic!("not closed within {limit:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn slow_headers_are_cut_and_huge_bodies_refused_before_reading() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox = SILENT_VENDOR.into();
    let stack = Stack::start(&cfg).await;
    let cb = addr(&stack.callbacks);
    // Slowloris: headers that never end.
    let mut slow = TcpStream::connect(&cb).unwrap();
    slow.write_all(b"POST /notify/wapi HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let closed = tokio::task::spawn_blocking(move || time_to_close(slow, Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(closed < Duration::from_secs(15), "{closed:?}");
    // 10 GB declared: 413 at once, with no byte of body sent.
    let mut big = TcpStream::connect(&cb).unwrap();
    big.write_all(
        b"POST /notify/wapi HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000000000\r\n\r\n",
    )
    .unwrap();
    big.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut reply = [0u8; 64];
    let n = big
        .read(&mut reply)
        .expect("answered without waiting for the body");
    let head = String::from_utf8_lossy(&reply[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // The same on the admin listener.
    let mut big = TcpStream::connect(addr(&stack.admin)).unwrap();
    big.write_all(b"POST /api/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n")
        .unwrap();
    big.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let n = big.read(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 413"));
}

#[tokio::test]
async fn a_flood_of_idle_connections_leaves_handles_for_payments() {
    let mut cfg = StackConfig::due(0);
    // Not due: only the manual recharge below pays.
    cfg.accounts = vec![("a0".into(), Some("20d".into()))];
    cfg.sandbox = "  mode: sync".into();
    let mut stack = Stack::sandbox_only(&cfg).await;
    // 256 file handles: the listeners may hold 64 connections each.
    stack.daemon_nofile = Some(256);
    stack.start_daemon().await;
    let cb = addr(&stack.callbacks);
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(&cb).ok())
        .collect();
    assert!(flood.len() > 200, "the flood connected: {}", flood.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A payment needs the admin listener, the vendor and the store.
    let r = reqwest::Client::new()
        .post(format!("{}/api/recharge", stack.admin))
        .json(&serde_json::json!({"account": "a0", "product": "qq_vip_month", "ahead": true, "reason": "flood test"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}\n{}", stack.log());
    assert_eq!(stack.billed().await.get("a0"), Some(&1));
    assert!(stack.log().contains("connections full"), "{}", stack.log());
    drop(flood);
    // Once the flood is gone, callbacks are served again.
    let r = reqwest::Client::new()
        .post(format!("{}/notify/wapi", stack.callbacks))
        .form(&signed(&[("orderid", "NOPE"), ("status", "success")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Idle connections to the callback listener from one address, `n` of
/// them, from `127.0.0.{from}` (all of 127/8 is loopback).
async fn idle_from(from: u8, to: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let to: std::net::SocketAddr = to.parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, from], 0).into()).unwrap();
        if let Ok(s) = socket.connect(to).await {
            held.push(s);
        }
    }
    held
}

/// One peer holding 256 idle connections, then eight holding 320: the
/// vendor's signed callback still gets through each time (a peer holds a
/// share of the cap, and a full listener closes idle connections, the
/// busiest peer's first, to make room).
#[tokio::test]
async fn greedy_peers_cannot_starve_the_vendors_callbacks() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    let stack = Stack::start(&cfg).await;
    let order = stack.pending_order(LONG).await;
    let vendor_id = order["vendor_orderid"].as_str().unwrap().to_owned();
    let cb = addr(&stack.callbacks);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deliver = async |status: &str| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let fields = signed(&[("orderid", &vendor_id), ("status", status), ("time", &t)]);
        let r = http
            .post(format!("{}/notify/wapi", stack.callbacks))
            .form(&fields)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match r {
            Ok(r) => r.status().as_u16(),
            Err(e) => panic!(
                "the vendor's callback did not get through: {e}\n{}",
                stack.log()
            ),
        }
    };
    let greedy = idle_from(2, &cb, 256).await;
    assert!(greedy.len() >= 200, "{}", greedy.len());
    assert_eq!(deliver("success").await, 200);
    // Eight peers, forty idle connections each: the listener is full.
    let mut many = Vec::new();
    for from in 2..=9 {
        many.extend(idle_from(from, &cb, 40).await);
    }
    assert!(many.len() >= 256, "{}", many.len());
    // A repeat of the success: the order is settled already, answered.
    assert_eq!(deliver("success").await, 200);
    drop((greedy, many));
    let log = stack.log();
    assert!(log.contains("connections full"), "{log}");
    let orders = stack.orders().await;
    assert_eq!(orders[0]["state"], "succeeded", "{orders:?}");
}

/// Mounts a small tmpfs at `dir` (root only; CI runs as root).
fn mount_tmpfs(dir: &std::path::Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_stops_the_daemon_unhealthy_and_it_recovers_when_cleared() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    // Something that writes: sled holds file space ahead, so small writes
    // can go on for a while after the disk is full.
    cfg.files = vec![(
        "scripts/writer.lua".into(),
        r#"local n = 0
vipd.every("1s", function()
  for _ = 1, 8 do
    n = n + 1
    vipd.kv.set("pad" .. (n % 64), string.rep("x", 60000))
  end
end)
"#
        .into(),
    )];
    let mut stack = Stack::sandbox_only(&cfg).await;
    let state = stack.dir.path().join("state");
    if !mount_tmpfs(&state, "8m") {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root; CI runs as root)");
        return;
    }
    let _unmount = Unmount(state.clone());
    stack.start_daemon().await;
    let order = stack.pending_order(LONG).await;
    let vendor_id = order["vendor_orderid"].as_str().unwrap().to_owned();
    // Fill the disk.
    let filler = state.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    // sled may still write into file space it holds already: probe (each
    // probe is a durable write) until the disk refuses one. /healthz must
    // then say so, or the daemon is already on its way out.
    let http = reqwest::Client::new();
    let mut unhealthy = false;
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match http.get(format!("{}/healthz", stack.admin)).send().await {
            Ok(r) if r.status() == 200 => continue,
            Ok(r) => {
                assert_eq!(r.status(), 503);
                assert!(r.text().await.unwrap().contains("unhealthy"));
                unhealthy = true;
            }
            Err(_) => unhealthy = true,
        }
        break;
    }
    assert!(unhealthy, "the disk never refused a write\n{}", stack.log());
    // The vendor's callback is not acknowledged now: it will call again.
    let ok = signed(&[
        ("orderid", &vendor_id),
        ("status", "success"),
        ("price", "15.00"),
    ]);
    if let Ok(r) = http
        .post(format!("{}/notify/wapi", stack.callbacks))
        .form(&ok)
        .send()
        .await
    {
        assert_ne!(r.status(), 200, "acknowledged without a durable record");
    }
    let code = stack.wait_exit(LONG);
    assert_eq!(code, Some(1), "{}", stack.log());
    assert!(
        stack.log().contains("cannot make writes durable"),
        "{}",
        stack.log()
    );
    // The operator frees space (and stops what filled it); systemd would
    // restart vipd.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(stack.dir.path().join("scripts/writer.lua")).unwrap();
    stack.start_daemon().await;
    let h = http
        .get(format!("{}/healthz", stack.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let r = http
        .post(format!("{}/notify/wapi", stack.callbacks))
        .form(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", stack.log());
    let orders = stack.orders().await;
    assert_eq!(orders[0]["state"], "succeeded");
    assert_eq!(stack.sandbox_orders().await.len(), 1, "nothing paid twice");
}
