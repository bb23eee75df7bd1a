//! The corruption suite: for each way of damaging the store,
//! vipd refuses it or holds every new order, and never pays a period
//! twice. Five due accounts with orders pending at a vendor that bills
//! and has not extended yet (the nastiest moment to forget an order);
//! the daemon is stopped, the store damaged, and the daemon started again.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::stack::{SILENT_VENDOR, Stack, StackConfig};
use crate::common::{run, vipd};

const LONG: Duration = Duration::from_secs(30);
const ACCOUNTS: usize = 5;

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate,
    ZeroBlock,
    FlipBytes,
    DeleteDb,
    OlderCopy,
}

fn damage(state: &Path, how: Damage) {
    let db = state.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let len = bytes.len();
    match how {
        Damage::Truncate => bytes.truncate(len / 2),
        Damage::ZeroBlock => {
            let at = (len / 2) & !4095;
            let end = (at + 4096).min(len);
            bytes[at..end].fill(0);
        }
        Damage::FlipBytes => {
            let mut rng = fastrand::Rng::with_seed(10);
            for _ in 0..16 {
                let at = rng.usize(len / 4..len);
                bytes[at] ^= 0x5a;
            }
        }
        Damage::DeleteDb => {
            std::fs::remove_file(&db).unwrap();
            return;
        }
        Damage::OlderCopy => {
            for f in ["db", "conf"] {
                std::fs::copy(state.join(format!("{f}.old")), state.join(f)).unwrap();
            }
            return;
        }
    }
    std::fs::write(&db, bytes).unwrap();
}

async fn pending_orders(stack: &Stack, n: usize) {
    stack
        .wait_for("pending orders", LONG, || async {
            let o = stack.orders().await;
            (o.iter().filter(|o| o["state"] == "pending").count() >= n).then_some(())
        })
        .await;
}

/// `vipd run` on the damaged store: it must refuse, fast, saying why and
/// how to recover. Returns whether it refused (a store sled and the seal
/// both find sound is simply used).
fn refused(stack: &Stack) -> bool {
    let (code, out, _) = run(vipd()
        .args(["store", "verify", "--config"])
        .arg(&stack.config));
    if code == 0 {
        assert!(out.contains("is sound"), "{out}");
        return false;
    }
    let mut child = vipd()
        .arg("run")
        .arg("--config")
        .arg(&stack.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vipd run started on a store that `vipd store verify` refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("--accept-damaged-store"), "{err}");
    true
}

async fn suite(how: Damage) {
    let mut cfg = StackConfig::due(ACCOUNTS);
    cfg.sandbox = SILENT_VENDOR.into();
    let mut stack = Stack::sandbox_only(&cfg).await;
    let state = stack.dir.path().join("state");
    let full = std::fs::read_to_string(&stack.config).unwrap();
    if let Damage::OlderCopy = how {
        // Orders for three accounts, then a copy of the store, then two more.
        let three = full.replace("accounts: all", "accounts: { names: [a0, a1, a2] }");
        std::fs::write(&stack.config, three).unwrap();
        stack.start_daemon().await;
        pending_orders(&stack, 3).await;
        assert_eq!(stack.stop_daemon(), Some(0));
        for f in ["db", "conf"] {
            std::fs::copy(state.join(f), state.join(format!("{f}.old"))).unwrap();
        }
        std::fs::write(&stack.config, &full).unwrap();
    }
    stack.start_daemon().await;
    pending_orders(&stack, ACCOUNTS).await;
    assert_eq!(stack.stop_daemon(), Some(0));
    let billed = stack.billed().await;
    assert_eq!(billed.len(), ACCOUNTS);

    damage(&state, how);
    let was_refused = refused(&stack);
    if was_refused {
        stack.daemon_args = vec!["--accept-damaged-store".into()];
    }
    stack.start_daemon().await;
    // Every account is due and checked each second: three rounds of
    // checks in which it could pay.
    stack.after_reads(3 * ACCOUNTS as u64, None).await;
    let after = stack.billed().await;
    assert_eq!(
        after,
        billed,
        "{how:?}: no period paid twice\n{}",
        stack.log()
    );
    if was_refused {
        // Accepted as damaged: an account whose order was lost would be
        // paid again, so it is held, and the hold is alerted. One whose
        // order survived waits on that order (where the damage lands
        // depends on the store's layout).
        let events = stack.status().await["events"].as_array().unwrap().clone();
        let orders = stack.orders().await;
        for i in 0..ACCOUNTS {
            let account = format!("a{i}");
            let kept = orders.iter().any(|o| o["account"] == account.as_str());
            let held = events
                .iter()
                .any(|e| e["kind"] == "renewal_held" && e["account"] == account.as_str());
            assert!(
                kept || held,
                "{how:?}: {account} lost its order and was not held: {events:?}"
            );
        }
    } else {
        let orders = stack.orders().await;
        assert_eq!(
            orders.len(),
            ACCOUNTS,
            "{how:?}: a sound store lost nothing"
        );
    }
    eprintln!("{how:?}: refused = {was_refused}, billed = {after:?}");
}

#[tokio::test]
async fn truncated_store() {
    suite(Damage::Truncate).await;
}

#[tokio::test]
async fn a_zeroed_block() {
    suite(Damage::ZeroBlock).await;
}

#[tokio::test]
async fn flipped_bytes() {
    suite(Damage::FlipBytes).await;
}

#[tokio::test]
async fn deleted_db_file() {
    suite(Damage::DeleteDb).await;
}

#[tokio::test]
async fn an_older_copy_put_back() {
    suite(Damage::OlderCopy).await;
}
