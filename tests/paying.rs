//! The paying path in process, on paused time (issue 12): the real engine,
//! ledger, sandbox and callback router in this test's runtime, no Lua, no
//! child processes, no fixed sleeps. Virtual hours pass in milliseconds,
//! so retries, callback deadlines and budgets are tested at their real
//! settings. What only processes show (kill -9, signals, systemd) stays in
//! the process-level tests.

mod common;

use std::time::Duration;

use common::inproc::World;
use common::stack::{SILENT_VENDOR, StackConfig};
use vipd::ledger::OrderState;
use vipd::units::Fen;

const LONG: Duration = Duration::from_secs(600);

/// A world whose vendor never calls back (the test plays it), its first
/// order pending, and that order's attempt 1 failed by a signed callback.
/// Returns the world, attempt 1's vendor id and the callback's `time`.
async fn attempt_one_failed(cfg: &StackConfig) -> (World, String, String) {
    let w = World::start(cfg).await;
    let first = w
        .order_where("one pending", LONG, |o| o.state == OrderState::Pending)
        .await;
    let v1 = first.vendor_orderid.clone().unwrap();
    let t = w.now().to_string();
    let failed = [
        ("orderid", v1.as_str()),
        ("status", "failed"),
        ("time", t.as_str()),
    ];
    assert_eq!(w.callback(&failed).await.0, 200);
    (w, v1, t)
}

fn silent_vendor() -> StackConfig {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    cfg
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_failed_callback_never_pays_a_period_twice() {
    let (w, v1, t) = attempt_one_failed(&silent_vendor()).await;
    let failed_v1 = [
        ("orderid", v1.as_str()),
        ("status", "failed"),
        ("time", t.as_str()),
    ];
    // The key is retried (first retry ~10 s with retry_base 1s): attempt 2.
    let second = w
        .order_where("attempt 2 pending", LONG, |o| {
            o.attempts == 2 && o.state == OrderState::Pending
        })
        .await;
    let v2 = second.vendor_orderid.clone().unwrap();
    assert_ne!(v1, v2);

    // The vendor delivers attempt 1's failure again.
    assert_eq!(w.callback(&failed_v1).await, (200, "success".into()));
    // (Not a minute: by then the silent vendor has extended the membership
    // and the evidence settles the order.)
    w.pass(Duration::from_secs(3)).await;
    let orders = w.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (orders[0].state, orders[0].attempts),
        (OrderState::Pending, 2),
        "attempt 2 is untouched: {:?}",
        orders[0]
    );

    // Attempt 2's real success is recorded and counted.
    let ok_v2 = [
        ("orderid", v2.as_str()),
        ("status", "success"),
        ("price", "15.00"),
        ("time", t.as_str()),
    ];
    assert_eq!(w.callback(&ok_v2).await.0, 200);
    let done = w
        .order_where("the order succeeded", LONG, |o| {
            o.state == OrderState::Succeeded
        })
        .await;
    assert_eq!(done.spent, Fen(1500));
    // A replay of attempt 1's failure now changes nothing either.
    assert_eq!(w.callback(&failed_v1).await.0, 200);
    w.pass(Duration::from_secs(30)).await;
    assert_eq!(w.orders()[0].state, OrderState::Succeeded);
    assert_eq!(
        w.vendor_requests(),
        2,
        "two requests for the period, never a third"
    );
    w.stop().await;
}
