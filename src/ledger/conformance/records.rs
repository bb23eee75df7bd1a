//! What else the port keeps: finding orders by prefix, check and account
//! state, rotated tokens, holds, and plugins' `vipd.kv`.

use super::*;
use crate::ledger::kv::{KvError, KvQuota};

pub async fn an_order_is_found_by_a_unique_prefix<B: Backend>() {
    let (_place, l) = fresh::<B>();
    l.plan(&request("abc1"), NOW).await.unwrap().unwrap();
    l.plan(&request("abc2"), NOW).await.unwrap().unwrap();
    assert_eq!(l.find("abc1").await.unwrap().key, "abc1");
    assert!(matches!(l.find("abc").await, Err(LedgerError::NotFound(_))));
    assert!(matches!(l.find("zzz").await, Err(LedgerError::NotFound(_))));
    // A fresh store holds nothing back.
    assert_eq!(l.held("acct-abc1").await.unwrap(), None);
    assert_eq!(l.release(None).await.unwrap(), None);
}

pub async fn check_account_and_token_records_read_back<B: Backend>() {
    let place = B::place();
    let check = CheckState {
        checked_at: Some(NOW),
        observed_end: Some(NOW + 86_400),
        decision: "renew".into(),
        veto: None,
        standing: None,
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
        let l = B::open(&place);
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
    let l = B::open(&place);
    assert_eq!(l.check_state("keep", "a0").await.unwrap(), check);
    assert_eq!(
        l.check_state("other", "a0").await.unwrap(),
        CheckState::default()
    );
    assert_eq!(l.account_state("a0").await.unwrap(), account);
    assert_eq!(l.stored_token("a0").await.unwrap(), Some(token));
    assert_eq!(l.stored_token("a1").await.unwrap(), None);
}

pub async fn kv_values_expire_count_and_keep_to_the_quota<B: Backend>() {
    let (_place, l) = fresh::<B>();
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
    assert_eq!(l.kv_ttl("p", "k", NOW + 10).await.unwrap(), Some(Some(50)));
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
    assert_eq!(l.kv_ttl("p", "n", NOW + 50).await.unwrap(), Some(Some(50)));
    assert_eq!(
        l.kv_incr("p", "n", 1, None, NOW + 100, room).await.unwrap(),
        1
    );
    l.kv_set("p", "s", "text".into(), None, NOW, room)
        .await
        .unwrap();
    assert_eq!(l.kv_ttl("p", "s", NOW).await.unwrap(), Some(None));
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
pub async fn counts_by_state_follow_every_write_and_a_reopen<B: Backend>() {
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
    let place = B::place();
    {
        let l = B::open(&place);
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
    let l = B::open(&place);
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
