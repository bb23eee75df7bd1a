//! What operators meet in process: unverified renewals and their
//! resolution, manual orders' typed refusals, transitions' stamps, and a
//! store that cannot make a payment durable.

use super::*;

/// Manual orders and resolutions say why they did not happen in types the
/// admin API branches on (404, 409, 502, 503), not in words.
#[tokio::test(start_paused = true)]
async fn manual_orders_and_resolutions_fail_with_typed_reasons() {
    use vipd::engine::{ManualError, ResolveError};
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let w = World::start(&cfg).await;
    let paid = w.settled_and_verified(1, LONG).await.remove(0);
    let ops = vipd::engine::Operator {
        by: "ops",
        why: "checked with the vendor",
    };
    let order = |account, product| vipd::engine::ManualOrder {
        account,
        product,
        dry_run: false,
        ahead: false,
        who: ops,
    };
    let e = w
        .engine
        .manual_recharge(order("nobody", "qq_vip_month"))
        .await;
    assert!(
        matches!(e, Err(ManualError::NoAccount(ref a)) if a == "nobody"),
        "{e:?}"
    );
    let e = w.engine.manual_recharge(order("a0", "nothing")).await;
    assert!(
        matches!(e, Err(ManualError::NoProduct(ref p)) if p == "nothing"),
        "{e:?}"
    );
    // Renewed 30 days on: not due, and its refusal says when it will be.
    let e = w.engine.manual_recharge(order("a0", "qq_vip_month")).await;
    match e {
        Err(ManualError::NotDue(why)) => assert!(why.contains("due at"), "{why}"),
        other => panic!("{other:?}"),
    }
    let store = w.engine.store();
    let e = vipd::engine::resolve(&**store, "no-such-key", false, ops, w.now()).await;
    assert!(matches!(e, Err(ResolveError::NotFound(_))), "{e:?}");
    let e = vipd::engine::resolve(&**store, &paid.key, false, ops, w.now()).await;
    assert!(matches!(e, Err(ResolveError::NotResolvable(_))), "{e:?}");
    // Money-moving writes say why: no reason, no write.
    let silent = vipd::engine::Operator {
        by: "ops",
        why: " ",
    };
    let e = vipd::engine::resolve(&**store, &paid.key, false, silent, w.now()).await;
    assert!(
        matches!(&e, Err(ResolveError::NotResolvable(why)) if why.contains("a reason is required")),
        "{e:?}"
    );
    let e = w
        .engine
        .manual_recharge(vipd::engine::ManualOrder {
            who: silent,
            ..order("a0", "qq_vip_month")
        })
        .await;
    assert!(matches!(e, Err(ManualError::NoReason(_))), "{e:?}");
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
    // The test plays the vendor: "success", though the end will not move.
    assert_eq!(w.success_callback(&pending).await, 200);
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
    let ops = vipd::engine::Operator {
        by: "token ops",
        why: "vendor says never delivered",
    };
    let store = w.engine.store();
    let (refuted, event) =
        vipd::engine::resolve(&**store, &orders[0].key[..10], false, ops, w.now())
            .await
            .unwrap();
    assert_eq!(refuted.state, OrderState::Failed);
    assert!(
        refuted
            .last_why()
            .contains("said token ops: vendor says never delivered"),
        "who and why are in the history: {}",
        refuted.last_why()
    );
    assert_eq!(event.by.as_deref(), Some("token ops"));
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

/// A store that cannot make the planned order and its `sent` mark durable
/// sends nothing, and says why: a crash then would not know the request
/// may have left. The order stays `sent` (a restart makes it `unknown`).
#[tokio::test(start_paused = true)]
async fn nothing_is_sent_unless_the_plan_and_the_sent_mark_are_durable() {
    use crate::common::faulty::FaultyStore;
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let faulty = std::sync::Arc::new(std::sync::OnceLock::new());
    let slot = faulty.clone();
    let w = World::start_with(&cfg, move |ledger| {
        let store = std::sync::Arc::new(FaultyStore::new(ledger, 1));
        slot.set(store.clone()).unwrap();
        store
    })
    .await;
    let why = "the planned order and its sent mark are not durable, not sending";
    w.until(why, LONG, async || {
        w.events_of("error")
            .into_iter()
            .find(|e| e.detail.contains(why))
    })
    .await;
    w.pass(Duration::from_secs(30)).await;
    assert_eq!(w.vendor_requests(), 0, "nothing sent");
    assert!(faulty.get().unwrap().durables() >= 1);
    let orders = w.orders();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].state, OrderState::Sent);
    w.stop().await;
}
