//! Orders that wait for a person: planned holding their money, answered
//! once, at the price the approver saw, and kept across a restart.

use super::*;

const DAY: &str = "2026-11-21";

/// A request whose price (20.00) is above its rule's `approve_above`.
fn above(key: &str) -> PlanRequest {
    let mut r = request(key);
    r.budget.approve_above = Some(Fen(1500));
    r
}

fn approve(price: Fen) -> Answer {
    Answer::Approve {
        by: "alice".into(),
        why: "checked the invoice".into(),
        price,
    }
}

fn refused(e: LedgerError) -> String {
    match e {
        LedgerError::Refused { why, .. } => why,
        other => panic!("expected a refusal, got {other}"),
    }
}

async fn reserved(l: &impl Store) -> Fen {
    l.spend("keep", DAY).await.unwrap().reserved
}

pub(crate) async fn a_renewal_above_approve_above_waits_holding_its_money_until_approved<
    B: Backend,
>() {
    let (_place, l) = fresh::<B>().await;
    let o = l.plan(&above("k1"), NOW).await.unwrap().unwrap();
    assert_eq!((o.state, o.attempts), (OrderState::AwaitingApproval, 1));
    assert!(
        o.last_why().contains("above approve_above"),
        "{}",
        o.last_why()
    );
    assert_eq!(reserved(&l).await, Fen(2000), "its money is held");
    let again = l.plan(&above("k1"), NOW + 60).await.unwrap().unwrap_err();
    assert!(
        matches!(
            again,
            Refusal::Exists {
                state: OrderState::AwaitingApproval,
                ..
            }
        ),
        "{again}"
    );
    assert!(
        l.mark_sent("k1", NOW).await.is_err(),
        "nothing awaiting approval is sent"
    );
    let approved = l
        .answer("k1", NOW + 120, &approve(Fen(2000)))
        .await
        .unwrap();
    assert_eq!(approved.state, OrderState::AwaitingApproval);
    assert_eq!(
        approved.approval.as_ref().map(|a| a.by.as_str()),
        Some("alice")
    );
    // The next plan under the key pays it, in the same attempt, counted once.
    let planned = l.plan(&above("k1"), NOW + 180).await.unwrap().unwrap();
    assert_eq!((planned.state, planned.attempts), (OrderState::Planned, 1));
    assert!(
        planned.last_why().contains("approved by alice"),
        "{}",
        planned.last_why()
    );
    assert_eq!(reserved(&l).await, Fen(2000));
    l.mark_sent("k1", NOW + 181).await.unwrap();
}

pub(crate) async fn an_answer_is_given_once_and_a_declined_order_is_never_paid<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    l.plan(&above("k1"), NOW).await.unwrap().unwrap();
    l.answer("k1", NOW, &approve(Fen(2000))).await.unwrap();
    let twice = refused(l.answer("k1", NOW, &approve(Fen(2000))).await.unwrap_err());
    assert!(twice.contains("approved already, by alice"), "{twice}");
    let decline = Answer::Decline {
        by: "bob".into(),
        why: "too dear".into(),
    };
    let late = refused(l.answer("k1", NOW, &decline).await.unwrap_err());
    assert!(late.contains("approved already"), "{late}");

    l.plan(&above("k2"), NOW).await.unwrap().unwrap();
    assert_eq!(reserved(&l).await, Fen(4000));
    let declined = l.answer("k2", NOW, &decline).await.unwrap();
    assert_eq!(declined.state, OrderState::Failed);
    assert_eq!(declined.last_why(), "declined by bob: too dear");
    assert_eq!(reserved(&l).await, Fen(2000), "its money is back");
    let approve_declined = refused(l.answer("k2", NOW, &approve(Fen(2000))).await.unwrap_err());
    assert!(
        approve_declined.contains("does not await approval"),
        "{approve_declined}"
    );
    let replanned = l.plan(&above("k2"), NOW + 86_400).await.unwrap();
    assert!(
        replanned.is_err(),
        "a declined period is never planned again"
    );
}

pub(crate) async fn an_approval_is_for_the_price_its_approver_saw<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    l.plan(&above("k1"), NOW).await.unwrap().unwrap();
    let stale = refused(l.answer("k1", NOW, &approve(Fen(2500))).await.unwrap_err());
    assert!(stale.contains("changed from 20.00 to 25.00"), "{stale}");
    // The next plan under the key prices it anew, still awaiting.
    let mut dearer = above("k1");
    dearer.max_price = Fen(2500);
    let repriced = l.plan(&dearer, NOW + 60).await.unwrap().unwrap();
    assert_eq!(
        (repriced.state, repriced.attempts, repriced.max_price),
        (OrderState::AwaitingApproval, 1, Fen(2500))
    );
    assert_eq!(reserved(&l).await, Fen(2500), "held once, at the new price");
    l.answer("k1", NOW + 120, &approve(Fen(2500)))
        .await
        .unwrap();
    // An approval at 25.00 does not pay 30.00.
    let mut dearest = above("k1");
    dearest.max_price = Fen(3000);
    let again = l.plan(&dearest, NOW + 180).await.unwrap().unwrap();
    assert_eq!(again.state, OrderState::AwaitingApproval);
    assert_eq!(again.approval, None);
}

pub(crate) async fn a_budget_running_low_asks_for_approval_without_counting_the_order_twice<
    B: Backend,
>() {
    let (_place, l) = fresh::<B>().await;
    let low = |key: &str| {
        let mut r = request(key);
        r.account = "acct-shared".into();
        r.membership = if key == "k1" {
            Membership::QqVip
        } else {
            Membership::QqSvip
        };
        r.budget.approve_when_left_below = Some(Fen(1500));
        r
    };
    let first = l.plan(&low("k1"), NOW).await.unwrap().unwrap();
    assert_eq!(first.state, OrderState::Planned, "30.00 of 50.00 left");
    let second = l.plan(&low("k2"), NOW).await.unwrap().unwrap();
    assert_eq!(second.state, OrderState::AwaitingApproval);
    assert!(
        second
            .last_why()
            .contains("would leave 10.00 of the 2026-11-21 cap of 50.00"),
        "{}",
        second.last_why()
    );
    l.answer("k2", NOW, &approve(Fen(2000))).await.unwrap();
    let paid = l.plan(&low("k2"), NOW + 60).await.unwrap().unwrap();
    assert_eq!(
        paid.state,
        OrderState::Planned,
        "its own hold is not counted against it"
    );
    assert_eq!(reserved(&l).await, Fen(4000));
}

pub(crate) async fn an_order_awaiting_approval_survives_a_restart_and_expires_once<B: Backend>() {
    let place = B::place().await;
    {
        let l = B::open(&place).await;
        l.plan(&above("k1"), NOW).await.unwrap().unwrap();
        l.durable().await.unwrap();
    }
    let l = B::open(&place).await;
    assert!(
        l.recover(NOW + 10).await.unwrap().is_empty(),
        "nothing was in flight"
    );
    let o = l.get("k1").await.unwrap().unwrap();
    assert_eq!(o.state, OrderState::AwaitingApproval);
    assert_eq!(reserved(&l).await, Fen(2000));
    let expire = Answer::Expire {
        why: "not approved before the membership ended".into(),
    };
    let expired = l.answer("k1", NOW + 20, &expire).await.unwrap();
    assert_eq!(expired.state, OrderState::Failed);
    assert_eq!(reserved(&l).await, Fen(0));
    let late = refused(
        l.answer("k1", NOW + 30, &approve(Fen(2000)))
            .await
            .unwrap_err(),
    );
    assert!(
        late.contains("not approved before the membership ended"),
        "{late}"
    );
    assert!(
        refused(l.answer("k1", NOW + 30, &expire).await.unwrap_err()).contains("does not await")
    );
}
