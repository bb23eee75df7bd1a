//! Approvals, whatever store keeps the order: when a plan must wait for a
//! person, and what an answer (approve, decline, the end passing) does.
//!
//! An order that awaits approval holds its money like a planned one
//! (its attempt is planned, never sent). Approving it records who, why
//! and the price they saw on the order; the next plan under its key (the
//! pair's next check, woken at once by the daemon) turns it into
//! `planned` through every guard a plan has. The approval covers the
//! key's later attempts at that price: a period is paid once, so a retry
//! after a refusal is the same payment. At another price it does not: the
//! plan puts the order back to await approval at the new price.

use super::*;

/// What a plan sees of a period's spend with the order under its key left
/// out: an order awaiting approval holds its money already, and planning
/// it again must not count it twice.
pub(crate) fn without_own_hold(existing: Option<&Order>, period: &str, spend: Spend) -> Spend {
    let Some(hold) = existing
        .filter(|o| o.state == OrderState::AwaitingApproval)
        .and_then(|o| o.hold.as_ref())
    else {
        return spend;
    };
    if hold.day != period && hold.month != period {
        return spend;
    }
    Spend {
        reserved: Fen(spend.reserved.0.saturating_sub(hold.amount.0).max(0)),
        settled: spend.settled,
    }
}

/// Why a plan must wait for a person, if it must: a plugin asked, the
/// price is above `approve_above`, or paying would leave less than
/// `approve_when_left_below` under a cap. An approval already given under
/// the key at this price answers all three.
pub(crate) fn needs_approval(
    existing: Option<&Order>,
    req: &PlanRequest,
    day: Spend,
    month: Spend,
) -> Option<String> {
    if existing.is_some_and(|o| o.approved_at(req.max_price)) {
        return None;
    }
    if let Some(asked) = &req.approval_asked {
        return Some(asked.clone());
    }
    let b = &req.budget;
    if let Some(above) = b.approve_above.filter(|above| req.max_price > *above) {
        return Some(format!(
            "its price {} is above approve_above {above}",
            req.max_price
        ));
    }
    let floor = b.approve_when_left_below?;
    [
        (&req.day, day, b.per_day),
        (&req.month, month, b.per_month),
    ]
    .into_iter()
    .find_map(|(period, spend, cap)| {
        let left = cap?.0 - spend.used().0 - req.max_price.0;
        (left < floor.0).then(|| {
            format!(
                "it would leave {} of the {period} cap of {}, below approve_when_budget_left_below {floor}",
                Fen(left),
                cap.unwrap_or(Fen::ZERO)
            )
        })
    })
}

/// An answer to an order awaiting approval. Nothing changes, and the
/// error says why, when the order is not awaiting one, was approved
/// already (an approval is given once), or no longer has the price the
/// approver saw.
pub fn answer(o: &mut Order, now: i64, answer: &Answer) -> Result<(), LedgerError> {
    let refused = |why: String| LedgerError::Refused {
        key: o.key.clone(),
        why,
    };
    if o.state != OrderState::AwaitingApproval {
        return Err(refused(format!(
            "it does not await approval: it is {} ({})",
            o.state,
            o.last_why()
        )));
    }
    if let Some(a) = &o.approval {
        let when = crate::timefmt::utc(a.at);
        return Err(refused(format!(
            "it was approved already, by {} at {when} ({}); it is paid at the next check",
            a.by, a.why
        )));
    }
    match answer {
        Answer::Approve { by, why, price } => {
            if *price != o.max_price {
                return Err(refused(format!(
                    "its price changed from {} to {price} since it was planned; it awaits approval at {price} from the next check: look again, then approve",
                    o.max_price
                )));
            }
            o.approval = Some(Approval {
                by: by.clone(),
                why: why.clone(),
                at: now,
                price: *price,
            });
            o.enter(
                OrderState::AwaitingApproval,
                now,
                format!("approved by {by}: {why}; paid at the next check"),
            );
        }
        Answer::Decline { by, why } => {
            not_paid(o);
            o.enter(OrderState::Failed, now, format!("declined by {by}: {why}"));
        }
        Answer::Expire { why } => {
            not_paid(o);
            o.enter(OrderState::Failed, now, why.clone());
        }
    }
    Ok(())
}

/// The awaiting attempt is never sent: its hold goes back to the budget,
/// and the key is not retried on its own.
fn not_paid(o: &mut Order) {
    let n = o.attempts;
    refund(o, n);
    o.attempt_mut(n).state = AttemptState::NotPaid;
    o.retry_at = None;
}
