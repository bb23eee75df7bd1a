//! The conformance suite of [`Store`]: every invariant of the order
//! ledger, written once, generic over the backend. sled runs it today
//! (`tests.rs`: `conformance_suite!(SledBackend)`); a second backend adds
//! one line of its own.
//!
//! Each function is a test: it makes its own store through the
//! [`Backend`], so backends need no shared state between tests.

mod approvals;
mod attempts;
mod records;
mod recovery;

pub(crate) use approvals::*;
pub(crate) use attempts::*;
pub(crate) use records::*;
pub(crate) use recovery::*;

use super::store::{KvStore, OrderStore, RecordStore, Store};
use super::*;
use crate::model::OutcomeClass;

pub const NOW: i64 = 1_795_252_469;

/// How the suite gets stores of one backend.
pub(crate) trait Backend {
    /// The store.
    type Store: Store;
    /// Where its data lives (a temporary folder, a database); kept alive
    /// for the test's length.
    type Place;
    /// A new, empty place.
    fn place() -> impl Future<Output = Self::Place>;
    /// Opens (or, after a drop, reopens) the store at `place`.
    fn open(place: &Self::Place) -> impl Future<Output = Self::Store>;
}

/// A fresh store and its place.
pub async fn fresh<B: Backend>() -> (B::Place, B::Store) {
    let place = B::place().await;
    let store = B::open(&place).await;
    (place, store)
}

/// Declares one `#[tokio::test]` per suite function for `$backend`.
macro_rules! conformance_suite {
    ($backend:ty) => {
        conformance_suite!(@tests $backend;
            a_key_is_planned_once_and_held_against_the_budget,
            paid_reply_settles_at_the_real_price,
            budget_cap_refuses_and_failed_attempts_release,
            retries_wait_for_backoff_and_stop_at_max_attempts,
            callbacks_settle_once,
            refused_callback_refunds_the_budget,
            restart_turns_sent_into_unknown_and_planned_into_retryable,
            another_rule_cannot_pay_while_an_order_for_the_membership_is_unsettled,
            events_keep_order,
            pruning_drops_old_events_only,
            a_redelivered_failure_for_an_earlier_attempt_changes_nothing,
            a_reply_that_bills_a_second_attempt_is_flagged,
            a_success_for_an_attempt_recorded_failed_is_counted_and_flagged,
            a_failure_for_a_paid_attempt_is_a_contradiction,
            an_order_is_found_by_a_unique_prefix,
            check_account_and_token_records_read_back,
            kv_values_expire_count_and_keep_to_the_quota,
            counts_by_state_follow_every_write_and_a_reopen,
            budgets_and_indexes_follow_every_write_and_a_reopen,
            a_hold_refuses_new_orders_until_released,
            plans_under_no_cap_meet_the_same_refusals,
            a_renewal_above_approve_above_waits_holding_its_money_until_approved,
            an_answer_is_given_once_and_a_declined_order_is_never_paid,
            an_approval_is_for_the_price_its_approver_saw,
            a_budget_running_low_asks_for_approval_without_counting_the_order_twice,
            an_order_awaiting_approval_survives_a_restart_and_expires_once,
        );
    };
    (@tests $backend:ty; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::ledger::conformance::$name::<$backend>().await
            }
        )*
    };
}
pub(crate) use conformance_suite;

pub fn request(key: &str) -> PlanRequest {
    PlanRequest {
        key: key.to_owned(),
        rule: "keep".into(),
        // One account per key: two unsettled orders for one account and
        // membership are refused (see the cross-rule test).
        account: format!("acct-{key}"),
        membership: Membership::QqVip,
        observed_end: Some(NOW + 86_400),
        product: "qq_vip_month".into(),
        provider: "wapi".into(),
        max_price: Fen(2000),
        max_attempts: 3,
        budget: Budget::caps(Some(Fen(5000)), None),
        day: "2026-11-21".into(),
        month: "2026-11".into(),
        why: "due in 1d".into(),
        approval_asked: None,
    }
}

/// An event of `kind` at `at`, about nothing in particular.
pub fn event(at: i64, kind: impl Into<String>) -> EventRecord {
    EventRecord {
        at,
        kind: kind.into(),
        account: None,
        rule: None,
        key: None,
        detail: String::new(),
    }
}

/// Records a 10000 (accepted, paid) reply to the current attempt of `key`,
/// which must be `sent`.
pub(crate) async fn paid_reply(
    l: &impl Store,
    key: &str,
    now: i64,
    price: Option<Fen>,
    vendor_orderid: Option<&str>,
    verify_deadline: i64,
) -> Recorded {
    l.record_attempt(
        key,
        now,
        OutcomeClass::Accepted,
        "codeid 10000",
        AttemptResult::Succeeded {
            price,
            vendor_orderid: vendor_orderid.map(str::to_owned),
            verify_deadline,
        },
    )
    .await
    .unwrap()
}

/// Plans `key`, sends it, and records a 10023 (accepted, pending) reply.
pub async fn pending(
    l: &impl Store,
    key: &str,
    price: Option<Fen>,
    vendor_orderid: Option<String>,
) -> Order {
    l.plan(&request(key), NOW).await.unwrap().unwrap();
    l.mark_sent(key, NOW).await.unwrap();
    l.record_attempt(
        key,
        NOW,
        OutcomeClass::Pending,
        "10023",
        AttemptResult::Pending {
            price,
            vendor_orderid,
        },
    )
    .await
    .unwrap()
    .order
}

pub(crate) fn not_paid(why: &str) -> Settlement {
    Settlement::NotPaid {
        retry_at: Some(NOW),
        why: why.into(),
    }
}

pub fn paid(price: Option<Fen>) -> Settlement {
    Settlement::Paid {
        price,
        verify_deadline: NOW + 3600,
        why: "callback: success".into(),
    }
}

/// The order and conflict of a settlement that changed something.
pub fn changed(s: Settled) -> (Order, Option<String>) {
    match s {
        Settled::Changed { order, conflict } => (order, conflict),
        other => panic!("expected a change: {other:?}"),
    }
}

/// The vendor's id for attempt `n` of `key`, through the index.
pub(crate) async fn attempt_of(l: &impl Store, vendor: &str) -> (String, Option<u32>) {
    let found = l
        .attempt_of_vendor_order("wapi", vendor)
        .await
        .unwrap()
        .unwrap();
    (found.key, found.attempt)
}

/// Attempt 1 pending as V1, failed by its callback; attempt 2 pending as V2.
pub(crate) async fn second_attempt_pending(l: &impl Store) {
    pending(l, "k1", Some(Fen(1500)), Some("V1".into())).await;
    let (key, n) = attempt_of(l, "V1").await;
    let s = l
        .settle_attempt(&key, n, NOW, not_paid("callback: failed"))
        .await
        .unwrap();
    assert!(
        matches!(s, Settled::Changed { conflict: None, .. }),
        "{s:?}"
    );
    l.plan(&request("k1"), NOW).await.unwrap().unwrap();
    l.mark_sent("k1", NOW).await.unwrap();
    l.record_attempt(
        "k1",
        NOW,
        OutcomeClass::Pending,
        "10023",
        AttemptResult::Pending {
            price: Some(Fen(1500)),
            vendor_orderid: Some("V2".into()),
        },
    )
    .await
    .unwrap();
}

pub(crate) async fn a_key_is_planned_once_and_held_against_the_budget<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    let o = l.plan(&request("k1"), NOW).await.unwrap().unwrap();
    l.durable().await.unwrap();
    assert_eq!((o.state, o.attempts), (OrderState::Planned, 1));
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap(),
        Spend {
            reserved: Fen(2000),
            settled: Fen(0)
        }
    );
    let again = l.plan(&request("k1"), NOW).await.unwrap().unwrap_err();
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
    assert_eq!(l.orders_of("acct-k1").await.unwrap().len(), 1);
}

pub(crate) async fn paid_reply_settles_at_the_real_price<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    l.plan(&request("k1"), NOW).await.unwrap().unwrap();
    l.mark_sent("k1", NOW).await.unwrap();
    let o = paid_reply(&l, "k1", NOW + 1, Some(Fen(1211)), Some("V1"), NOW + 3600)
        .await
        .order;
    assert_eq!(o.state, OrderState::Succeeded);
    assert_eq!(
        o.verification,
        Verification::Waiting {
            deadline: NOW + 3600
        }
    );
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap(),
        Spend {
            reserved: Fen(0),
            settled: Fen(1211)
        }
    );
    assert_eq!(l.spend("keep", "2026-11").await.unwrap().settled, Fen(1211));
    assert_eq!(
        l.attempt_of_vendor_order("wapi", "V1").await.unwrap(),
        Some(VendorOrder {
            key: "k1".into(),
            attempt: Some(1)
        })
    );
    let history: Vec<OrderState> = o.history.iter().map(|t| t.state).collect();
    assert_eq!(
        history,
        [OrderState::Planned, OrderState::Sent, OrderState::Succeeded]
    );
}

pub(crate) async fn budget_cap_refuses_and_failed_attempts_release<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    l.plan(&request("k1"), NOW).await.unwrap().unwrap();
    l.plan(&request("k2"), NOW).await.unwrap().unwrap();
    // 2 x 20.00 held of 50.00: a third would pass the cap.
    let refused = l.plan(&request("k3"), NOW).await.unwrap().unwrap_err();
    assert_eq!(
        refused,
        Refusal::Budget {
            period: "2026-11-21".into(),
            cap: Fen(5000),
            used: Fen(4000),
            price: Fen(2000)
        }
    );
    l.mark_sent("k1", NOW).await.unwrap();
    l.record_attempt(
        "k1",
        NOW,
        OutcomeClass::Transient,
        "10021",
        AttemptResult::Failed {
            retry_at: Some(NOW + 60),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap().reserved,
        Fen(2000)
    );
    assert!(l.plan(&request("k3"), NOW).await.unwrap().is_ok());
}

pub(crate) async fn retries_wait_for_backoff_and_stop_at_max_attempts<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    for attempt in 1..=3 {
        let at = NOW + attempt * 100;
        let o = l.plan(&request("k1"), at).await.unwrap().unwrap();
        assert_eq!(o.attempts as i64, attempt);
        l.mark_sent("k1", at).await.unwrap();
        l.record_attempt(
            "k1",
            at,
            OutcomeClass::Transient,
            "10021",
            AttemptResult::Failed {
                retry_at: Some(at + 50),
            },
        )
        .await
        .unwrap();
        let early = l.plan(&request("k1"), at + 10).await.unwrap().unwrap_err();
        assert!(
            matches!(
                early,
                Refusal::Exists {
                    state: OrderState::Failed,
                    ..
                }
            ) || attempt == 3,
            "{early}"
        );
    }
    let done = l
        .plan(&request("k1"), NOW + 10_000)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(done, Refusal::MaxAttempts { attempts: 3 });
}

pub(crate) async fn callbacks_settle_once<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    pending(&l, "k1", None, Some("V9".into())).await;
    // Billed at 10023: the max price counts until the callback states it.
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap().settled,
        Fen(2000)
    );
    let paid = Settlement::Paid {
        price: Some(Fen(1500)),
        verify_deadline: NOW + 3600,
        why: "callback success".into(),
    };
    let first = l.settle("k1", NOW + 5, paid.clone()).await.unwrap();
    assert_eq!(first.unwrap().state, OrderState::Succeeded);
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap().settled,
        Fen(1500)
    );
    assert!(
        l.settle("k1", NOW + 6, paid).await.unwrap().is_none(),
        "a repeated callback changes nothing"
    );
    let failed_later = Settlement::NotPaid {
        retry_at: None,
        why: "late failure callback".into(),
    };
    assert!(
        l.settle("k1", NOW + 7, failed_later)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(l.get("k1").await.unwrap().unwrap().history.len(), 4);
}

pub(crate) async fn refused_callback_refunds_the_budget<B: Backend>() {
    let (_place, l) = fresh::<B>().await;
    pending(&l, "k1", Some(Fen(1211)), None).await;
    let o = l
        .settle(
            "k1",
            NOW,
            Settlement::NotPaid {
                retry_at: Some(NOW + 60),
                why: "callback failed".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o.state, o.spent), (OrderState::Failed, Fen(0)));
    assert_eq!(
        l.spend("keep", "2026-11-21").await.unwrap(),
        Spend::default()
    );
}
