//! The suite's attempt invariants: superseded attempts, a second billed
//! attempt, a late success, a contradiction.

use super::*;

pub(crate) async fn a_redelivered_failure_for_an_earlier_attempt_changes_nothing<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    second_attempt_pending(&l).await;
    assert_eq!(attempt_of(&l, "V1").await, ("k1".to_owned(), Some(1)));
    assert_eq!(attempt_of(&l, "V2").await, ("k1".to_owned(), Some(2)));
    let before = l.get("k1").await.unwrap().unwrap();
    // The vendor delivers attempt 1's `failed` again (lost ack, or replay).
    let (key, n) = attempt_of(&l, "V1").await;
    let s = l
        .settle_attempt(&key, n, NOW + 5, not_paid("callback: failed"))
        .await
        .unwrap();
    assert!(matches!(s, Settled::Repeated), "{s:?}");
    let after = l.get("k1").await.unwrap().unwrap();
    assert_eq!(after, before, "attempt 2 stays pending, nothing recorded");
    assert_eq!(after.state, OrderState::Pending);
    // The real result of attempt 2 still lands, and is counted.
    let (key, n) = attempt_of(&l, "V2").await;
    let s = l
        .settle_attempt(&key, n, NOW + 6, paid(Some(Fen(1400))))
        .await
        .unwrap();
    let (order, conflict) = changed(s);
    assert_eq!(conflict, None);
    assert_eq!(
        (order.state, order.spent),
        (OrderState::Succeeded, Fen(1400))
    );
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap().used(),
        Fen(1400)
    );
    // And a later replay of attempt 1's failure cannot undo it.
    let s = l
        .settle_attempt("k1", Some(1), NOW + 7, not_paid("callback: failed"))
        .await
        .unwrap();
    assert!(matches!(s, Settled::Repeated), "{s:?}");
    assert_eq!(
        l.get("k1").await.unwrap().unwrap().state,
        OrderState::Succeeded
    );
}

pub(crate) async fn a_reply_that_bills_a_second_attempt_is_flagged<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    pending(&l, "k1", Some(Fen(1500)), Some("V1".into())).await;
    l.settle_attempt("k1", Some(1), NOW, not_paid("callback: failed"))
        .await
        .unwrap();
    l.plan(&request("k1"), NOW).await.unwrap().unwrap();
    l.mark_sent("k1", NOW).await.unwrap();
    // While attempt 2 is on the wire, the vendor says attempt 1 was billed.
    l.settle_attempt("k1", Some(1), NOW + 1, paid(Some(Fen(1500))))
        .await
        .unwrap();
    // Attempt 2's reply is 10000: the same period, paid again.
    let r = paid_reply(&l, "k1", NOW + 2, Some(Fen(1500)), Some("V2"), NOW + 3600).await;
    assert_eq!(
        r.conflict.as_deref(),
        Some("the period is billed twice: attempt 2 and attempt 1 are both paid")
    );
    assert_eq!(r.order.spent, Fen(3000));
    // One paid attempt is no conflict.
    let (_place, l) = fresh::<B>().await;
    l.plan(&request("k1"), NOW).await.unwrap().unwrap();
    l.mark_sent("k1", NOW).await.unwrap();
    let r = paid_reply(&l, "k1", NOW, None, None, NOW).await;
    assert_eq!(r.conflict, None);
}

pub(crate) async fn a_success_for_an_attempt_recorded_failed_is_counted_and_flagged<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    second_attempt_pending(&l).await;
    // The vendor says attempt 1 was billed after all.
    let s = l
        .settle_attempt("k1", Some(1), NOW + 5, paid(Some(Fen(1500))))
        .await
        .unwrap();
    let (order, conflict) = changed(s);
    assert!(conflict.unwrap().contains("not paid"));
    assert_eq!(order.state, OrderState::Succeeded, "the period is paid");
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap().used(),
        Fen(3000),
        "both billed attempts count: attempt 2 is pending and billed too"
    );
    // Attempt 2 is billed as well: a second payment, said out loud.
    let s = l
        .settle_attempt("k1", Some(2), NOW + 6, paid(None))
        .await
        .unwrap();
    let (order, conflict) = changed(s);
    assert!(conflict.unwrap().contains("billed twice"));
    assert_eq!(order.spent, Fen(3000));
    assert_eq!(order.paid_attempts(), [1, 2]);
    // Attempt 2 refunded instead: its money goes back, attempt 1's stays.
    let (_place2, l2) = fresh::<B>().await;
    second_attempt_pending(&l2).await;
    l2.settle_attempt("k1", Some(1), NOW + 5, paid(Some(Fen(1500))))
        .await
        .unwrap();
    let s = l2
        .settle_attempt("k1", Some(2), NOW + 6, not_paid("callback: failed"))
        .await
        .unwrap();
    let (order, _) = changed(s);
    assert_eq!(
        (order.state, order.spent),
        (OrderState::Succeeded, Fen(1500))
    );
    assert_eq!(
        l2.spend("keep", "2026-11-21").await.unwrap().used(),
        Fen(1500)
    );
}

pub(crate) async fn a_failure_for_a_paid_attempt_is_a_contradiction<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    pending(&l, "k1", Some(Fen(1500)), Some("V1".into())).await;
    l.settle_attempt("k1", Some(1), NOW, paid(None))
        .await
        .unwrap();
    let before = l.get("k1").await.unwrap().unwrap();
    let s = l
        .settle_attempt("k1", Some(1), NOW + 1, not_paid("callback: failed"))
        .await
        .unwrap();
    assert!(matches!(s, Settled::Contradicted { .. }), "{s:?}");
    assert_eq!(l.get("k1").await.unwrap().unwrap(), before);
    let s = l
        .settle_attempt("k1", Some(7), NOW + 1, paid(None))
        .await
        .unwrap();
    assert!(
        matches!(s, Settled::Contradicted { .. }),
        "no attempt 7: {s:?}"
    );
}
