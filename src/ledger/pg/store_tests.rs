//! The PostgreSQL store as nodes see it: the conformance suite, leases
//! lost and taken over, pairs shared, and which commits wait for the disk.

use super::super::throwaway::{TestDb, database};
use super::*;
use crate::ledger::conformance::{Backend, conformance_suite};

fn config(db: &TestDb, node: &str) -> PgConfig {
    PgConfig {
        url: db.url().to_owned(),
        node: node.to_owned(),
        lease: Duration::from_secs(30),
        pool_size: 4,
    }
}

/// A database of its own for each test, on the process's server; a
/// reopen is a restart of node `n1` (a new fence).
struct PgBackend;

impl Backend for PgBackend {
    type Store = PgStore;
    type Place = TestDb;
    async fn place() -> TestDb {
        database().await
    }
    async fn open(place: &TestDb) -> PgStore {
        PgStore::open(&config(place, "n1")).await.unwrap()
    }
}

conformance_suite!(PgBackend);

fn with_lease(db: &TestDb, node: &str, ms: u64) -> PgConfig {
    PgConfig {
        lease: Duration::from_millis(ms),
        ..config(db, node)
    }
}

/// Two nodes share the pairs, each pair one node's; when one dies its
/// `sent` order becomes `unknown` at the other (never re-sent) once
/// its lease has run out, not before, and its pairs move over. A
/// vendor's NUL in a reply loses no record.
#[tokio::test]
async fn a_dead_nodes_work_is_taken_over_after_its_lease() {
    use crate::ledger::conformance::{NOW, request};
    let db = database().await;
    let a = PgStore::open(&with_lease(&db, "n1", 900)).await.unwrap();
    let b = PgStore::open(&with_lease(&db, "n2", 900)).await.unwrap();
    a.plan(&request("k"), NOW).await.unwrap().unwrap();
    a.mark_sent("k", NOW).await.unwrap();
    // a learns of b at its next renewal.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let accounts: Vec<String> = (0..100).map(|i| format!("acct-{i}")).collect();
    let mut per = [0, 0];
    let noted = CheckState {
        decision: "checked by n1".into(),
        ..CheckState::default()
    };
    let mut of_a = Vec::new();
    for acct in &accounts {
        let (ra, rb) = (
            a.claim("keep", acct).await.unwrap(),
            b.claim("keep", acct).await.unwrap(),
        );
        assert!(ra ^ rb, "{acct}: one node");
        per[usize::from(rb)] += 1;
        if ra {
            a.put_check_state("keep", acct, &noted).await.unwrap();
            of_a.push(acct.clone());
        }
    }
    assert!(per[0] > 20 && per[1] > 20, "{per:?}");
    drop(a);
    assert!(
        b.take_over(NOW).await.unwrap().is_empty(),
        "n1's lease holds"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let taken = b.take_over(NOW).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        (taken[0].key.as_str(), taken[0].state),
        ("k", OrderState::Unknown)
    );
    for acct in &accounts {
        assert!(b.claim("keep", acct).await.unwrap(), "{acct} moved to n2");
    }
    // The pairs taken over go on from n1's last check.
    for acct in &of_a {
        assert_eq!(b.check_state("keep", acct).await.unwrap(), noted, "{acct}");
    }
    b.plan(&request("nul"), NOW).await.unwrap().unwrap();
    b.mark_sent("nul", NOW).await.unwrap();
    let detail = "garbage \0 from the vendor";
    b.record_attempt(
        "nul",
        NOW,
        OutcomeClass::Rejected,
        detail,
        AttemptResult::Failed { retry_at: None },
    )
    .await
    .unwrap();
    let o = b.get("nul").await.unwrap().unwrap();
    assert!(format!("{o:?}").contains("garbage \\0"), "{o:?}");
}

/// Check and account states are committed without waiting for the
/// WAL flush; everything else waits for it (the server's default).
#[tokio::test]
async fn only_records_that_move_no_money_skip_the_wal_flush() {
    let db = database().await;
    let cfg = config(&db, "n1");
    let setting = |pool: Pool| async move {
        let c = pool.get().await.unwrap();
        let row = c.query_one("SHOW synchronous_commit", &[]).await.unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(setting(pool(&cfg).unwrap()).await, "on");
    assert_eq!(setting(relaxed_pool(&cfg).unwrap()).await, "off");
    let with_options = PgConfig {
        url: format!("{} options='-c statement_timeout=5000'", db.url()),
        ..cfg
    };
    let c = relaxed_pool(&with_options).unwrap().get().await.unwrap();
    let row = c
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('statement_timeout')",
            &[],
        )
        .await
        .unwrap();
    let (sync, timeout): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        (sync.as_str(), timeout.as_str()),
        ("off", "5s"),
        "the operator's options kept"
    );
}

/// A node whose name another start took is fenced off: its lease is
/// reported lost, `/healthz`'s probe fails, and it can plan nothing.
#[tokio::test]
async fn a_node_that_loses_its_lease_stops_paying() {
    use crate::ledger::conformance::{NOW, request};
    let db = database().await;
    let old = PgStore::open(&with_lease(&db, "n1", 600)).await.unwrap();
    old.probe().await.unwrap();
    let _new = PgStore::open(&with_lease(&db, "n1", 600)).await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(2), old.failed())
        .await
        .expect("the loss is noticed at the next renewal");
    assert!(why.contains("lost its lease"), "{why}");
    assert!(matches!(old.probe().await, Err(LedgerError::Fenced(_))));
    assert!(matches!(
        old.plan(&request("k"), NOW).await,
        Err(LedgerError::Fenced(_))
    ));
    let uncapped = crate::ledger::PlanRequest {
        budget: Default::default(),
        ..request("k")
    };
    assert!(matches!(
        old.plan(&uncapped, NOW).await,
        Err(LedgerError::Fenced(_))
    ));
}

/// A hold set on one node stops another node's plans at once (capped or
/// not: each plan reads the hold in its own statement), and the other
/// node's checks say so within a second, without asking at every check.
#[tokio::test]
async fn a_hold_set_on_one_node_stops_the_others_plans_at_once() {
    use crate::ledger::conformance::{NOW, request};
    let db = database().await;
    let a = PgStore::open(&config(&db, "a")).await.unwrap();
    let b = PgStore::open(&config(&db, "b")).await.unwrap();
    assert_eq!(a.held("acct-x").await.unwrap(), None);
    b.hold_all(NOW, "restored from a backup").await.unwrap();
    let uncapped = crate::ledger::PlanRequest {
        budget: Default::default(),
        ..request("x")
    };
    for req in [uncapped, request("y")] {
        let refused = a.plan(&req, NOW).await.unwrap();
        assert!(matches!(refused, Err(Refusal::Held { .. })), "{refused:?}");
    }
    let seen_within = Instant::now();
    while a.held("acct-x").await.unwrap().is_none() {
        assert!(
            seen_within.elapsed() < Duration::from_secs(2),
            "a check sees another node's hold within a second"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.release(None).await.unwrap();
    a.plan(&request("y"), NOW).await.unwrap().unwrap();
}

/// An account's state read with its token answers the check's next ask,
/// never over a state written since.
#[tokio::test]
async fn an_account_state_read_with_its_token_never_hides_a_later_write() {
    let db = database().await;
    let a = PgStore::open(&config(&db, "a")).await.unwrap();
    let failing = AccountState {
        auth_failing: true,
        last_error: Some("token expired".into()),
    };
    a.put_account_state("acct", &failing).await.unwrap();
    assert_eq!(a.stored_token("acct").await.unwrap(), None);
    assert_eq!(a.account_state("acct").await.unwrap(), failing);
    a.stored_token("acct").await.unwrap();
    a.put_account_state("acct", &AccountState::default())
        .await
        .unwrap();
    assert_eq!(
        a.account_state("acct").await.unwrap(),
        AccountState::default()
    );
}

/// An account's orders read with its token answer the next ask for them,
/// once (another node's write since is not seen by that answer); a write
/// of one of them by this node since is always seen.
#[tokio::test]
async fn orders_read_with_the_token_never_hide_this_nodes_later_write() {
    use crate::ledger::conformance::{NOW, request};
    let db = database().await;
    let a = PgStore::open(&config(&db, "a")).await.unwrap();
    let b = PgStore::open(&config(&db, "b")).await.unwrap();
    let uncapped = PlanRequest {
        budget: Default::default(),
        ..request("x")
    };
    a.plan(&uncapped, NOW).await.unwrap().unwrap();
    let states = |orders: Vec<Order>| orders.iter().map(|o| o.state).collect::<Vec<_>>();
    a.stored_token("acct-x").await.unwrap();
    b.mark_sent("x", NOW).await.unwrap();
    let answered = states(a.orders_of("acct-x").await.unwrap());
    assert_eq!(answered, [OrderState::Planned], "as read with the token");
    let again = states(a.orders_of("acct-x").await.unwrap());
    assert_eq!(again, [OrderState::Sent], "read again");
    a.stored_token("acct-x").await.unwrap();
    a.record_attempt(
        "x",
        NOW,
        OutcomeClass::Pending,
        "accepted",
        AttemptResult::Pending {
            price: None,
            vendor_orderid: None,
        },
    )
    .await
    .unwrap();
    let own = states(a.orders_of("acct-x").await.unwrap());
    assert_eq!(own, [OrderState::Pending], "this node's own write");
}

/// A node that paid for a pair keeps its claim while the payment is
/// unsettled, though a node that joined is preferred for the pair now;
/// once settled, the claim is given back and the other node takes it.
#[tokio::test]
async fn a_pair_with_a_payment_in_flight_stays_with_the_node_that_paid() {
    use crate::ledger::conformance::{NOW, request};
    let db = database().await;
    let a = PgStore::open(&config(&db, "n1")).await.unwrap();
    let both = ["n1".to_owned(), "n2".to_owned()];
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| lease::preferred(&both, "keep", &format!("acct-{k}")) == Some("n2"))
        .unwrap();
    let account = format!("acct-{key}");
    assert!(
        a.claim("keep", &account).await.unwrap(),
        "alone, n1 takes it"
    );
    a.plan(&request(&key), NOW).await.unwrap().unwrap();
    a.mark_sent(&key, NOW).await.unwrap();
    let b = PgStore::open(&config(&db, "n2")).await.unwrap();
    a.refresh_live().await.unwrap();
    b.refresh_live().await.unwrap();
    assert!(a.claim("keep", &account).await.unwrap(), "in flight: kept");
    assert!(!b.claim("keep", &account).await.unwrap());
    a.record_attempt(
        &key,
        NOW,
        OutcomeClass::Rejected,
        "codeid 10010",
        AttemptResult::Failed { retry_at: None },
    )
    .await
    .unwrap();
    assert!(
        !a.claim("keep", &account).await.unwrap(),
        "settled: given back"
    );
    assert!(b.claim("keep", &account).await.unwrap());
}

/// A plan under no cap commits without waiting for the WAL flush; a
/// flushed commit that starts after it (its sent mark's, or another
/// order's) makes it durable too. Asked for an order's durability with
/// no such commit since its plan, the store runs one of its own.
#[tokio::test]
async fn a_plan_is_made_durable_by_a_later_flush_or_by_a_commit_of_its_own() {
    use crate::ledger::conformance::{NOW, request};
    use crate::ledger::store::Commits;
    let db = database().await;
    let s = PgStore::open(&config(&db, "n1")).await.unwrap();
    let uncapped = |key| PlanRequest {
        budget: Default::default(),
        ..request(key)
    };
    let commits = |waits, commits| Commits { waits, commits };
    s.plan(&uncapped("a"), NOW).await.unwrap().unwrap();
    s.plan(&uncapped("b"), NOW).await.unwrap().unwrap();
    s.mark_sent("a", NOW).await.unwrap();
    s.durable_order("a").await.unwrap();
    assert_eq!(s.commits(), commits(1, 0), "the sent mark's flush");
    s.durable_order("b").await.unwrap();
    assert_eq!(s.commits(), commits(2, 0), "another order's later flush");
    s.plan(&uncapped("c"), NOW).await.unwrap().unwrap();
    s.durable_order("a").await.unwrap();
    assert_eq!(s.commits(), commits(3, 0), "a's writes need no flush for c");
    s.durable_order("c").await.unwrap();
    assert_eq!(
        s.commits(),
        commits(4, 1),
        "no flushed commit since c's plan"
    );
    s.durable_order("c").await.unwrap();
    assert_eq!(s.commits(), commits(5, 1), "nothing left to cover");
    s.plan(&uncapped("d"), NOW).await.unwrap().unwrap();
    s.durable().await.unwrap();
    assert_eq!(s.commits(), commits(6, 2), "every order's writes");
    let _new = PgStore::open(&config(&db, "n1")).await.unwrap();
    s.plan(&uncapped("e"), NOW).await.unwrap_err();
    assert!(
        matches!(s.durable_order("e").await, Err(LedgerError::Fenced(_))),
        "a fenced node's plan is never called durable"
    );
}

/// Two nodes answer one order awaiting approval at the same moment (two
/// operators, two dashboards): exactly one answer is taken, the other is
/// refused naming it, whichever node kept a stale copy of the order.
#[tokio::test]
async fn concurrent_answers_on_two_nodes_are_taken_once() {
    use crate::ledger::conformance::{NOW, request};
    use crate::ledger::{Answer, LedgerError};
    let db = database().await;
    let a = PgStore::open(&config(&db, "a")).await.unwrap();
    let b = PgStore::open(&config(&db, "b")).await.unwrap();
    let approve = |by: &str| Answer::Approve {
        by: by.into(),
        why: "ok".into(),
        price: crate::units::Fen(2000),
    };
    let decline = Answer::Decline {
        by: "carol".into(),
        why: "no".into(),
    };
    for i in 0..20 {
        let key = format!("k{i}");
        let mut req = request(&key);
        req.budget = crate::model::Budget {
            approve_above: Some(crate::units::Fen(1000)),
            ..Default::default()
        };
        // Node a plans it, so a keeps a copy that b's answer makes stale.
        let planned = a.plan(&req, NOW).await.unwrap().unwrap();
        assert_eq!(planned.state, OrderState::AwaitingApproval);
        let second = if i % 2 == 0 {
            approve("bob")
        } else {
            decline.clone()
        };
        let first = approve("alice");
        let (ra, rb) = tokio::join!(a.answer(&key, NOW, &first), b.answer(&key, NOW, &second));
        let taken = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(taken, 1, "{key}: {ra:?} / {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(
            matches!(&loser, Err(LedgerError::Refused { .. })),
            "{key}: {loser:?}"
        );
        // Whatever won, both nodes now refuse a third answer.
        for node in [&a, &b] {
            let third = node.answer(&key, NOW, &approve("dave")).await;
            assert!(
                matches!(third, Err(LedgerError::Refused { .. })),
                "{third:?}"
            );
        }
    }
}
