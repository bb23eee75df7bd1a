//! The PostgreSQL orders against one database and several nodes: plans,
//! transitions, caps and takeovers, each node with its own pool and lease.

use super::super::lease;
use super::super::throwaway::TestDb;
use super::*;
use crate::ledger::conformance::{NOW, request};
use crate::ledger::{AttemptResult, Budget};
use crate::model::OutcomeClass;
use crate::units::Fen;
use std::time::Duration;

/// A node `name`: its own pool on the shared database and a lease.
async fn named(db: &TestDb, name: &str, ttl: Duration) -> (PgOrders, Lease) {
    let pool = db.pool(4);
    let lease = lease::acquire(&**pool.get().await.unwrap(), name, ttl)
        .await
        .unwrap();
    (PgOrders::new(pool.clone(), pool, lease.clone()), lease)
}

async fn node(db: &TestDb) -> PgOrders {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    named(db, &format!("node-{n}"), Duration::from_secs(60))
        .await
        .0
}

#[tokio::test]
async fn a_plan_sent_and_paid_counts_its_price_and_names_its_vendor_id() {
    let db = TestDb::migrated().await;
    let n = node(&db).await;
    n.plan(&request("k1"), NOW).await.unwrap().unwrap();
    assert_eq!(
        n.spend("keep", "2026-11-21").await.unwrap().reserved,
        Fen(2000)
    );
    n.modify("k1", |o| change::mark_sent(o, NOW)).await.unwrap();
    let (o, conflict) = n
        .modify("k1", |o| {
            change::record_reply(
                o,
                NOW,
                OutcomeClass::Accepted,
                "codeid 10000",
                AttemptResult::Succeeded {
                    price: Some(Fen(1500)),
                    vendor_orderid: Some("V1".into()),
                    verify_deadline: NOW + 60,
                },
            )
        })
        .await
        .unwrap();
    assert_eq!((o.state, conflict), (OrderState::Succeeded, None));
    let spend = n.spend("keep", "2026-11-21").await.unwrap();
    assert_eq!((spend.reserved, spend.settled), (Fen::ZERO, Fen(1500)));
    assert_eq!(n.spend("keep", "2026-11").await.unwrap().settled, Fen(1500));
    assert_eq!(
        n.attempt_of_vendor_order("wapi", "V1").await.unwrap(),
        Some(VendorOrder {
            key: "k1".into(),
            attempt: Some(1)
        })
    );
    assert!(matches!(
        n.plan(&request("k1"), NOW).await.unwrap(),
        Err(Refusal::Exists { .. })
    ));
    assert_eq!(
        n.get("k1").await.unwrap().unwrap().state,
        OrderState::Succeeded
    );
}

/// Two nodes planning at once: one key is planned once; two keys for
/// one account and membership (two rules) pay once; a cap holds
/// across nodes.
#[tokio::test]
async fn nodes_planning_at_once_never_pay_twice_or_pass_a_cap() {
    let db = TestDb::migrated().await;
    let (a, b) = (node(&db).await, node(&db).await);
    for round in 0..10 {
        let key = format!("same-{round}");
        let req = PlanRequest {
            budget: Budget::default(),
            ..request(&key)
        };
        let (ra, rb) = tokio::join!(a.plan(&req, NOW), b.plan(&req, NOW));
        let planned = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(planned, 1, "{key}: planned by one node");
    }
    for round in 0..10 {
        let mut ka = request(&format!("rule-a-{round}"));
        let mut kb = request(&format!("rule-b-{round}"));
        ka.account = format!("shared-{round}");
        kb.account = ka.account.clone();
        ka.budget = Budget::default();
        kb.budget = Budget::default();
        let (ra, rb) = tokio::join!(a.plan(&ka, NOW), b.plan(&kb, NOW));
        let planned = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(planned, 1, "{}: one period, one order", ka.account);
    }
    // One node planning two keys for one account, and one key twice, at
    // once (in one batch): one order.
    let plans: Vec<_> = ["batched-1", "batched-2", "batched-1"]
        .into_iter()
        .map(|key| {
            let (n, r) = (
                a.clone(),
                PlanRequest {
                    account: "batched".into(),
                    budget: Budget::default(),
                    ..request(key)
                },
            );
            tokio::spawn(async move { n.plan(&r, NOW).await.unwrap().is_ok() })
        })
        .collect();
    let mut planned = 0;
    for p in plans {
        planned += usize::from(p.await.unwrap());
    }
    assert_eq!(planned, 1, "one account, one order");
    assert_eq!(a.orders_of("batched").await.unwrap().len(), 1);
    // The suite's cap is 5000 a day and each plan holds 2000: six
    // plans from two nodes on a fresh day, two fit.
    let day = |key: &str| {
        let mut r = request(key);
        r.day = "2026-12-01".into();
        r
    };
    let plans: Vec<_> = (0..6)
        .map(|i| {
            let n = if i % 2 == 0 { a.clone() } else { b.clone() };
            let r = day(&format!("cap-{i}"));
            tokio::spawn(async move { n.plan(&r, NOW).await.unwrap().is_ok() })
        })
        .collect();
    let mut fitted = 0;
    for p in plans {
        fitted += usize::from(p.await.unwrap());
    }
    assert_eq!(fitted, 2, "4000 of a 5000 cap held; a third would pass it");
    assert_eq!(
        a.spend("keep", "2026-12-01").await.unwrap().reserved,
        Fen(4000)
    );
    // Folding the changes into their rows, from both nodes at once and
    // while plans run, changes no spend and keeps the cap.
    let before = a.spend("keep", "2026-11-21").await.unwrap();
    let racing = {
        let b = b.clone();
        tokio::spawn(async move { b.plan(&day("cap-late"), NOW).await.unwrap().is_ok() })
    };
    let (fa, fb) = tokio::join!(a.fold_spend(), b.fold_spend());
    assert!(fa.unwrap() + fb.unwrap() > 0, "changes were folded");
    assert!(!racing.await.unwrap(), "the cap holds across a fold");
    assert_eq!(a.fold_spend().await.unwrap(), 0, "each change folded once");
    assert_eq!(a.spend("keep", "2026-11-21").await.unwrap(), before);
    assert_eq!(
        b.spend("keep", "2026-12-01").await.unwrap().reserved,
        Fen(4000)
    );
}

/// A node whose lease ran out, or whose name a newer start took over,
/// writes nothing: no plan, no transition; the newer holder does.
#[tokio::test]
async fn a_node_without_its_lease_writes_nothing() {
    let db = TestDb::migrated().await;
    let (old, lease) = named(&db, "east", Duration::from_secs(60)).await;
    old.plan(&request("k1"), NOW).await.unwrap().unwrap();
    // A second start under the name (the first one hung, say).
    let (new, _) = named(&db, "east", Duration::from_secs(60)).await;
    let fenced = old.modify("k1", |o| change::mark_sent(o, NOW)).await;
    assert!(matches!(fenced, Err(LedgerError::Fenced(_))), "{fenced:?}");
    assert!(matches!(
        old.plan(&request("k2"), NOW).await,
        Err(LedgerError::Fenced(_))
    ));
    let client = db.connect().await;
    assert!(
        !lease::renew(&client, &lease, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        new.get("k1").await.unwrap().unwrap().state,
        OrderState::Planned
    );
    new.modify("k1", |o| change::mark_sent(o, NOW))
        .await
        .unwrap();
    // A lease that runs out (on the database's clock) fences too, and
    // cannot be renewed after the fact.
    let (brief, brief_lease) = named(&db, "west", Duration::from_millis(300)).await;
    assert!(
        lease::renew(&client, &brief_lease, Duration::from_millis(300))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(
        brief.plan(&request("k3"), NOW).await,
        Err(LedgerError::Fenced(_))
    ));
    assert!(
        !lease::renew(&client, &brief_lease, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(new.get("k3").await.unwrap(), None, "nothing was written");
}

/// A node that dies mid-payment: another node finds what it left in
/// flight once its lease has run out; its `sent` order becomes
/// `unknown` (never re-sent) with its money still held, its `planned`
/// order `failed` and retryable with its hold released. Live nodes'
/// orders are left alone, and a second takeover changes nothing.
#[tokio::test]
async fn a_dead_nodes_orders_in_flight_are_taken_over_never_resent() {
    let db = TestDb::migrated().await;
    let unbudgeted = |key: &str| PlanRequest {
        budget: Budget::default(),
        ..request(key)
    };
    let (dead, _) = named(&db, "east", Duration::from_millis(400)).await;
    let live = node(&db).await;
    dead.plan(&unbudgeted("sent"), NOW).await.unwrap().unwrap();
    dead.modify("sent", |o| change::mark_sent(o, NOW))
        .await
        .unwrap();
    dead.plan(&unbudgeted("planned"), NOW)
        .await
        .unwrap()
        .unwrap();
    live.plan(&unbudgeted("mine"), NOW).await.unwrap().unwrap();
    assert!(
        live.recover_orphans(NOW).await.unwrap().is_empty(),
        "east's lease still runs"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut changed: Vec<(String, OrderState)> = live
        .recover_orphans(NOW + 5)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.state))
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        [
            ("planned".to_owned(), OrderState::Failed),
            ("sent".to_owned(), OrderState::Unknown),
        ]
    );
    let retry = live.get("planned").await.unwrap().unwrap();
    assert!(retry.may_retry(NOW + 5, 3), "{retry:?}");
    assert_eq!(
        live.get("mine").await.unwrap().unwrap().state,
        OrderState::Planned
    );
    // The unknown one keeps its 2000 held; the failed one let go.
    assert_eq!(
        live.spend("keep", "2026-11-21").await.unwrap().reserved,
        Fen(4000)
    );
    assert!(live.recover_orphans(NOW + 6).await.unwrap().is_empty());
    assert!(matches!(
        dead.modify("sent", |o| change::mark_sent(o, NOW)).await,
        Err(LedgerError::Fenced(_))
    ));
}

/// Lists, finds and counts read the shared table: every node sees
/// every node's orders.
#[tokio::test]
async fn every_node_lists_finds_and_counts_all_orders() {
    let db = TestDb::migrated().await;
    let (a, b) = (node(&db).await, node(&db).await);
    let unbudgeted = |key: &str, at: i64| {
        let mut r = PlanRequest {
            budget: Budget::default(),
            ..request(key)
        };
        r.why = format!("at {at}");
        r
    };
    a.plan(&unbudgeted("abc1", NOW), NOW)
        .await
        .unwrap()
        .unwrap();
    b.plan(&unbudgeted("abd2", NOW - 10), NOW - 10)
        .await
        .unwrap()
        .unwrap();
    b.plan(&unbudgeted("x_9", NOW + 10), NOW + 10)
        .await
        .unwrap()
        .unwrap();
    a.modify("abc1", |o| change::mark_sent(o, NOW))
        .await
        .unwrap();
    let keys = |os: Vec<Order>| os.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(keys(b.orders(None).await.unwrap()), ["abd2", "abc1", "x_9"]);
    assert_eq!(
        keys(b.orders(Some(OrderState::Sent)).await.unwrap()),
        ["abc1"]
    );
    assert_eq!(keys(a.orders_of("acct-x_9").await.unwrap()), ["x_9"]);
    assert_eq!(b.find("abc").await.unwrap().key, "abc1");
    assert!(
        b.find("ab")
            .await
            .unwrap_err()
            .to_string()
            .contains("several")
    );
    assert!(matches!(b.find("zz").await, Err(LedgerError::NotFound(_))));
    // `_` and `%` are the key's own characters, not patterns.
    assert!(matches!(b.find("x%").await, Err(LedgerError::NotFound(_))));
    assert_eq!(b.find("x_").await.unwrap().key, "x_9");
    let counts = a.count_by_state().await.unwrap();
    assert_eq!(
        (
            counts[&OrderState::Planned],
            counts[&OrderState::Sent],
            counts[&OrderState::Failed]
        ),
        (2, 1, 0)
    );
    assert_eq!(a.count_unverified().await.unwrap(), 0);
    a.modify("abc1", |o| {
        change::record_reply(
            o,
            NOW,
            OutcomeClass::Accepted,
            "codeid 10000",
            AttemptResult::Succeeded {
                price: None,
                vendor_orderid: None,
                verify_deadline: NOW,
            },
        )
    })
    .await
    .unwrap();
    b.modify("abc1", |o| {
        o.verification = crate::ledger::Verification::Unverified { at: NOW + 1 };
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(a.count_unverified().await.unwrap(), 1);
}

/// Two nodes changing one order at the same moment: every change is
/// written once and on top of the others, none overwrites another; a node
/// whose kept copy another node changed since reads it again.
#[tokio::test]
async fn transitions_of_one_order_from_several_nodes_are_never_lost() {
    let db = TestDb::migrated().await;
    let (a, b) = (node(&db).await, node(&db).await);
    let req = PlanRequest {
        budget: Budget::default(),
        ..request("k")
    };
    a.plan(&req, NOW).await.unwrap().unwrap();
    // b writes behind a's back: a's kept copy is stale, and a's change
    // is made on b's, not on its own.
    b.modify("k", |o| change::mark_sent(o, NOW)).await.unwrap();
    let (o, ()) = a
        .modify("k", |o| {
            o.enter(o.state, NOW, "a's note");
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(o.state, OrderState::Sent, "made on b's write");
    // Many notes from both nodes at once: all of them are kept.
    let notes: Vec<_> = (0..40)
        .map(|i| {
            let n = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                n.modify("k", move |o| {
                    o.enter(o.state, NOW, format!("note {i}"));
                    Ok(())
                })
                .await
                .unwrap();
            })
        })
        .collect();
    for n in notes {
        n.await.unwrap();
    }
    let o = a.get("k").await.unwrap().unwrap();
    let kept = (0..40)
        .filter(|i| o.history.iter().any(|t| t.why == format!("note {i}")))
        .count();
    assert_eq!(kept, 40, "{:?}", o.history);
    assert!(o.history.iter().any(|t| t.why == "a's note"));
}

/// A node "solo" with one order planned under no cap (key "k"), as
/// stored.
async fn one_planned_order() -> (TestDb, PgOrders, Order) {
    let db = TestDb::migrated().await;
    let (n, _) = named(&db, "solo", Duration::from_secs(60)).await;
    let req = PlanRequest {
        budget: Budget::default(),
        ..request("k")
    };
    n.plan(&req, NOW).await.unwrap().unwrap();
    let order = n.get("k").await.unwrap().unwrap();
    (db, n, order)
}

/// A writer of transitions under `n`'s lease, beside `n`'s own.
fn transitions_of(n: &PgOrders) -> Transitions {
    Transitions {
        lease: n.lease.clone(),
        flushes: Default::default(),
    }
}

/// Two transitions of one order read at the same version and written in
/// one batch: one is written and told so; the other is told it was not
/// (its caller makes it again on a fresh reading), never both.
#[tokio::test]
async fn two_transitions_of_one_order_in_one_batch_are_never_both_written() {
    let (db, n, order) = one_planned_order().await;
    let was = Share::of(&order);
    let writer = Batcher::start(db.pool(2), transitions_of(&n));
    let noted = |why: &'static str| {
        let mut o = order.clone();
        o.enter(o.state, NOW, why);
        let (writer, t) = (writer.clone(), Transition::of(Some(&was), 0, &o));
        tokio::spawn(async move { writer.write(t).await.unwrap() })
    };
    let (first, second) = (noted("first"), noted("second"));
    let written = [first.await.unwrap(), second.await.unwrap()];
    assert_eq!(written, [true, false]);
    let stored = n.get("k").await.unwrap().unwrap();
    assert!(stored.history.iter().any(|t| t.why == "first"));
    assert!(!stored.history.iter().any(|t| t.why == "second"));
}

/// An order's transition that leaves it unsettled (here `planned` →
/// `sent`) changes no indexed column: PostgreSQL writes it as a
/// heap-only update, with no new entry in any of the orders' indexes.
#[tokio::test]
async fn a_transition_that_leaves_an_order_unsettled_adds_no_index_entry() {
    use super::super::batch::Batch;
    let (db, n, mut order) = one_planned_order().await;
    let was = Share::of(&order);
    change::mark_sent(&mut order, NOW).unwrap();
    let transitions = transitions_of(&n);
    let c = db.pool(1).get().await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    let written = transitions
        .write(&c, &[Transition::of(Some(&was), 0, &order)])
        .await
        .unwrap();
    assert_eq!(written, [true]);
    let row = c
        .query_one(
            "SELECT pg_stat_get_xact_tuples_updated('vipd_orders'::regclass),
                    pg_stat_get_xact_tuples_hot_updated('vipd_orders'::regclass)",
            &[],
        )
        .await
        .unwrap();
    let (updated, hot): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((updated, hot), (1, 1), "updated, of them heap-only");
    c.batch_execute("COMMIT").await.unwrap();
}
