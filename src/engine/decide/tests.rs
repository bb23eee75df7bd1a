//! The decisions as tables: every case by name, with what it must be.

use super::*;
use crate::ledger::{Order, Verification};

const NOW: i64 = 1_795_252_469;
const DAY: i64 = 86_400;

fn order(state: OrderState, attempts: u32, retry_at: Option<i64>) -> Order {
    Order {
        key: "k".into(),
        rule: "r".into(),
        account: "a".into(),
        membership: crate::upstream::Membership::QqVip,
        observed_end: Some(NOW + DAY),
        product: "p".into(),
        provider: "w".into(),
        state,
        attempts,
        max_price: Fen(2000),
        price: None,
        vendor_orderid: None,
        hold: None,
        spent: Fen(0),
        charged_to: None,
        retry_at,
        last_outcome: None,
        verification: Verification::None,
        created_at: NOW,
        updated_at: NOW,
        history: vec![],
        attempt_log: vec![],
        approval: None,
    }
}

fn facts<'a>(end: Option<i64>, existing: Option<&'a Order>) -> Facts<'a> {
    Facts {
        now: NOW,
        end,
        renew_before: Duration::from_secs(3 * DAY as u64),
        when_lapsed: WhenLapsed::Renew,
        max_attempts: 3,
        existing,
        admission: Admission::Open,
        budget: BudgetView::default(),
        max_price: Fen(2000),
        held: None,
    }
}

/// A manual order asked `ahead` has its window one period (30 days)
/// wider: due with a month left, not with two; the other guards hold.
#[test]
fn a_manual_order_ahead_is_due_one_period_early_under_the_same_guards() {
    let ahead = |end, existing| Facts {
        renew_before: Duration::from_secs(33 * DAY as u64),
        ..facts(end, existing)
    };
    match decide(&ahead(Some(NOW + 30 * DAY), None)) {
        Decision::Renew { why } => assert_eq!(why, "ends in 30d 0h (renew_before 33d)"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decide(&ahead(Some(NOW + 34 * DAY), None)),
        Decision::NotDue { due_at } if due_at == NOW + DAY
    ));
    assert!(matches!(
        decide(&facts(Some(NOW + 30 * DAY), None)),
        Decision::NotDue { .. }
    ));
    let paid = order(OrderState::Succeeded, 1, None);
    assert!(matches!(
        decide(&ahead(Some(NOW + 30 * DAY), Some(&paid))),
        Decision::Waiting { .. }
    ));
    let capped = Facts {
        budget: BudgetView {
            per_day: Some(Fen(1000)),
            ..BudgetView::default()
        },
        ..ahead(None, None)
    };
    assert!(matches!(decide(&capped), Decision::BudgetExceeded { .. }));
}

/// A case: name, inputs, and what the decision must look like.
type Case<'a> = (&'static str, Facts<'a>, fn(&Decision) -> bool);

#[test]
fn decision_table() {
    let failed_retry_now = order(OrderState::Failed, 1, Some(NOW - 1));
    let failed_retry_later = order(OrderState::Failed, 1, Some(NOW + 60));
    let failed_max = order(OrderState::Failed, 3, Some(NOW - 1));
    let failed_final = order(OrderState::Failed, 1, None);
    let succeeded = order(OrderState::Succeeded, 1, None);
    let unknown = order(OrderState::Unknown, 1, None);
    let pending = order(OrderState::Pending, 1, None);
    let mut skip_lapsed = facts(Some(NOW - DAY), None);
    skip_lapsed.when_lapsed = WhenLapsed::Skip;
    let mut skip_none = facts(None, None);
    skip_none.when_lapsed = WhenLapsed::Skip;
    let mut paused = facts(Some(NOW + DAY), None);
    paused.admission = Admission::Closed {
        why: "10022 balance".into(),
    };
    let mut probing = facts(Some(NOW + DAY), None);
    probing.admission = Admission::Probe;
    let mut over_day = facts(Some(NOW + DAY), None);
    over_day.budget = BudgetView {
        per_day: Some(Fen(5000)),
        used_day: Fen(3500),
        ..Default::default()
    };
    let mut over_month = facts(Some(NOW + DAY), None);
    over_month.budget = BudgetView {
        per_month: Some(Fen(2000)),
        used_month: Fen(1),
        ..Default::default()
    };
    let mut exactly_at_cap = facts(Some(NOW + DAY), None);
    exactly_at_cap.budget = BudgetView {
        per_day: Some(Fen(4000)),
        used_day: Fen(2000),
        ..Default::default()
    };

    let cases: Vec<Case<'_>> = vec![
        (
            "not due",
            facts(Some(NOW + 10 * DAY), None),
            |d| matches!(d, Decision::NotDue { due_at } if *due_at == NOW + 7 * DAY),
        ),
        (
            "due",
            facts(Some(NOW + DAY), None),
            |d| matches!(d, Decision::Renew { why } if why.contains("ends in 1d")),
        ),
        ("due at the edge", facts(Some(NOW + 3 * DAY), None), |d| {
            matches!(d, Decision::Renew { .. })
        }),
        (
            "lapsed, renew",
            facts(Some(NOW - DAY), None),
            |d| matches!(d, Decision::Renew { why } if why.contains("lapsed")),
        ),
        (
            "no membership, renew",
            facts(None, None),
            |d| matches!(d, Decision::Renew { why } if why.contains("no membership")),
        ),
        ("lapsed, skip", skip_lapsed, |d| {
            matches!(d, Decision::Skip { .. })
        }),
        ("no membership, skip", skip_none, |d| {
            matches!(d, Decision::Skip { .. })
        }),
        (
            "already renewed",
            facts(Some(NOW + DAY), Some(&succeeded)),
            |d| {
                matches!(
                    d,
                    Decision::Waiting {
                        state: OrderState::Succeeded,
                        ..
                    }
                )
            },
        ),
        (
            "unknown blocks",
            facts(Some(NOW + DAY), Some(&unknown)),
            |d| {
                matches!(
                    d,
                    Decision::Waiting {
                        state: OrderState::Unknown,
                        ..
                    }
                )
            },
        ),
        (
            "pending waits",
            facts(Some(NOW + DAY), Some(&pending)),
            |d| {
                matches!(
                    d,
                    Decision::Waiting {
                        state: OrderState::Pending,
                        ..
                    }
                )
            },
        ),
        (
            "retry due",
            facts(Some(NOW + DAY), Some(&failed_retry_now)),
            |d| matches!(d, Decision::Renew { .. }),
        ),
        (
            "retry later",
            facts(Some(NOW + DAY), Some(&failed_retry_later)),
            |d| matches!(d, Decision::RetryLater { at } if *at == NOW + 60),
        ),
        (
            "max attempts",
            facts(Some(NOW + DAY), Some(&failed_max)),
            |d| matches!(d, Decision::GaveUp { .. }),
        ),
        (
            "not retryable",
            facts(Some(NOW + DAY), Some(&failed_final)),
            |d| matches!(d, Decision::GaveUp { .. }),
        ),
        ("provider paused", paused, |d| {
            matches!(d, Decision::ProviderPaused { .. })
        }),
        ("probe goes through", probing, |d| {
            matches!(d, Decision::Renew { .. })
        }),
        ("budget day", over_day, |d| {
            matches!(d, Decision::BudgetExceeded { period: "day", .. })
        }),
        ("budget month", over_month, |d| {
            matches!(
                d,
                Decision::BudgetExceeded {
                    period: "month",
                    ..
                }
            )
        }),
        ("budget exactly at cap is fine", exactly_at_cap, |d| {
            matches!(d, Decision::Renew { .. })
        }),
    ];
    for (name, f, ok) in cases {
        let d = decide(&f);
        assert!(ok(&d), "{name}: got {d:?}");
        assert!(!d.describe().is_empty());
    }
}

#[test]
fn outcomes_mean_what_the_spec_says() {
    use OutcomeClass::*;
    let end = Some(NOW + DAY);
    assert_eq!(
        after_attempt(Accepted, false, 1, NOW, end, 60),
        (AfterAttempt::Succeeded, GateEffect::Resume)
    );
    assert_eq!(
        after_attempt(Pending, false, 1, NOW, end, 60),
        (AfterAttempt::Pending, GateEffect::Resume)
    );
    assert_eq!(
        after_attempt(Debug, true, 1, NOW, end, 60).0,
        AfterAttempt::Succeeded
    );
    assert_eq!(
        after_attempt(Debug, false, 1, NOW, end, 60).0,
        AfterAttempt::Failed { retry_at: None }
    );
    assert_eq!(
        after_attempt(Unknown, false, 1, NOW, end, 60).0,
        AfterAttempt::Unknown
    );
    assert_eq!(
        after_attempt(Transient, false, 1, NOW, end, 60).0,
        AfterAttempt::Failed {
            retry_at: Some(NOW + 60)
        }
    );
    assert_eq!(
        after_attempt(NotSent, false, 2, NOW, end, 60).0,
        AfterAttempt::Failed {
            retry_at: Some(NOW + 120)
        }
    );
    assert_eq!(
        after_attempt(Rejected, false, 1, NOW, end, 60).0,
        AfterAttempt::Failed {
            retry_at: Some(NOW + 600)
        }
    );
    assert_eq!(
        after_attempt(Exhausted, false, 1, NOW, end, 60).1,
        GateEffect::PauseUntilProbe
    );
    assert_eq!(
        after_attempt(Config, false, 1, NOW, end, 60).1,
        GateEffect::PauseUntilReload
    );
    for class in OutcomeClass::ALL {
        let (after, _) = after_attempt(class, false, 1, NOW, end, 60);
        // Only classes that may be billed end anywhere but Failed.
        assert_eq!(
            !matches!(after, AfterAttempt::Failed { .. }),
            class.may_be_billed(),
            "{class}"
        );
    }
}

#[test]
fn backoff_is_capped_and_never_past_the_end() {
    assert_eq!(retry_time(60, 1800, 1, NOW, None), NOW + 60);
    assert_eq!(retry_time(60, 1800, 3, NOW, None), NOW + 240);
    assert_eq!(retry_time(60, 1800, 30, NOW, None), NOW + 1800);
    assert_eq!(retry_time(600, 7200, 2, NOW, Some(NOW + 300)), NOW + 300);
    assert_eq!(
        retry_time(60, 1800, 1, NOW, Some(NOW - 10)),
        NOW + 60,
        "lapsed: the end no longer bounds it"
    );
}

/// What a read says about an order, every row by hand.
#[test]
fn evidence_verdicts() {
    let waiting = Verification::Waiting {
        deadline: NOW + 100,
    };
    let none = Verification::None;
    let within = 7_200;
    let rows: [(OrderState, &Verification, bool, i64, i64, Verdict); 11] = [
        (OrderState::Pending, &none, true, NOW, NOW, Verdict::Paid),
        (OrderState::Unknown, &none, true, NOW, NOW, Verdict::Paid),
        (
            OrderState::Pending,
            &none,
            false,
            NOW - 7_200,
            NOW,
            Verdict::Nothing,
        ),
        (
            OrderState::Pending,
            &none,
            false,
            NOW - 7_201,
            NOW,
            Verdict::CallbackOverdue,
        ),
        (
            OrderState::Unknown,
            &none,
            false,
            NOW - 99_999,
            NOW,
            Verdict::Nothing,
        ),
        (
            OrderState::Succeeded,
            &waiting,
            true,
            NOW,
            NOW,
            Verdict::Verified,
        ),
        (
            OrderState::Succeeded,
            &waiting,
            false,
            NOW,
            NOW + 100,
            Verdict::Nothing,
        ),
        (
            OrderState::Succeeded,
            &waiting,
            false,
            NOW,
            NOW + 101,
            Verdict::Unverified,
        ),
        (
            OrderState::Succeeded,
            &none,
            true,
            NOW,
            NOW,
            Verdict::Nothing,
        ),
        (OrderState::Failed, &none, true, NOW, NOW, Verdict::Nothing),
        (OrderState::Sent, &none, true, NOW, NOW, Verdict::Nothing),
    ];
    for (state, v, moved, updated, now, want) in rows {
        assert_eq!(
            evidence(state, v, moved, updated, now, within),
            want,
            "{state:?} {v:?} moved={moved} updated={updated} now={now}"
        );
    }
}

#[test]
fn the_expected_end_counts_from_the_later_of_the_end_and_the_order() {
    let month = 30 * DAY;
    assert_eq!(expected_end(Some(NOW + DAY), NOW, month), NOW + month);
    assert_eq!(
        expected_end(Some(NOW - 5 * DAY), NOW, month),
        NOW + month - DAY
    );
    assert_eq!(expected_end(None, NOW, month), NOW + month - DAY);
}

/// A refusal by callback waits as a `Rejected` reply would: the same
/// policy, written once.
#[test]
fn a_refusal_by_callback_backs_off_like_a_rejected_reply() {
    for attempt in 1..=6 {
        let (after, _) = after_attempt(OutcomeClass::Rejected, false, attempt, NOW, None, 1);
        let AfterAttempt::Failed { retry_at: Some(at) } = after else {
            panic!("{after:?}")
        };
        assert_eq!(retry_after_refusal(attempt, NOW, None, 1), at);
    }
    assert_eq!(retry_after_refusal(1, NOW, None, 1), NOW + 10);
    assert_eq!(retry_after_refusal(9, NOW, None, 1), NOW + 120);
    assert_eq!(retry_after_refusal(9, NOW, Some(NOW + 50), 1), NOW + 50);
}
