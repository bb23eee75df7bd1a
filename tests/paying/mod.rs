//! The paying path in process, on paused time: the real engine,
//! ledger, sandbox and callback router in this test's runtime, no Lua, no
//! child processes, no fixed sleeps. Virtual hours pass in milliseconds,
//! so retries, callback deadlines and budgets are tested at their real
//! settings. What only processes show (kill -9, signals, systemd) stays in
//! the process-level tests.
//!
//! Files: this one (renewals, retries, faults, budgets, clocks),
//! `callbacks.rs` (what vendors send back), `lapses.rs` (a covered
//! membership's end alerted whatever its renewal's state) and
//! `operator.rs` (unverified renewals, resolutions, manual orders, a
//! failing store).

mod callbacks;
mod lapses;
mod operator;

use std::time::Duration;

use crate::common::inproc::World;
use crate::common::signed;
use crate::common::stack::{SILENT_VENDOR, StackConfig};
use vipd::ledger::{AttemptState, Order, OrderState};
use vipd::units::Fen;

const LONG: Duration = Duration::from_secs(600);

fn silent_vendor() -> StackConfig {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = SILENT_VENDOR.into();
    cfg
}

#[tokio::test(start_paused = true)]
async fn a_due_account_that_will_not_be_renewed_is_alerted_once() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync\n  faults: { recharge: { transient_rate: 1.0 } }".into();
    cfg.rule = "    max_attempts: 1".into();
    let w = World::start(&cfg).await;
    let alerts = |w: &World| {
        w.events_of("error")
            .iter()
            .filter(|e| e.detail.contains("will not be renewed"))
            .count()
    };
    w.until("a give-up alert", LONG, async || {
        (alerts(&w) > 0).then_some(())
    })
    .await;
    assert_eq!(alerts(&w), 1);
    w.pass(Duration::from_secs(3)).await;
    assert_eq!(alerts(&w), 1, "once per streak, not at every check");
    w.stop().await;
}

/// The states an order went through, oldest first.
fn history(order: &Order) -> Vec<&str> {
    order.history.iter().map(|t| t.state.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn sync_renewal_is_paid_once_and_verified() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let w = World::start(&cfg).await;
    let orders = w.settled_and_verified(1, LONG).await;
    assert_eq!(orders.len(), 1);
    let o = &orders[0];
    assert_eq!(o.spent, Fen(1500));
    assert_eq!(history(o), ["planned", "sent", "succeeded"]);
    assert_eq!(w.billed().get("a0"), Some(&1));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn async_renewal_settles_by_callback() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: async\n  callback_delay: 300ms".into();
    let w = World::start(&cfg).await;
    let orders = w.settled_and_verified(1, LONG).await;
    assert_eq!(
        history(&orders[0]),
        ["planned", "sent", "pending", "succeeded"]
    );
    assert!(
        orders[0].history[3].why.starts_with("callback: success"),
        "{:?}",
        orders[0]
    );
    let sb = w.sandbox.orders();
    assert_eq!(sb.len(), 1);
    assert_eq!(sb[0].callbacks_acked, 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_due_account_among_several_is_billed_once_over_many_polls() {
    let mut cfg = StackConfig::due(0);
    cfg.accounts = vec![
        ("due".into(), Some("1d".into())),
        ("fine1".into(), Some("20d".into())),
        ("fine2".into(), Some("25d".into())),
        ("fine3".into(), Some("29d".into())),
    ];
    cfg.sandbox = "  mode: async\n  callback_delay: 200ms".into();
    let w = World::start(&cfg).await;
    w.settled_and_verified(1, LONG).await;
    // Checks run every second; give them many chances to pay again.
    w.pass(Duration::from_secs(6)).await;
    let billed = w.billed();
    assert_eq!(billed.len(), 1, "{billed:?}");
    assert_eq!(billed.get("due"), Some(&1));
    assert_eq!(
        w.vendor_requests(),
        1,
        "no other request reached the vendor"
    );
    assert_eq!(w.orders().len(), 1);
    let status = w.engine.status().await.unwrap();
    assert!(
        status
            .checks
            .iter()
            .filter(|c| c.account != "due")
            .all(|c| c.decision.starts_with("not due"))
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn faults_on_twenty_due_accounts_renew_each_exactly_once() {
    let mut cfg = StackConfig::due(20);
    cfg.sandbox = "  mode: sync\n  seed: 7\n  faults:\n    recharge: { transient_rate: 0.3, garbage_rate: 0.05, http500_rate: 0.05, hang_rate: 0.05, hang_for: 4s }\n    vip_info: { transient_rate: 0.1, garbage_rate: 0.05 }".into();
    cfg.rule = "    max_attempts: 8".into();
    let w = World::start(&cfg).await;
    let orders = w
        .until("20 renewals", Duration::from_secs(90), async || {
            let o = w.orders();
            let done = o.iter().filter(|o| o.state == OrderState::Succeeded);
            (done.count() == 20).then_some(o)
        })
        .await;
    assert_eq!(orders.len(), 20);
    w.pass(Duration::from_secs(3)).await;
    let billed = w.billed();
    assert_eq!(billed.len(), 20, "{billed:?}");
    assert!(
        billed.values().all(|&n| n == 1),
        "someone paid twice: {billed:?}"
    );
    let sb = w.sandbox.orders();
    assert!(sb.len() > 20, "faults happened: {} requests", sb.len());
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn budget_cap_stops_spending_at_the_cap() {
    let mut cfg = StackConfig::due(5);
    cfg.sandbox = "  mode: sync".into();
    // 20.00 held per order: two fit in 40.00, a third would not.
    cfg.rule = "    budget: { per_day: 40.00 }".into();
    let w = World::start(&cfg).await;
    w.settled_and_verified(2, LONG).await;
    w.until("a budget_exceeded event", LONG, async || {
        (!w.events_of("budget_exceeded").is_empty()).then_some(())
    })
    .await;
    let budget_events = |w: &World| -> Vec<(i64, Option<String>)> {
        w.events_of("budget_exceeded")
            .into_iter()
            .map(|e| (e.at, e.account))
            .collect()
    };
    // Let every account's decision settle, then watch three more checks
    // of each (every 1 s): a budget that stays exceeded alerts once.
    w.pass(Duration::from_secs(2)).await;
    let before = budget_events(&w);
    w.pass(Duration::from_secs(3)).await;
    assert_eq!(budget_events(&w), before);
    let billed: usize = w.billed().values().sum();
    assert_eq!(billed, 2);
    assert_eq!(
        w.engine.status().await.unwrap().spend[0].used_day,
        Fen(3000)
    );
    assert_eq!(w.orders().len(), 2);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn exhausted_balance_pauses_the_provider() {
    let mut cfg = StackConfig::due(4);
    cfg.sandbox = "  mode: sync\n  balance: 20.00".into();
    cfg.daemon = "  probe_every: 1h".into();
    cfg.provider = "    max_in_flight: 1".into();
    let w = World::start(&cfg).await;
    let status = w
        .until("the provider paused", LONG, async || {
            let s = w.engine.status().await.unwrap();
            s.paused.contains_key("wapi").then_some(s)
        })
        .await;
    assert!(status.paused["wapi"].contains("10022"), "{status:?}");
    w.pass(Duration::from_secs(3)).await;
    let sb = w.sandbox.orders();
    let refused = sb.iter().filter(|o| o.codeid == 10022).count();
    assert_eq!(refused, 1, "no more orders after the pause: {sb:?}");
    assert_eq!(sb.iter().filter(|o| o.billed).count(), 1);
    assert!(status.events.iter().any(|e| e.kind == "provider_paused"));
    w.stop().await;
}

/// Events whose detail speaks of the wall clock.
async fn clock_alerts(w: &World) -> usize {
    w.engine
        .status()
        .await
        .unwrap()
        .events
        .iter()
        .filter(|e| e.detail.contains("wall clock"))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_clock_stepped_28_days_ahead_pays_nothing_early() {
    let mut cfg = StackConfig::due(0);
    // 31 days left: not due (renew_before 3d) unless the clock lies.
    cfg.accounts = vec![("a0".into(), Some("31d".into()))];
    cfg.sandbox = "  mode: sync".into();
    let w = World::start(&cfg).await;
    w.pass(Duration::from_secs(2)).await;
    w.clock.step(28 * 86_400);
    w.pass(Duration::from_secs(8)).await;
    assert_eq!(
        w.vendor_requests(),
        0,
        "nothing sent on a clock 28 days off"
    );
    assert_eq!(clock_alerts(&w).await, 1, "one alert per step");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_short_step_back_does_not_stall_the_schedule() {
    let mut cfg = StackConfig::due(0);
    // Due 15 s after start (3 days + 15 s left, renew_before 3d).
    cfg.accounts = vec![("a0".into(), Some("3d15s".into()))];
    cfg.sandbox = "  mode: sync".into();
    let w = World::start(&cfg).await;
    let start = tokio::time::Instant::now();
    w.pass(Duration::from_secs(2)).await;
    w.clock.step(-3_600);
    w.pass(Duration::from_secs(5)).await;
    w.clock.step(3_600);
    let left = Duration::from_secs(45) - start.elapsed();
    w.until("renewed", left, async || {
        (w.billed().get("a0") == Some(&1)).then_some(())
    })
    .await;
    let billed_at = start.elapsed();
    assert!(
        billed_at < Duration::from_secs(30),
        "paid {billed_at:?} after start; due at 15 s"
    );
    assert_eq!(clock_alerts(&w).await, 1);
    w.stop().await;
}

/// Many pairs due at once wait for a `max_concurrent_checks` slot as
/// wakes in the scheduler, not as spawned tasks: with a million accounts
/// due in one `startup_spread`, waiting tasks took 0.6 GB. All renew.
#[tokio::test(start_paused = true)]
async fn due_pairs_wait_for_a_slot_before_a_task_is_spawned() {
    let mut cfg = StackConfig::due(40);
    // Each read takes 50 ms of the paused clock: checks overlap.
    cfg.sandbox = "  mode: sync\n  faults: { vip_info: { latency: 50ms } }".into();
    cfg.daemon = "  max_concurrent_checks: 2".into();
    let w = World::start(&cfg).await;
    let mut most = 0;
    let mut done = 0;
    for _ in 0..20_000 {
        most = most.max(w.engine.checks_in_flight());
        done = w
            .orders()
            .iter()
            .filter(|o| o.state == OrderState::Succeeded)
            .count();
        if done == 40 {
            break;
        }
        w.pass(Duration::from_millis(5)).await;
    }
    assert_eq!(done, 40, "every due account renewed");
    assert_eq!(most, 2, "both slots were used");
    w.stop().await;
}

/// A renewal hands its check slot on once it holds its in-flight slot:
/// with 2 check slots, 4 in-flight slots and recharges that take 1 s, four
/// recharges are in flight at once (two when the check slot was held
/// through the payment, so checks, not the provider's limit, bound the
/// rate). Checks running never pass their 2 slots, recharges in flight
/// never pass their 4, and everyone renews.
#[tokio::test(start_paused = true)]
async fn a_renewal_hands_its_check_slot_on_when_it_may_pay() {
    const N: usize = 12;
    let mut cfg = StackConfig::due(N);
    cfg.sandbox = "  mode: sync\n  faults: { recharge: { latency: 1s } }".into();
    cfg.daemon = "  max_concurrent_checks: 2".into();
    cfg.provider = "    max_in_flight: 4".into();
    let w = World::start(&cfg).await;
    let (mut checks, mut paying, mut done) = (0, 0, 0);
    for _ in 0..2_000 {
        checks = checks.max(w.engine.checks_in_flight());
        let orders = w.orders();
        // `sent`: the request has left and its reply is not in.
        paying = paying.max(
            orders
                .iter()
                .filter(|o| o.state == OrderState::Sent)
                .count(),
        );
        done = orders
            .iter()
            .filter(|o| o.state == OrderState::Succeeded)
            .count();
        if done == N {
            break;
        }
        w.pass(Duration::from_millis(10)).await;
    }
    assert_eq!(done, N, "every due account renewed");
    assert_eq!(checks, 2, "check slots used, never passed");
    assert_eq!(paying, 4, "in-flight slots used, never passed");
    w.stop().await;
}

/// Providers' `rate_limit`s are kept and used, counted at the sandbox
/// every 100 ms of paused time: in no second more than the rate allows
/// (plus the one a window's edge can hold). With reads at 20/s, the second
/// look before paying waits for reads of varying length: recharges once
/// left bunched, 8 in a second of 5/s, when their rate slot was taken
/// before that look. With reads at 50/s, recharges are the bottleneck and
/// run at 90% of their rate or more.
#[tokio::test(start_paused = true)]
async fn rate_limits_are_never_exceeded_and_are_used() {
    const N: usize = 30;
    for read_rate in [20, 50] {
        let mut cfg = StackConfig::due(N);
        cfg.sandbox = "  mode: sync".into();
        cfg.provider = "    rate_limit: 5/s".into();
        cfg.rewrite.push((
            "oauth_consumer_key: \"101234567\", timeout: 2s }".into(),
            format!("oauth_consumer_key: \"101234567\", timeout: 2s, rate_limit: {read_rate}/s }}"),
        ));
        let w = World::start(&cfg).await;
        // (reads, recharges) after each 100 ms.
        let mut seen = vec![(0, 0)];
        while w.vendor_requests() < N && seen.len() < 600 {
            w.pass(Duration::from_millis(100)).await;
            seen.push((w.sandbox.reads() as usize, w.vendor_requests()));
        }
        assert_eq!(w.vendor_requests(), N, "every due account paid");
        for (t, pair) in seen.windows(11).enumerate() {
            let (reads, paid) = (pair[10].0 - pair[0].0, pair[10].1 - pair[0].1);
            assert!(
                reads <= read_rate + 1,
                "{reads} reads in the second from {t}00 ms"
            );
            assert!(paid <= 6, "{paid} recharges in the second from {t}00 ms");
        }
        if read_rate == 50 {
            let first = seen.iter().position(|s| s.1 >= 1).unwrap();
            let last = seen.iter().position(|s| s.1 >= N).unwrap();
            let rate = (N - 1) as f64 / ((last - first) as f64 / 10.0);
            assert!(rate >= 4.5, "{rate:.2} recharges/s of the 5/s allowed");
        }
        w.stop().await;
    }
}

/// A renewal pays on its check's own read when that read is fresh (no
/// second request for the same answer), and looks again when it waited
/// long enough for its in-flight slot that someone else could have
/// renewed meanwhile: then a moved end stops it.
#[tokio::test(start_paused = true)]
async fn the_second_look_is_taken_only_when_the_read_is_old() {
    // Fresh: one due account, nothing to wait for.
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let w = World::start(&cfg).await;
    w.order_where("sent", LONG, |o| o.state != OrderState::Planned)
        .await;
    assert_eq!(w.sandbox.reads(), 1, "the check's read, and no second");
    w.stop().await;

    // Old: one in-flight slot, held 5 s by the first recharge; the other
    // account's end moves (renewed elsewhere) while it waits.
    let mut cfg = StackConfig::due(2);
    cfg.provider = "    max_in_flight: 1".into();
    cfg.rewrite = vec![("    timeout: 2s\n".into(), "    timeout: 10s\n".into())];
    cfg.sandbox = "  mode: sync\n  faults: { recharge: { latency: 5s } }".into();
    let w = World::start(&cfg).await;
    let first = w
        .order_where("one sent", LONG, |o| o.state == OrderState::Sent)
        .await;
    let other = if first.account == "a0" { "a1" } else { "a0" };
    w.until("the other checked", LONG, async || {
        (w.sandbox.reads() >= 2).then_some(())
    })
    .await;
    let later = w.now() + 40 * 86_400;
    let moved = crate::common::post_json(
        &format!("{}/_sandbox/accounts/{other}", w.sandbox.base_url()),
        serde_json::json!({ "ends": { "qq_vip": later } }),
    )
    .await;
    assert!(moved.is_success());
    w.settled_and_verified(1, LONG).await;
    w.pass(Duration::from_secs(10)).await;
    assert_eq!(w.billed().get(other), None, "{:#?}", w.orders());
    assert!(
        w.orders().iter().all(|o| o.account != other),
        "{:#?}",
        w.orders()
    );
    w.stop().await;
}

/// After a payment the account is read again at each follow-up offset
/// (2 s, 5 s, ... 15 min after), whatever the rule's own interval, and
/// then no more until the rule's next check.
#[tokio::test(start_paused = true)]
async fn a_payment_is_followed_by_a_read_at_each_offset() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    cfg.rewrite = vec![("check: { every: 1s }".into(), "check: { every: 1h }".into())];
    let w = World::start(&cfg).await;
    w.order_where("the payment", LONG, |o| o.state == OrderState::Succeeded)
        .await;
    // Seen at most 100 ms after the reply that queued the follow-ups.
    let paid = tokio::time::Instant::now();
    let before = w.sandbox.reads();
    let mut seen = vec![];
    for secs in [1, 3, 6, 16, 31, 61, 121, 301, 901, 1800] {
        tokio::time::sleep_until(paid + Duration::from_secs(secs)).await;
        seen.push(w.sandbox.reads() - before);
    }
    assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]);
    w.stop().await;
}
