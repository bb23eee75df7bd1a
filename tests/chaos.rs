//! The chaos suite: the real `vipd run` against the real
//! `vipd sandbox` in async mode with every fault knob on (transient
//! errors, hangs, garbage, HTTP 500, dropped, duplicated and delayed
//! callbacks, refunds), `kill -9` at random moments and restarts, true
//! old callbacks delivered again at random, and a wall-clock step. Then,
//! from the sandbox's own records and the ledger:
//!
//! - no period billed twice (each account needs one renewal);
//! - every billed order known to the ledger as paid;
//! - every account renewed, unless an order is `unknown` and
//!   `order_unknown` was raised;
//! - no budget passed.
//!
//! ```text
//! cargo test --release --test suite chaos::chaos -- --nocapture      # short: 500 accounts, 5 kills
//! CHAOS_KILLS=50 cargo test --release --test suite chaos::chaos -- --nocapture # the long run
//! ```
//! `CHAOS_ACCOUNTS` and `CHAOS_SEED` change the rest. It prints its figures
//! and fails when one is off.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::chaos::{Verdict, chaos_config, done, env, true_callbacks};
use crate::common::stack::Stack;
use serde_json::json;

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[tokio::test]
async fn chaos() {
    let accounts = env("CHAOS_ACCOUNTS", 500) as usize;
    let kills = env("CHAOS_KILLS", 5);
    let mut rng = fastrand::Rng::with_seed(env("CHAOS_SEED", 10));
    let (cfg, cap) = chaos_config(accounts);
    let mut stack = Stack::sandbox_only(&cfg).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut replays = 0;
    let clock_file = stack.dir.path().join("faketime");
    let clock_round = if Path::new(FAKETIME).exists() {
        Some(kills / 2)
    } else {
        None
    };

    for round in 0..kills {
        let stepped = clock_round == Some(round);
        if stepped {
            std::fs::write(&clock_file, "+0\n").unwrap();
            stack.daemon_env = vec![
                ("LD_PRELOAD".into(), FAKETIME.into()),
                (
                    "FAKETIME_TIMESTAMP_FILE".into(),
                    clock_file.display().to_string(),
                ),
                ("FAKETIME_NO_CACHE".into(), "1".into()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
        }
        stack.start_daemon().await;
        if stepped {
            // Two days ahead for the rest of this life: nothing may be paid.
            std::fs::write(&clock_file, "+2d\n").unwrap();
        }
        let life = Duration::from_millis(rng.u64(300..2500));
        let until = Instant::now() + life;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Re-deliver a few true old callbacks, any of them.
            let old = true_callbacks(&stack.sandbox_orders().await);
            for _ in 0..3 {
                if old.is_empty() {
                    break;
                }
                let cb = &old[rng.usize(..old.len())];
                let _ = http
                    .post(format!("{}/notify/wapi", stack.callbacks))
                    .form(cb)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                replays += 1;
            }
        }
        stack.kill_daemon();
        stack.daemon_env.clear();
    }

    // Calm: faults off (callbacks still dropped for orders billed before),
    // and a daemon that runs to the end.
    stack.control(json!({"recharge": {}})).await;
    stack.start_daemon().await;
    // Until every account is renewed and verified or has an `unknown`
    // order; the figures are taken either way.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (settled, unsettled) = loop {
        let orders = stack.orders().await;
        let unsettled = accounts.saturating_sub(done(&orders));
        if unsettled == 0 || Instant::now() > deadline {
            break (orders, unsettled);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let verdict = Verdict::of(&stack, accounts, &settled, &stack.log()).await;
    println!(
        "chaos: {accounts} accounts, {kills} kills, {replays} re-delivered callbacks, {verdict} (cap {cap:.2}), unsettled after 120 s: {unsettled}, in {:.1} s",
        started.elapsed().as_secs_f64(),
    );
    verdict.assert_sound(cap);
}

/// An order left `unknown` is announced again at every start: a crash
/// between an order's change and its alert must not leave it unannounced
/// for good.
#[tokio::test]
async fn unknown_orders_are_announced_again_at_start() {
    let mut cfg = crate::common::stack::StackConfig::due(1);
    cfg.sandbox = crate::common::stack::SILENT_VENDOR.into();
    cfg.provider = "    callback: { within: 1s }".into();
    let mut stack = Stack::start(&cfg).await;
    let unknown = stack
        .wait_for("an unknown order", Duration::from_secs(20), || async {
            stack
                .orders()
                .await
                .into_iter()
                .find(|o| o["state"] == "unknown")
        })
        .await;
    let key = unknown["key"].as_str().unwrap().to_owned();
    assert_eq!(stack.stop_daemon(), Some(0));
    stack.start_daemon().await;
    let again = |log: &str| {
        log.lines().any(|l| {
            l.contains("event=\"order_unknown\"")
                && l.contains("still unknown at start-up")
                && l.contains(&key)
        })
    };
    stack
        .wait_for(
            "the order announced again",
            Duration::from_secs(10),
            || async { again(&stack.log()).then_some(()) },
        )
        .await;
}
