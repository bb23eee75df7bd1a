//! The paying path in process, on paused time (issue 12): the real engine,
//! ledger, sandbox and callback router in this test's runtime, no Lua, no
//! child processes, no fixed sleeps. Virtual hours pass in milliseconds,
//! so retries, callback deadlines and budgets are tested at their real
//! settings. What only processes show (kill -9, signals, systemd) stays in
//! the process-level tests.

mod common;

use std::time::Duration;

use common::inproc::World;
use common::signed;
use common::stack::{SILENT_VENDOR, StackConfig};
use vipd::ledger::{AttemptState, Order, OrderState};
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

#[tokio::test(start_paused = true)]
async fn a_success_for_an_attempt_recorded_failed_is_counted_and_alerted() {
    let (w, v1, t) = attempt_one_failed(&silent_vendor()).await;
    w.order_where("attempt 1 failed", LONG, |o| o.state == OrderState::Failed)
        .await;
    // Before the retry leaves, the vendor says attempt 1 was billed.
    let ok = [
        ("orderid", v1.as_str()),
        ("status", "success"),
        ("price", "15.00"),
        ("time", t.as_str()),
    ];
    assert_eq!(w.callback(&ok).await.0, 200);
    let o = w
        .order_where("the order succeeded", LONG, |o| {
            o.state == OrderState::Succeeded
        })
        .await;
    assert_eq!(o.spent, Fen(1500), "billed money is counted: {o:?}");
    let conflicts = w.events_of("billing_conflict");
    assert!(
        !conflicts.is_empty(),
        "{:?}",
        w.engine.status().await.unwrap().events
    );
    w.pass(Duration::from_secs(12)).await;
    assert_eq!(w.vendor_requests(), 1, "no retry once paid");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stale_and_future_callbacks_are_refused() {
    let mut cfg = silent_vendor();
    cfg.provider = "    callback: { max_age: 1h }".into();
    let w = World::start(&cfg).await;
    let first = w
        .order_where("one pending", LONG, |o| o.state == OrderState::Pending)
        .await;
    let v1 = first.vendor_orderid.clone().unwrap();
    let now = w.now();
    for t in [now - 3_700, now + 700] {
        let t = t.to_string();
        let fields = [
            ("orderid", v1.as_str()),
            ("status", "failed"),
            ("time", t.as_str()),
        ];
        let (status, body) = w.callback(&fields).await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(w.orders()[0].state, OrderState::Pending);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_callback_that_never_comes_makes_the_order_unknown_and_a_late_refund_releases_it() {
    let mut cfg = silent_vendor();
    cfg.provider = "    callback: { within: 2s }".into();
    let w = World::start(&cfg).await;
    let first = w
        .order_where("one pending", LONG, |o| o.state == OrderState::Pending)
        .await;
    let v1 = first.vendor_orderid.clone().unwrap();
    let unknown = w
        .order_where("the order to become unknown", LONG, |o| {
            o.state == OrderState::Unknown
        })
        .await;
    assert_eq!(unknown.spent, Fen(1500), "possibly paid: still counted");
    assert!(
        unknown
            .history
            .last()
            .unwrap()
            .why
            .contains("no callback within 2s"),
        "{unknown:?}"
    );
    assert_eq!(w.events_of("order_unknown").len(), 1);
    w.pass(Duration::from_secs(3)).await;
    assert_eq!(w.vendor_requests(), 1, "unknown is never re-sent");

    // The refund arrives late: the money goes back and the period is retried.
    let t = w.now().to_string();
    let refund = [
        ("orderid", v1.as_str()),
        ("status", "failed"),
        ("time", t.as_str()),
    ];
    assert_eq!(w.callback(&refund).await.0, 200);
    let retried = w
        .order_where("the retry", LONG, |o| {
            o.attempts == 2 && o.state == OrderState::Pending
        })
        .await;
    let first = &retried.attempt_log[0];
    assert_eq!(
        (first.state, first.spent),
        (AttemptState::NotPaid, Fen(0)),
        "the refunded attempt's money is released: {retried:?}"
    );
    assert_eq!(retried.spent, Fen(1500), "only attempt 2 counts");
    assert_eq!(w.vendor_requests(), 2);
    w.stop().await;
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
async fn callbacks_forged_duplicate_unknown_and_oversized() {
    // The sandbox settles late and never calls back: the test is the vendor.
    let w = World::start(&silent_vendor()).await;
    let order = w
        .order_where("one pending", LONG, |o| o.state == OrderState::Pending)
        .await;
    let vendor_id = order.vendor_orderid.clone().unwrap();
    let url = w.callback_url("wapi");
    let http = reqwest::Client::new();

    let forged = [
        ("orderid", vendor_id.as_str()),
        ("status", "success"),
        ("sign", "0123456789abcdef0123456789abcdef"),
    ];
    let r = http.post(&url).form(&forged).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let unsigned = [("orderid", vendor_id.as_str()), ("status", "success")];
    assert_eq!(
        http.post(&url)
            .form(&unsigned)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        w.orders()[0].state,
        OrderState::Pending,
        "forged callbacks change nothing"
    );

    let unknown = signed(&[("orderid", "NOPE"), ("status", "success")]);
    assert_eq!(
        http.post(&url)
            .form(&unknown)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let huge = vec![b'a'; 70 * 1024];
    assert_eq!(
        http.post(&url).body(huge).send().await.unwrap().status(),
        413
    );

    // A real one, as JSON: settles the order.
    let good = signed(&[
        ("orderid", &vendor_id),
        ("status", "success"),
        ("price", "15.00"),
    ]);
    let body: serde_json::Map<String, serde_json::Value> = good
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "success");
    let after = w.orders();
    assert_eq!(after[0].state, OrderState::Succeeded);
    let history_len = after[0].history.len();

    // The same callback again, by GET query: 200 and the reply, nothing else.
    let r = http.get(&url).query(&good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "success");
    assert_eq!(w.orders()[0].history.len(), history_len);
    let settled = w.events_of("order_settled").len();
    assert_eq!(settled, 1, "one transition, one event");
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

/// Manual orders and resolutions say why they did not happen in types the
/// admin API branches on (404, 409, 502, 503), not in words.
#[tokio::test(start_paused = true)]
async fn manual_orders_and_resolutions_fail_with_typed_reasons() {
    use vipd::engine::{ManualError, ResolveError};
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let w = World::start(&cfg).await;
    let paid = w.settled_and_verified(1, LONG).await.remove(0);
    let e = w
        .engine
        .manual_recharge("nobody", "qq_vip_month", false)
        .await;
    assert!(
        matches!(e, Err(ManualError::NoAccount(ref a)) if a == "nobody"),
        "{e:?}"
    );
    let e = w.engine.manual_recharge("a0", "nothing", false).await;
    assert!(
        matches!(e, Err(ManualError::NoProduct(ref p)) if p == "nothing"),
        "{e:?}"
    );
    let store = w.engine.store();
    let e = vipd::engine::resolve(&**store, "no-such-key", false, w.now()).await;
    assert!(matches!(e, Err(ResolveError::NotFound(_))), "{e:?}");
    let e = vipd::engine::resolve(&**store, &paid.key, false, w.now()).await;
    assert!(matches!(e, Err(ResolveError::NotResolvable(_))), "{e:?}");
    assert_eq!(w.billed().get("a0"), Some(&1), "nothing more was paid");
    w.stop().await;
}

/// The store stamps each transition's milliseconds with the daemon's
/// clock, the one its seconds come from (it read the system's clock).
#[tokio::test(start_paused = true)]
async fn transitions_are_stamped_by_the_daemons_clock() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let w = World::start(&cfg).await;
    let o = w.settled_and_verified(1, LONG).await.remove(0);
    assert_eq!(history(&o), ["planned", "sent", "succeeded"]);
    for t in &o.history {
        assert_eq!(t.at_ms.div_euclid(1000), t.at, "{:?}", o.history);
    }
    assert!(o.history.windows(2).all(|p| p[0].at_ms <= p[1].at_ms));
    w.stop().await;
}

/// A paid renewal whose new end never shows becomes `unverified` (an
/// alert), is never paid again on its own, and once an operator says it
/// was never delivered, is refunded and retried under the same key.
/// (tests/engine.rs does the resolution through the CLI, as an operator
/// would.)
#[tokio::test(start_paused = true)]
async fn a_paid_renewal_that_never_shows_is_unverified_refuted_and_retried() {
    let mut cfg = silent_vendor();
    cfg.rule = "    verify_within: 2s".into();
    let w = World::start(&cfg).await;
    let pending = w
        .order_where("one pending", LONG, |o| o.state == OrderState::Pending)
        .await;
    let vendor_id = pending.vendor_orderid.clone().unwrap();
    // The test plays the vendor: "success", though the end will not move.
    let t = w.now().to_string();
    let success = [
        ("orderid", vendor_id.as_str()),
        ("status", "success"),
        ("time", t.as_str()),
    ];
    assert_eq!(w.callback(&success).await.0, 200);
    w.until("renewal_unverified", LONG, async || {
        (!w.events_of("renewal_unverified").is_empty()).then_some(())
    })
    .await;
    let orders = w.orders();
    assert_eq!(orders.len(), 1);
    assert!(
        matches!(
            orders[0].verification,
            vipd::ledger::Verification::Unverified { .. }
        ),
        "{:?}",
        orders[0]
    );
    assert_eq!(orders[0].spent, Fen(1500), "paid: counted");
    // Checks go on (the vendor's extension lands only after 60 s, so the
    // account is still due): nothing is paid again.
    w.pass(Duration::from_secs(30)).await;
    assert_eq!(w.vendor_requests(), 1, "nothing re-paid");

    // The operator checks with the vendor: never delivered.
    let (refuted, _event) =
        vipd::engine::resolve(&**w.engine.store(), &orders[0].key[..10], false, w.now())
            .await
            .unwrap();
    assert_eq!(refuted.state, OrderState::Failed);
    assert_eq!(refuted.spent, Fen(0), "refunded to the budget");
    let retried = w
        .order_where("the retry under the same key", LONG, |o| {
            o.attempts == 2 && o.state == OrderState::Pending
        })
        .await;
    assert_eq!(retried.key, orders[0].key);
    assert_eq!(w.vendor_requests(), 2);
    w.stop().await;
}

/// A store that cannot make the planned order durable sends nothing, and
/// says why; nor does one that can make the plan durable but not the
/// `sent` mark (a crash then would not know the request may have left).
#[tokio::test(start_paused = true)]
async fn nothing_is_sent_unless_the_plan_and_the_sent_mark_are_durable() {
    use common::faulty::FaultyStore;
    for (fail_from, what) in [(1, "planned order"), (2, "sent mark")] {
        let mut cfg = StackConfig::due(1);
        cfg.sandbox = "  mode: sync".into();
        let faulty = std::sync::Arc::new(std::sync::OnceLock::new());
        let slot = faulty.clone();
        let w = World::start_with(&cfg, move |ledger| {
            let store = std::sync::Arc::new(FaultyStore::new(ledger, fail_from));
            slot.set(store.clone()).unwrap();
            store
        })
        .await;
        let why = format!("the {what} is not durable, not sending");
        w.until(&why, LONG, async || {
            w.events_of("error")
                .into_iter()
                .find(|e| e.detail.contains(&why))
        })
        .await;
        w.pass(Duration::from_secs(30)).await;
        assert_eq!(w.vendor_requests(), 0, "{what}: nothing sent");
        assert!(faulty.get().unwrap().durables() >= fail_from);
        let orders = w.orders();
        assert_eq!(orders.len(), 1, "{orders:?}");
        let expect = if fail_from == 1 {
            OrderState::Planned
        } else {
            OrderState::Sent
        };
        assert_eq!(orders[0].state, expect, "{what}");
        w.stop().await;
    }
}
