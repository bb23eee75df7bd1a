//! Callbacks in process: re-delivered, replayed, stale, forged, lost.

use super::*;

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
    // The check that found the callback overdue decided on the order as
    // it left it, not as it read it before.
    w.pass(Duration::from_millis(500)).await;
    let decided = w
        .ledger
        .check_state(&unknown.rule, &unknown.account)
        .unwrap()
        .decision;
    assert!(decided.contains("possibly paid"), "{decided}");
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

/// A store that cannot read the order a callback names answers 503 (try
/// again), never 404 (which tells the vendor the order is not ours), and
/// changes nothing; the same callback once the store reads again settles
/// the order.
#[tokio::test(start_paused = true)]
async fn a_callback_the_store_cannot_read_for_is_answered_503() {
    use crate::common::faulty::FaultyStore;
    let faulty = std::sync::Arc::new(std::sync::OnceLock::new());
    let slot = faulty.clone();
    let w = World::start_with(&silent_vendor(), move |ledger| {
        let store = std::sync::Arc::new(FaultyStore::new(ledger, usize::MAX));
        slot.set(store.clone()).unwrap();
        store
    })
    .await;
    let pending = w
        .order_where("one pending", LONG, |o| o.state == OrderState::Pending)
        .await;
    let store = faulty.get().unwrap();
    store.fail_reads(true);
    assert_eq!(w.success_callback(&pending).await, 503);
    store.fail_reads(false);
    assert_eq!(
        w.ledger.get(&pending.key).unwrap().unwrap().state,
        OrderState::Pending,
        "nothing changed"
    );
    assert_eq!(w.success_callback(&pending).await, 200);
    w.order_where("the order succeeded", LONG, |o| {
        o.state == OrderState::Succeeded
    })
    .await;
    w.stop().await;
}

/// A callback for an order whose reply was lost (so the ledger has no
/// vendor order id for it) is matched by the account it names; while the
/// store cannot read that account's orders it is answered 503 (try
/// again), never 404, and once the store reads again the same callback
/// settles the order.
#[tokio::test(start_paused = true)]
async fn a_callback_matched_by_its_account_while_the_store_cannot_read_is_answered_503() {
    use crate::common::faulty::FaultyStore;
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: async\n  callback_delay: 60s\n  faults: { recharge: { http500_rate: 1.0, drop_callback_rate: 1.0 } }".into();
    let faulty = std::sync::Arc::new(std::sync::OnceLock::new());
    let slot = faulty.clone();
    let w = World::start_with(&cfg, move |ledger| {
        let store = std::sync::Arc::new(FaultyStore::new(ledger, usize::MAX));
        slot.set(store.clone()).unwrap();
        store
    })
    .await;
    let unknown = w
        .order_where("a lost reply", LONG, |o| o.state == OrderState::Unknown)
        .await;
    assert_eq!(unknown.vendor_orderid, None);
    let billed = w.sandbox.orders();
    let vendor_id = billed
        .iter()
        .find_map(|o| o.orderid.clone())
        .expect("the vendor billed it");
    let t = w.now().to_string();
    let success = [
        ("orderid", vendor_id.as_str()),
        ("status", "success"),
        ("qq_number", "20000"),
        ("time", t.as_str()),
    ];
    let store = faulty.get().unwrap();
    store.fail_reads(true);
    assert_eq!(w.callback(&success).await.0, 503);
    store.fail_reads(false);
    assert_eq!(
        w.ledger.get(&unknown.key).unwrap().unwrap().state,
        OrderState::Unknown,
        "nothing changed"
    );
    assert_eq!(w.callback(&success).await.0, 200);
    let settled = w.ledger.get(&unknown.key).unwrap().unwrap();
    assert_eq!(settled.state, OrderState::Succeeded, "{settled:?}");
    w.stop().await;
}
