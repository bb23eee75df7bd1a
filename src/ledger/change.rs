//! What each transition does to an order, whatever store keeps it: pure
//! changes to one [`Order`]. A store reads the order under its key (sled:
//! under the write lock; a database: under the row's lock and its fence),
//! applies one of these, and writes it back with what follows from it
//! (budgets and indexes: see `derived.rs`).

mod approval;

pub(crate) use approval::{answer, needs_approval, without_own_hold};

use super::*;
use crate::model::OutcomeClass;

/// `planned` → `sent`: the request is leaving.
pub(crate) fn mark_sent(o: &mut Order, now: i64) -> Result<(), LedgerError> {
    expect_state(o, &[OrderState::Planned], OrderState::Sent)?;
    o.attempt_mut(o.attempts).state = AttemptState::Sent;
    o.enter(OrderState::Sent, now, "request leaving");
    Ok(())
}

/// What the vendor replied to the current attempt (see
/// [`Ledger::record_attempt`]); `Some` names a second payment.
pub(crate) fn record_reply(
    o: &mut Order,
    now: i64,
    outcome: OutcomeClass,
    detail: &str,
    result: AttemptResult,
) -> Result<Option<String>, LedgerError> {
    let to = match &result {
        AttemptResult::Succeeded { .. } => OrderState::Succeeded,
        AttemptResult::Pending { .. } => OrderState::Pending,
        AttemptResult::Unknown => OrderState::Unknown,
        AttemptResult::Failed { .. } => OrderState::Failed,
    };
    let n = o.attempts;
    if o.attempt_mut(n).state != AttemptState::Sent {
        return Err(LedgerError::Illegal {
            key: o.key.clone(),
            from: o.state,
            to,
        });
    }
    let follows = o.state == OrderState::Sent;
    let mut conflict = None;
    o.last_outcome = Some(outcome.as_str().to_owned());
    match result {
        AttemptResult::Succeeded {
            price,
            vendor_orderid,
            verify_deadline,
        } => {
            let over = charge(o, n, price);
            index_vendor(o, n, vendor_orderid);
            o.attempt_mut(n).state = AttemptState::Paid;
            conflict = both(over, billed_twice(o, n));
            if follows {
                o.verification = Verification::Waiting {
                    deadline: verify_deadline,
                };
            }
        }
        AttemptResult::Pending {
            price,
            vendor_orderid,
        } => {
            conflict = charge(o, n, price);
            index_vendor(o, n, vendor_orderid);
            o.attempt_mut(n).state = AttemptState::Pending;
        }
        AttemptResult::Unknown => o.attempt_mut(n).state = AttemptState::Unknown,
        AttemptResult::Failed { retry_at } => {
            refund(o, n);
            o.attempt_mut(n).state = AttemptState::NotPaid;
            if follows {
                o.retry_at = retry_at;
            }
        }
    }
    if follows {
        o.enter(to, now, format!("{outcome}: {detail}"));
    } else {
        let state = o.state;
        o.enter(
            state,
            now,
            format!("attempt {n} answered after the order was settled: {outcome}: {detail}"),
        );
    }
    Ok(conflict)
}

/// Settles attempt `attempt` (`None`: the current one); see
/// [`Ledger::settle_attempt`]. `Ok(Some(conflict))`: changed;
/// `Ok(None)`: a repeat; `Err(why)`: a contradiction, nothing changed.
#[allow(clippy::type_complexity)]
pub(crate) fn settle_attempt(
    o: &mut Order,
    attempt: Option<u32>,
    now: i64,
    settlement: &Settlement,
) -> Result<Result<Option<Option<String>>, String>, LedgerError> {
    let current = o.attempts;
    let n = attempt.unwrap_or(current);
    if n == 0 || n > current {
        return Ok(Err(format!(
            "attempt {n} does not exist (the order has {current})"
        )));
    }
    let was = o.attempt_mut(n).state;
    match settlement {
        Settlement::Paid {
            price,
            verify_deadline,
            why,
        } => {
            if was == AttemptState::Paid {
                // The order itself may still be open when the
                // current attempt was answered 10000 earlier.
                return Ok(Ok(None));
            }
            if matches!(was, AttemptState::Planned) {
                return Ok(Err(format!("attempt {n} was never sent")));
            }
            let over = charge(o, n, *price);
            o.attempt_mut(n).state = AttemptState::Paid;
            let conflict = if let Some(twice) = billed_twice(o, n) {
                Some(twice)
            } else if was == AttemptState::NotPaid {
                Some(format!(
                    "the vendor billed attempt {n}, which the ledger had as not paid; counted in the budget"
                ))
            } else {
                None
            };
            if o.state != OrderState::Succeeded {
                o.retry_at = None;
                if o.verification == Verification::None {
                    o.verification = Verification::Waiting {
                        deadline: *verify_deadline,
                    };
                }
                let why = if n == current {
                    why.clone()
                } else {
                    format!("{why}; for attempt {n} of {current}")
                };
                o.enter(OrderState::Succeeded, now, why);
            } else {
                o.enter(
                    OrderState::Succeeded,
                    now,
                    format!("{why}; attempt {n} paid as well"),
                );
            }
            Ok(Ok(Some(both(over, conflict))))
        }
        Settlement::NotPaid { retry_at, why } => match was {
            AttemptState::NotPaid | AttemptState::Planned => Ok(Ok(None)),
            AttemptState::Paid => Ok(Err(format!(
                "attempt {n} is recorded as paid; the vendor now says: {why}"
            ))),
            AttemptState::Sent | AttemptState::Pending | AttemptState::Unknown => {
                refund(o, n);
                o.attempt_mut(n).state = AttemptState::NotPaid;
                if n == current && o.state.is_open() {
                    o.retry_at = *retry_at;
                    o.enter(OrderState::Failed, now, why.clone());
                } else {
                    let state = o.state;
                    o.enter(state, now, format!("attempt {n}: {why}"));
                }
                Ok(Ok(Some(None)))
            }
        },
    }
}

/// A paid, unverified order was not delivered: refunded, retryable.
pub(crate) fn refute(o: &mut Order, now: i64, why: &str) -> Result<(), LedgerError> {
    if o.state != OrderState::Succeeded
        || !matches!(o.verification, Verification::Unverified { .. })
    {
        return Err(LedgerError::Illegal {
            key: o.key.clone(),
            from: o.state,
            to: OrderState::Failed,
        });
    }
    for n in o.paid_attempts() {
        refund(o, n);
        o.attempt_mut(n).state = AttemptState::NotPaid;
    }
    o.retry_at = Some(now);
    o.enter(OrderState::Failed, now, why);
    Ok(())
}

/// `pending` whose callback did not come in time → `unknown`.
pub(crate) fn callback_overdue(o: &mut Order, now: i64, why: &str) -> Result<(), LedgerError> {
    expect_state(o, &[OrderState::Pending], OrderState::Unknown)?;
    let n = o.attempts;
    o.attempt_mut(n).state = AttemptState::Unknown;
    o.enter(OrderState::Unknown, now, why);
    Ok(())
}

/// Binds a vendor order id to the current attempt; returns its number.
pub(crate) fn bind_vendor_order(o: &mut Order, vendor_orderid: &str) -> u32 {
    let n = o.attempts;
    index_vendor(o, n, Some(vendor_orderid.to_owned()));
    n
}

/// After a stop: `sent` may have left, so it becomes `unknown` (never
/// re-sent); `planned` never left, so it becomes `failed`, retryable now.
/// Other states stay.
pub(crate) fn recover(o: &mut Order, now: i64) {
    match o.state {
        OrderState::Sent => {
            o.attempt_mut(o.attempts).state = AttemptState::Unknown;
            o.enter(
                OrderState::Unknown,
                now,
                "the daemon stopped while the request was in flight; it may have been paid",
            );
        }
        OrderState::Planned => {
            let n = o.attempts;
            refund(o, n);
            o.attempt_mut(n).state = AttemptState::NotPaid;
            o.retry_at = Some(now);
            o.enter(
                OrderState::Failed,
                now,
                "the daemon stopped before the request left; not paid",
            );
        }
        _ => {}
    }
}

/// Whether an order may still have paid for its period without that
/// showing yet: open, or paid and waiting for (or never getting) its
/// verification, and not failed. While one is, no other key may pay for
/// the same account and membership.
pub(crate) fn unsettled(o: &Order) -> bool {
    (o.state.is_open()
        || matches!(
            o.verification,
            Verification::Waiting { .. } | Verification::Unverified { .. }
        ))
        && o.state != OrderState::Failed
}

/// The order planned for `req`: a new one, or the next attempt of the
/// failed one under its key, its `max_price` held in the request's budget
/// periods; `approval` says why it must first wait for a person (see
/// [`needs_approval`]). An order that awaited approval is planned again
/// in its own attempt, which was never sent. Returns it with the length of
/// its history before the plan (the transitions a store stamps). The
/// guards are the store's to check first (key, cross-rule, budget).
pub(crate) fn next_attempt(
    existing: Option<Order>,
    req: &PlanRequest,
    now: i64,
    approval: Option<String>,
) -> (Order, usize) {
    let mut order = existing.unwrap_or_else(|| Order {
        key: req.key.clone(),
        rule: req.rule.clone(),
        account: req.account.clone(),
        membership: req.membership,
        observed_end: req.observed_end,
        product: req.product.clone(),
        provider: req.provider.clone(),
        state: OrderState::Planned,
        attempts: 0,
        max_price: req.max_price,
        price: None,
        vendor_orderid: None,
        hold: None,
        spent: Fen::ZERO,
        charged_to: None,
        retry_at: None,
        last_outcome: None,
        verification: Verification::None,
        created_at: now,
        updated_at: now,
        history: Vec::new(),
        attempt_log: Vec::new(),
        approval: None,
    });
    if order.attempts > 0 {
        // Records of earlier attempts (made up for old orders).
        order.attempt_mut(order.attempts);
    }
    let hold = BudgetHold {
        day: req.day.clone(),
        month: req.month.clone(),
        amount: req.max_price,
    };
    if order.state == OrderState::AwaitingApproval {
        let n = order.attempts;
        order.attempt_mut(n).periods = hold.clone();
    } else {
        order.attempts += 1;
        order.attempt_log.push(AttemptRecord {
            n: order.attempts,
            state: AttemptState::Planned,
            vendor_orderid: None,
            spent: Fen::ZERO,
            periods: hold.clone(),
        });
    }
    if order.max_price != req.max_price {
        // An approval is for the price its approver saw.
        order.approval = None;
    }
    order.retry_at = None;
    order.max_price = req.max_price;
    order.hold = Some(hold);
    let added = order.history.len();
    let n = order.attempts;
    let (state, why) = match (approval, &order.approval) {
        (Some(why), _) => (
            OrderState::AwaitingApproval,
            format!(
                "attempt {n} awaits approval ({} at most): {why}",
                req.max_price
            ),
        ),
        (None, Some(a)) => (
            OrderState::Planned,
            format!("attempt {n}: {}; approved by {}: {}", req.why, a.by, a.why),
        ),
        (None, None) => (OrderState::Planned, format!("attempt {n}: {}", req.why)),
    };
    order.enter(state, now, why);
    (order, added)
}

/// Why the order already under a plan's key refuses another attempt now
/// (all attempts used, or not failed and due for a retry), if it does.
pub(crate) fn refuses_retry(existing: &Order, req: &PlanRequest, now: i64) -> Option<Refusal> {
    if existing.state == OrderState::AwaitingApproval {
        return (!existing.replans_at(req.max_price)).then(|| Refusal::Exists {
            state: existing.state,
            why: existing.last_why().to_owned(),
        });
    }
    if existing.state == OrderState::Failed && existing.attempts >= req.max_attempts {
        return Some(Refusal::MaxAttempts {
            attempts: existing.attempts,
        });
    }
    (!existing.may_retry(now, req.max_attempts)).then(|| Refusal::Exists {
        state: existing.state,
        why: existing.last_why().to_owned(),
    })
}

/// The cap a plan would pass, given what its rule has used in the plan's
/// day and month.
pub(crate) fn over_budget(req: &PlanRequest, day: Spend, month: Spend) -> Option<Refusal> {
    [
        (&req.day, day, req.budget.per_day),
        (&req.month, month, req.budget.per_month),
    ]
    .into_iter()
    .find_map(|(period, spend, cap)| {
        let cap = cap?;
        (spend.used().0 + req.max_price.0 > cap.0).then(|| Refusal::Budget {
            period: period.clone(),
            cap,
            used: spend.used(),
            price: req.max_price,
        })
    })
}

/// Applies one transition `f` to an order as every store does: attempts
/// made up first for an order written before they were recorded (while
/// its hold still says where its money counts), then `f`, then the money
/// it spent summed, and the transitions it added stamped at `stamp_ms`.
pub(crate) fn apply<R>(
    order: &mut Order,
    stamp_ms: i64,
    f: impl FnOnce(&mut Order) -> Result<R, LedgerError>,
) -> Result<R, LedgerError> {
    if order.attempts > 0 {
        order.attempt_mut(order.attempts);
    }
    let added = order.history.len();
    let r = f(order)?;
    order.spent = Fen(order.attempt_log.iter().map(|a| a.spent.0).sum());
    order.stamp_from(added, stamp_ms);
    Ok(r)
}

/// When attempt `n`, just paid, is not the only paid attempt of its
/// order: the period was billed twice. One rule for replies and callbacks.
fn billed_twice(o: &Order, n: u32) -> Option<String> {
    let other = o.paid_attempts().into_iter().find(|m| *m != n)?;
    Some(format!(
        "the period is billed twice: attempt {n} and attempt {other} are both paid"
    ))
}

fn expect_state(o: &Order, from: &[OrderState], to: OrderState) -> Result<(), LedgerError> {
    if from.contains(&o.state) {
        Ok(())
    } else {
        Err(LedgerError::Illegal {
            key: o.key.clone(),
            from: o.state,
            to,
        })
    }
}

/// Both conflicts, when there are two.
fn both(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// Attempt `n` was billed at `price` (or, when the vendor did not say, at
/// what it was counted at already, else the held maximum). The current
/// attempt's hold, if still there, becomes spending (in the same periods).
/// What the vendor billed is counted whatever it is; a price above the
/// order's `max_price`, counted for the first time, is a conflict: the
/// budget held less than was spent, and the operator must hear of it.
fn charge(o: &mut Order, n: u32, price: Option<Fen>) -> Option<String> {
    let hold = if n == o.attempts { o.hold.take() } else { None };
    let a = o.attempt_mut(n);
    let counted = a.spent;
    let paid = price.unwrap_or(if counted > Fen::ZERO {
        counted
    } else {
        a.periods.amount
    });
    a.spent = paid;
    if let Some(h) = hold {
        o.charged_to = Some(h);
    }
    o.price = Some(paid);
    (paid > o.max_price && paid != counted).then(|| {
        format!(
            "the vendor billed attempt {n} at {paid}, above the max_price of {}; counted in the budget at {paid}",
            o.max_price
        )
    })
}

/// Attempt `n` was not billed (or was refunded): its hold and spending go
/// back to the budget.
pub(super) fn refund(o: &mut Order, n: u32) {
    if n == o.attempts {
        o.hold = None;
    }
    o.attempt_mut(n).spent = Fen::ZERO;
}

fn index_vendor(o: &mut Order, n: u32, vendor_orderid: Option<String>) {
    if let Some(id) = vendor_orderid.filter(|s| !s.is_empty()) {
        o.vendor_orderid = Some(id.clone());
        o.attempt_mut(n).vendor_orderid = Some(id);
    }
}
