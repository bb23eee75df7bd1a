//! What else the port keeps: finding orders by prefix, check and account
//! state, rotated tokens, holds, and plugins' `vipd.kv`.

use super::*;
use crate::ledger::kv::{KvError, KvQuota, Ttl};

pub(crate) async fn an_order_is_found_by_a_unique_prefix<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    l.plan(&request("abc1"), NOW).await.unwrap().unwrap();
    l.plan(&request("abc2"), NOW).await.unwrap().unwrap();
    assert_eq!(l.find("abc1").await.unwrap().key, "abc1");
    assert!(matches!(l.find("abc").await, Err(LedgerError::NotFound(_))));
    assert!(matches!(l.find("zzz").await, Err(LedgerError::NotFound(_))));
    // A fresh store holds nothing back.
    assert_eq!(l.held("acct-abc1").await.unwrap(), None);
    assert_eq!(l.release(None).await.unwrap(), None);
}

pub(crate) async fn check_account_and_token_records_read_back<B: Backend>() {
    let place = B::place().await;
    let check = CheckState {
        checked_at: Some(NOW),
        observed_end: Some(NOW + 86_400),
        decision: "renew".into(),
        veto: None,
        standing: None,
        at_risk_for: Some(NOW + 86_400),
        lapsed_for: None,
        escalated: Some(("k1".into(), 2)),
    };
    let account = AccountState {
        auth_failing: true,
        last_error: Some("token expired".into()),
    };
    let token = StoredToken {
        access_token: "AT2".into(),
        refresh_token: Some("RT2".into()),
        expires_at: Some(NOW + 7_776_000),
        lifetime: Some(7_776_000),
        rotated_at: NOW,
        grant: "g1".into(),
    };
    {
        let l = B::open(&place).await;
        assert_eq!(
            l.check_state("keep", "a0").await.unwrap(),
            CheckState::default()
        );
        assert_eq!(
            l.account_state("a0").await.unwrap(),
            AccountState::default()
        );
        assert_eq!(l.stored_token("a0").await.unwrap(), None);
        l.put_check_state("keep", "a0", &check).await.unwrap();
        l.put_account_state("a0", &account).await.unwrap();
        l.put_token("a0", &token).await.unwrap();
        l.durable().await.unwrap();
    }
    let l = B::open(&place).await;
    assert_eq!(l.check_state("keep", "a0").await.unwrap(), check);
    assert_eq!(
        l.check_state("other", "a0").await.unwrap(),
        CheckState::default()
    );
    assert_eq!(l.account_state("a0").await.unwrap(), account);
    assert_eq!(l.stored_token("a0").await.unwrap(), Some(token));
    assert_eq!(l.stored_token("a1").await.unwrap(), None);
}

pub(crate) async fn kv_values_expire_count_and_keep_to_the_quota<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    let room = KvQuota::of_bytes(1 << 20);
    let v = serde_json::json!({"deep": [1, 2]});
    l.kv_set("p", "k", v.clone(), Some(60), NOW, room)
        .await
        .unwrap();
    assert_eq!(l.kv_get("p", "k", NOW).await.unwrap(), Some(v));
    assert_eq!(
        l.kv_get("other", "k", NOW).await.unwrap(),
        None,
        "per plugin"
    );
    assert_eq!(l.kv_ttl("p", "k", NOW + 10).await.unwrap(), Ttl::Left(50));
    assert_eq!(l.kv_get("p", "k", NOW + 60).await.unwrap(), None, "expired");
    // A counter's ttl is set when it is created, not by each bump.
    assert_eq!(
        l.kv_incr("p", "n", 5, Some(100), NOW, room).await.unwrap(),
        5
    );
    assert_eq!(
        l.kv_incr("p", "n", 2, Some(100), NOW + 50, room)
            .await
            .unwrap(),
        7
    );
    assert_eq!(l.kv_ttl("p", "n", NOW + 50).await.unwrap(), Ttl::Left(50));
    assert_eq!(
        l.kv_incr("p", "n", 1, None, NOW + 100, room).await.unwrap(),
        1
    );
    l.kv_set("p", "s", "text".into(), None, NOW, room)
        .await
        .unwrap();
    assert_eq!(l.kv_ttl("p", "s", NOW).await.unwrap(), Ttl::Forever);
    assert!(matches!(
        l.kv_incr("p", "s", 1, None, NOW, room).await,
        Err(KvError::NotAnInteger { .. })
    ));
    assert!(l.kv_del("p", "s", NOW).await.unwrap());
    assert!(!l.kv_del("p", "s", NOW).await.unwrap());
    // The quota counts what a plugin keeps.
    let small = KvQuota::of_bytes(1000);
    let big = serde_json::Value::String("x".repeat(600));
    l.kv_set("q", "a", big.clone(), None, NOW, small)
        .await
        .unwrap();
    assert!(matches!(
        l.kv_set("q", "b", big, None, NOW, small).await,
        Err(KvError::Quota { .. })
    ));
}

/// The counts by state agree with the orders themselves after each kind of
/// write, a retry under the same key, and a reopen with recovery.
pub(crate) async fn counts_by_state_follow_every_write_and_a_reopen<B: Backend>() {
    async fn agree(l: &impl Store, expect: &[(OrderState, usize)]) {
        let counted = l.count_by_state().await.unwrap();
        let mut scanned: std::collections::BTreeMap<OrderState, usize> =
            OrderState::ALL.iter().map(|s| (*s, 0)).collect();
        for o in l.orders(None).await.unwrap() {
            *scanned.entry(o.state).or_default() += 1;
        }
        assert_eq!(counted, scanned, "the counts and the orders disagree");
        for (state, n) in expect {
            assert_eq!(counted[state], *n, "{state:?} in {counted:?}");
        }
    }
    // Three holds at once would pass the suite's daily cap.
    fn unbudgeted(key: &str) -> PlanRequest {
        PlanRequest {
            budget: Budget::default(),
            ..request(key)
        }
    }
    let place = B::place().await;
    {
        let l = B::open(&place).await;
        agree(&l, &[(OrderState::Planned, 0)]).await;
        pending(&l, "f", None, None).await;
        l.settle("f", NOW, not_paid("callback: failed"))
            .await
            .unwrap();
        l.plan(&unbudgeted("p"), NOW).await.unwrap().unwrap();
        l.plan(&unbudgeted("s"), NOW).await.unwrap().unwrap();
        l.mark_sent("s", NOW).await.unwrap();
        agree(
            &l,
            &[
                (OrderState::Planned, 1),
                (OrderState::Sent, 1),
                (OrderState::Failed, 1),
            ],
        )
        .await;
        // A retry under the same key moves the order, it adds none.
        l.plan(&unbudgeted("f"), NOW + 1).await.unwrap().unwrap();
        agree(&l, &[(OrderState::Planned, 2), (OrderState::Failed, 0)]).await;
        l.durable().await.unwrap();
    }
    let l = B::open(&place).await;
    agree(&l, &[(OrderState::Planned, 2), (OrderState::Sent, 1)]).await;
    l.recover(NOW + 10).await.unwrap();
    agree(
        &l,
        &[
            (OrderState::Planned, 0),
            (OrderState::Sent, 0),
            (OrderState::Unknown, 1),
            (OrderState::Failed, 2),
        ],
    )
    .await;
}

/// Budgets and the indexes (an account's orders, vendor order ids) agree
/// with what a reopen finds after every kind of write that moves money: a
/// hold, a charge below the held price, a pending charge, a refund, a
/// retry whose earlier attempt is billed late, a refuted payment, a vendor
/// id bound by a callback, and a plan left open across the reopen.
pub(crate) async fn budgets_and_indexes_follow_every_write_and_a_reopen<B: Backend>() {
    #[derive(Debug, PartialEq)]
    struct Seen {
        day: Spend,
        month: Spend,
        keys: Vec<Vec<String>>,
        vendor: Vec<Option<VendorOrder>>,
    }
    async fn seen(l: &impl Store) -> Seen {
        let mut keys = Vec::new();
        for account in ["acct-a", "acct-b", "acct-c", "acct-d", "acct-e", "nobody"] {
            let mut k: Vec<String> = l
                .orders_of(account)
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect();
            k.sort();
            keys.push(k);
        }
        let mut vendor = Vec::new();
        for id in ["VA", "VB", "VC1", "VC2", "VD", "VX"] {
            vendor.push(l.attempt_of_vendor_order("wapi", id).await.unwrap());
        }
        Seen {
            day: l.spend("keep", "2026-11-21").await.unwrap(),
            month: l.spend("keep", "2026-11").await.unwrap(),
            keys,
            vendor,
        }
    }
    let unbudgeted = |key: &str| PlanRequest {
        budget: Budget::default(),
        ..request(key)
    };
    let place = B::place().await;
    let before = {
        let l = B::open(&place).await;
        // a: paid at once, below the held 2000.
        l.plan(&unbudgeted("a"), NOW).await.unwrap().unwrap();
        l.mark_sent("a", NOW).await.unwrap();
        paid_reply(&l, "a", NOW, Some(Fen(1500)), Some("VA"), NOW + 10).await;
        // b: pending at 1800, then refused by its callback: all back.
        pending(&l, "b", Some(Fen(1800)), Some("VB".into())).await;
        l.settle("b", NOW, not_paid("callback: failed"))
            .await
            .unwrap();
        // c: attempt 1 refused, retried; attempt 2 pending at 1700;
        // attempt 1 then billed after all (a late callback) at 1600.
        pending(&l, "c", Some(Fen(1900)), Some("VC1".into())).await;
        l.settle("c", NOW, not_paid("callback: failed"))
            .await
            .unwrap();
        l.plan(&unbudgeted("c"), NOW + 1).await.unwrap().unwrap();
        l.mark_sent("c", NOW + 1).await.unwrap();
        l.record_attempt(
            "c",
            NOW + 1,
            OutcomeClass::Pending,
            "10023",
            AttemptResult::Pending {
                price: Some(Fen(1700)),
                vendor_orderid: Some("VC2".into()),
            },
        )
        .await
        .unwrap();
        l.settle_attempt("c", Some(1), NOW + 2, paid(Some(Fen(1600))))
            .await
            .unwrap();
        // d: paid, never shown, refuted by an operator: refunded.
        l.plan(&unbudgeted("d"), NOW).await.unwrap().unwrap();
        l.mark_sent("d", NOW).await.unwrap();
        paid_reply(&l, "d", NOW, Some(Fen(1400)), None, NOW + 10).await;
        l.bind_vendor_order("d", "VD").await.unwrap();
        l.set_verification("d", Verification::Unverified { at: NOW + 20 })
            .await
            .unwrap();
        assert_eq!(l.count_unverified().await.unwrap(), 1);
        l.refute_unverified("d", NOW + 21, "never delivered")
            .await
            .unwrap();
        assert_eq!(l.count_unverified().await.unwrap(), 0);
        // e: planned, its 2000 held, left open across the reopen.
        l.plan(&unbudgeted("e"), NOW).await.unwrap().unwrap();
        let before = seen(&l).await;
        l.durable().await.unwrap();
        before
    };
    // a 1500 + c 1600 + 1700 settled; e's 2000 held.
    let expect = Spend {
        reserved: Fen(2000),
        settled: Fen(4800),
    };
    assert_eq!((before.day, before.month), (expect, expect));
    assert_eq!(before.keys[0], ["a"]);
    assert_eq!(before.keys[5], Vec::<String>::new());
    assert_eq!(
        before.vendor,
        [
            Some(VendorOrder {
                key: "a".into(),
                attempt: Some(1)
            }),
            Some(VendorOrder {
                key: "b".into(),
                attempt: Some(1)
            }),
            Some(VendorOrder {
                key: "c".into(),
                attempt: Some(1)
            }),
            Some(VendorOrder {
                key: "c".into(),
                attempt: Some(2)
            }),
            Some(VendorOrder {
                key: "d".into(),
                attempt: Some(1)
            }),
            None,
        ]
    );
    let l = B::open(&place).await;
    assert_eq!(seen(&l).await, before, "a reopen finds the same");
    // The open plan never left: recovery frees its hold, and only that.
    l.recover(NOW + 30).await.unwrap();
    let after = seen(&l).await;
    assert_eq!(
        (after.day.reserved, after.day.settled),
        (Fen::ZERO, Fen(4800))
    );
}
