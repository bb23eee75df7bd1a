//! The story of one order (`vipd explain`, `/api/orders/{key}/trace`, and
//! `vipd test` when an expectation fails): what was decided and from
//! what, every transition with its reason, each request sent under the
//! key and what became of it, the evidence that the membership moved,
//! and the events that named the order, in time order.
//!
//! Everything comes from what the ledger keeps: the order's record (its
//! decision inputs, its transitions, its attempts and its verification,
//! kept and pruned with the order) and the event log (pruned on its own
//! schedule, so an old order's trace may have fewer events than it had).

use serde::{Deserialize, Serialize};

use crate::ledger::store::Store;
use crate::ledger::{AttemptState, EventRecord, LedgerError, Order, Verification};
use crate::timefmt;

/// How many of the latest events are searched for those naming an order.
pub(crate) const EVENTS_SEARCHED: usize = 10_000;

/// One order's story.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace {
    /// The order as the ledger keeps it.
    pub order: Order,
    /// What happened, oldest first.
    pub steps: Vec<Step>,
}

/// One thing that happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Unix seconds.
    pub at: i64,
    /// `decision`, `transition`, `attempt`, `verification` or `event`.
    pub kind: String,
    /// The state entered, the event's name, or the attempt's number.
    pub name: String,
    /// What happened and why, in words.
    pub detail: String,
}

impl Trace {
    /// The story of `order`, with the events among `events` that name it.
    pub fn of(order: Order, events: &[EventRecord]) -> Trace {
        let mut steps = vec![decision(&order)];
        steps.extend(order.history.iter().map(|t| Step {
            at: t.at,
            kind: "transition".into(),
            name: t.state.as_str().to_owned(),
            detail: t.why.clone(),
        }));
        // An attempt has no time of its own: it is told after the
        // transition that settled it (or the last one).
        // Orders written before attempts were recorded get theirs made up
        // from what the order says.
        let settled_at = order.updated_at;
        let mut attempts = order.clone();
        for n in 1..=order.attempts {
            attempts.attempt_mut(n);
        }
        steps.extend(attempts.attempt_log.iter().map(|a| Step {
            at: settled_at,
            kind: "attempt".into(),
            name: a.n.to_string(),
            detail: format!(
                "{}{}; spent {} (budget day {}, month {}; held {})",
                attempt_state(a.state),
                a.vendor_orderid
                    .as_deref()
                    .map(|id| format!(", vendor order {id}"))
                    .unwrap_or_default(),
                a.spent,
                a.periods.day,
                a.periods.month,
                a.periods.amount,
            ),
        }));
        if let Some(v) = verification(&order) {
            steps.push(v);
        }
        steps.extend(
            events
                .iter()
                .filter(|e| e.key.as_deref() == Some(order.key.as_str()))
                .map(|e| Step {
                    at: e.at,
                    kind: "event".into(),
                    name: e.kind.clone(),
                    detail: e.detail.clone(),
                }),
        );
        // Stable: at one second, the decision comes first, then the
        // transitions, attempts and events in the order they were added.
        steps.sort_by_key(|s| s.at);
        Trace { order, steps }
    }

    /// The trace as text, one step a line.
    pub fn render(&self) -> String {
        let o = &self.order;
        let mut out = format!(
            "order {}  {} / {} / {}  {}\n",
            o.key, o.rule, o.account, o.membership, o.state
        );
        for s in &self.steps {
            out.push_str(&format!(
                "  {}  {:<12} {:<18} {}\n",
                timefmt::utc(s.at),
                s.kind,
                s.name,
                s.detail
            ));
        }
        out
    }
}

fn decision(o: &Order) -> Step {
    let seen = match o.observed_end {
        Some(end) => format!("seen ending {}", timefmt::utc(end)),
        None => "not held".to_owned(),
    };
    let budget = o
        .hold
        .as_ref()
        .or(o.charged_to.as_ref())
        .map(|h| {
            format!(
                "; counted against budget day {}, month {} ({} held)",
                h.day, h.month, h.amount
            )
        })
        .unwrap_or_default();
    Step {
        at: o.created_at,
        kind: "decision".into(),
        name: o.rule.clone(),
        detail: format!(
            "{} {} {seen}: buy {} from {} for at most {}{budget}",
            o.account, o.membership, o.product, o.provider, o.max_price
        ),
    }
}

fn attempt_state(s: AttemptState) -> &'static str {
    match s {
        AttemptState::Planned => "planned, not sent",
        AttemptState::Sent => "sent, no reply",
        AttemptState::Pending => "accepted, waiting for the callback",
        AttemptState::Paid => "paid",
        AttemptState::NotPaid => "not paid",
        AttemptState::Unknown => "reply lost: possibly paid",
    }
}

fn verification(o: &Order) -> Option<Step> {
    let (at, name, detail) = match &o.verification {
        Verification::None => return None,
        Verification::Waiting { deadline } => (
            o.updated_at,
            "waiting",
            format!(
                "paid; waiting for the end to move, until {}",
                timefmt::utc(*deadline)
            ),
        ),
        Verification::Verified { new_end, at } => (
            *at,
            "verified",
            format!("the end moved to {}", timefmt::utc(*new_end)),
        ),
        Verification::Unverified { at } => (
            *at,
            "unverified",
            "the end had not moved by the deadline".to_owned(),
        ),
    };
    Some(Step {
        at,
        kind: "verification".into(),
        name: name.to_owned(),
        detail,
    })
}

/// The trace of the order `key_prefix` names (a unique prefix is enough).
pub async fn order(store: &dyn Store, key_prefix: &str) -> Result<Trace, LedgerError> {
    let order = store.find(key_prefix).await?;
    let events = store.events(EVENTS_SEARCHED).await?;
    Ok(Trace::of(order, &events))
}

/// The traces of `account`'s latest `last` orders, newest first.
pub async fn account(
    store: &dyn Store,
    account: &str,
    last: usize,
) -> Result<Vec<Trace>, LedgerError> {
    let mut orders = store.orders_of(account).await?;
    orders.sort_by_key(|o| std::cmp::Reverse((o.created_at, o.key.clone())));
    orders.truncate(last);
    let events = store.events(EVENTS_SEARCHED).await?;
    Ok(orders.into_iter().map(|o| Trace::of(o, &events)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{OrderState, Transition};
    use crate::units::Fen;

    fn order() -> Order {
        let mut o: Order = serde_json::from_value(serde_json::json!({
            "key": "k1", "rule": "keep", "account": "alice", "membership": "qq_vip",
            "observed_end": 1_000_000, "product": "month", "provider": "wapi",
            "state": "planned", "attempts": 1, "max_price": "20.00", "price": null,
            "vendor_orderid": null, "hold": null, "spent": "0.00", "charged_to": null,
            "retry_at": null, "last_outcome": null, "verification": {"status": "none"},
            "created_at": 100, "updated_at": 100, "history": [],
        }))
        .unwrap();
        o.history.push(Transition {
            at: 100,
            at_ms: 0,
            state: OrderState::Planned,
            why: "due".into(),
        });
        o.enter(OrderState::Succeeded, 130, "callback: success");
        o.spent = Fen(1500);
        o.verification = Verification::Verified {
            at: 140,
            new_end: 3_592_000,
        };
        o
    }

    fn event(at: i64, kind: &str, key: Option<&str>) -> EventRecord {
        EventRecord {
            at,
            kind: kind.into(),
            account: Some("alice".into()),
            rule: Some("keep".into()),
            key: key.map(Into::into),
            detail: format!("{kind} detail"),
        }
    }

    /// The story is in time order, the decision first; it carries the
    /// events naming this order and no other's, and the verification.
    #[test]
    fn a_trace_tells_an_order_in_time_order_with_its_own_events() {
        let events = [
            event(120, "recharge_result", Some("k1")),
            event(125, "recharge_result", Some("k2")),
            event(135, "order_settled", Some("k1")),
            event(136, "budget_exceeded", None),
        ];
        let t = Trace::of(order(), &events);
        let got: Vec<(i64, &str, &str)> = t
            .steps
            .iter()
            .map(|s| (s.at, s.kind.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (100, "decision", "keep"),
                (100, "transition", "planned"),
                (120, "event", "recharge_result"),
                (130, "transition", "succeeded"),
                (130, "attempt", "1"),
                (135, "event", "order_settled"),
                (140, "verification", "verified"),
            ]
        );
        let text = t.render();
        assert!(text.contains("seen ending"), "{text}");
        assert!(text.contains("callback: success"), "{text}");
        assert!(!text.contains("budget_exceeded"), "{text}");
    }
}
