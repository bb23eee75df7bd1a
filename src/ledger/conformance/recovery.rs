//! Restarts, the cross-rule guard and the event log.

use super::*;

pub(crate) async fn restart_turns_sent_into_unknown_and_planned_into_retryable<B: Backend>() {
    let place = B::place().await;
    {
        let l = B::open(&place).await;
        l.plan(&request("sent"), NOW).await.unwrap().unwrap();
        l.mark_sent("sent", NOW).await.unwrap();
        l.plan(&request("planned"), NOW).await.unwrap().unwrap();
        l.durable().await.unwrap();
    }
    let l = B::open(&place).await;
    let changed = l.recover(NOW + 10).await.unwrap();
    assert_eq!(changed.len(), 2);
    let sent = l.get("sent").await.unwrap().unwrap();
    assert_eq!(sent.state, OrderState::Unknown);
    assert!(sent.hold.is_some(), "possibly paid: the money stays held");
    let planned = l.get("planned").await.unwrap().unwrap();
    assert_eq!(
        (planned.state, planned.retry_at),
        (OrderState::Failed, Some(NOW + 10))
    );
    assert!(
        l.plan(&request("sent"), NOW + 20).await.unwrap().is_err(),
        "unknown is never re-sent"
    );
    assert!(l.plan(&request("planned"), NOW + 20).await.unwrap().is_ok());
}

pub(crate) async fn another_rule_cannot_pay_while_an_order_for_the_membership_is_unsettled<
    B: Backend,
>() {
    let (_place, l) = fresh::<B>().await;
    pending(&l, "rule-a-key", None, None).await;
    let mut other_rule = request("rule-b-key");
    other_rule.rule = "manual".into();
    other_rule.account = "acct-rule-a-key".into();
    let refused = l.plan(&other_rule, NOW).await.unwrap().unwrap_err();
    assert!(
        matches!(&refused, Refusal::Exists { state: OrderState::Pending, why } if why.contains("rule-a-key")),
        "{refused}"
    );
    // Paid but not yet showing still blocks; verified releases.
    l.settle(
        "rule-a-key",
        NOW,
        Settlement::Paid {
            price: None,
            verify_deadline: NOW + 60,
            why: "cb".into(),
        },
    )
    .await
    .unwrap();
    assert!(l.plan(&other_rule, NOW).await.unwrap().is_err());
    l.set_verification(
        "rule-a-key",
        Verification::Verified {
            at: NOW,
            new_end: NOW + 30 * 86_400,
        },
    )
    .await
    .unwrap();
    assert!(l.plan(&other_rule, NOW).await.unwrap().is_ok());
    l.mark_sent("rule-b-key", NOW).await.unwrap();
    paid_reply(&l, "rule-b-key", NOW, None, None, NOW).await;
    let mut third = request("third-key");
    third.account = "acct-rule-a-key".into();
    third.budget = Budget::default();
    // Unverified (paid, never showed) blocks too, until an operator
    // refutes it.
    l.set_verification("rule-b-key", Verification::Unverified { at: NOW })
        .await
        .unwrap();
    assert!(l.plan(&third, NOW).await.unwrap().is_err());
    let refuted = l
        .refute_unverified("rule-b-key", NOW, "operator: not delivered")
        .await
        .unwrap();
    assert_eq!((refuted.state, refuted.spent), (OrderState::Failed, Fen(0)));
    assert!(
        l.refute_unverified("rule-b-key", NOW, "again")
            .await
            .is_err()
    );
    assert!(l.plan(&third, NOW).await.unwrap().is_ok());
    // Another membership was never blocked.
    let mut svip = request("svip-key");
    svip.account = "acct-rule-a-key".into();
    svip.membership = Membership::QqSvip;
    svip.budget = Budget::default();
    assert!(l.plan(&svip, NOW).await.unwrap().is_ok());
}

pub(crate) async fn events_keep_order<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    for i in 0..5 {
        l.record_event(&event(NOW + i, format!("e{i}")))
            .await
            .unwrap();
    }
    let last: Vec<String> = l
        .events(3)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(last, ["e2", "e3", "e4"]);
}

pub(crate) async fn pruning_drops_old_events_only<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    let order = l.plan(&request("k1"), NOW - 5000).await.unwrap().unwrap();
    // 3,000 events 50 minutes apart, then a few recent ones: more than one
    // pruning batch.
    for i in 0..3000 {
        l.record_event(&EventRecord {
            key: Some(order.key.clone()),
            ..event(NOW - 10_000_000 + i * 3000, "old")
        })
        .await
        .unwrap();
    }
    for i in 0..3 {
        l.record_event(&event(NOW - 10 + i, format!("new{i}")))
            .await
            .unwrap();
    }
    assert_eq!(l.prune_events(NOW - 100).await.unwrap(), 3000);
    let kept: Vec<String> = l
        .events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kept, ["new0", "new1", "new2"]);
    assert_eq!(l.prune_events(NOW - 100).await.unwrap(), 0);
    // The order the old events were about is still there.
    assert_eq!(l.get(&order.key).await.unwrap().unwrap().key, order.key);
}

/// A hold refuses every new order, across a reopen, until released: one
/// account at a time, then entirely. A new hold replaces the old one and
/// holds released accounts again.
pub(crate) async fn a_hold_refuses_new_orders_until_released<B: Backend>() {
    let place = B::place().await;
    {
        let l = B::open(&place).await;
        l.hold_all(NOW, "copied from a damaged store")
            .await
            .unwrap();
        l.release(Some("acct-a")).await.unwrap();
        l.hold_all(NOW + 5, "restored from a backup").await.unwrap();
    }
    let l = B::open(&place).await;
    let why = l.held("acct-a").await.unwrap().expect("held");
    assert!(why.contains("restored from a backup"), "{why}");
    assert!(matches!(
        l.plan(&request("a"), NOW).await.unwrap(),
        Err(Refusal::Held { .. })
    ));
    let left = l
        .release(Some("acct-a"))
        .await
        .unwrap()
        .expect("still held");
    assert!(left.released.contains("acct-a"));
    l.plan(&request("a"), NOW).await.unwrap().unwrap();
    assert!(matches!(
        l.plan(&request("b"), NOW).await.unwrap(),
        Err(Refusal::Held { .. })
    ));
    assert_eq!(l.release(None).await.unwrap(), None);
    l.plan(&request("b"), NOW).await.unwrap().unwrap();
    assert_eq!(l.held("acct-c").await.unwrap(), None);
}

/// A plan under no cap (which a store may write in one statement when
/// nothing is in its way) meets every refusal a capped one does: the hold
/// (but not for an account released from it), a key planned already,
/// another unsettled order of the account and membership.
pub(crate) async fn plans_under_no_cap_meet_the_same_refusals<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    let free = |key: &str| PlanRequest {
        budget: Budget::default(),
        ..request(key)
    };
    l.hold_all(NOW, "restored from a backup").await.unwrap();
    let held = l.plan(&free("a"), NOW).await.unwrap();
    assert!(matches!(held, Err(Refusal::Held { .. })), "{held:?}");
    l.release(Some("acct-a")).await.unwrap();
    l.plan(&free("a"), NOW).await.unwrap().unwrap();
    let held = l.plan(&free("b"), NOW).await.unwrap();
    assert!(matches!(held, Err(Refusal::Held { .. })), "{held:?}");
    l.release(None).await.unwrap();
    let b = l.plan(&free("b"), NOW).await.unwrap().unwrap();
    assert_eq!((b.state, b.attempts), (OrderState::Planned, 1));
    let again = l.plan(&free("b"), NOW).await.unwrap().unwrap_err();
    assert!(
        matches!(
            again,
            Refusal::Exists {
                state: OrderState::Planned,
                ..
            }
        ),
        "{again}"
    );
    let other = PlanRequest {
        account: "acct-b".into(),
        ..free("b-by-another-rule")
    };
    let refused = l.plan(&other, NOW).await.unwrap().unwrap_err();
    assert!(
        matches!(&refused, Refusal::Exists { why, .. } if why.contains("acct-b")),
        "{refused}"
    );
    assert_eq!(l.orders_of("acct-b").await.unwrap().len(), 1);
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap().reserved,
        Fen(4000)
    );
}
