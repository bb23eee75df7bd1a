//! Pure decisions: is this account due, what does an attempt's outcome
//! mean, when may it be retried. No clock, no I/O: every input is a
//! parameter, so every branch is covered by a table test.

use std::time::Duration;

use crate::config::WhenLapsed;
use crate::ledger::{Order, OrderState, Standing, Verification};
use crate::units::Fen;
use crate::upstream::OutcomeClass;

/// Whether a provider takes orders now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Open.
    Open,
    /// Paused, but this order may go through as a probe.
    Probe,
    /// Paused.
    Closed { why: String },
}

/// Spending so far against a rule's caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetView {
    pub per_day: Option<Fen>,
    pub used_day: Fen,
    pub per_month: Option<Fen>,
    pub used_month: Fen,
}

/// Everything a decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Unix seconds.
    pub now: i64,
    /// The membership end just read (`None`: no membership).
    pub end: Option<i64>,
    /// When a renewal is due.
    /// Due when the end is this close: a rule's `renew_before`, or a
    /// manual order's window (`engine/terms.rs`).
    pub renew_before: Duration,
    pub when_lapsed: WhenLapsed,
    pub max_attempts: u32,
    /// The order under this period's key, if any.
    pub existing: Option<&'a Order>,
    pub admission: Admission,
    pub budget: BudgetView,
    pub max_price: Fen,
    /// Why new orders for this account are held (a damaged store was
    /// accepted or a backup restored), if they are.
    pub held: Option<&'a str>,
}

/// What to do for one account under one rule, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not yet: due at `due_at`.
    NotDue { due_at: i64 },
    /// Pay now.
    Renew { why: String },
    /// Lapsed and the rule says leave it.
    Skip { why: String },
    /// An order for this period exists and needs nothing from us.
    Waiting { state: OrderState, why: String },
    /// The last attempt failed; retry at `at`.
    RetryLater { at: i64 },
    /// No more attempts for this period.
    GaveUp { why: String },
    /// Paying would pass a cap.
    BudgetExceeded {
        period: &'static str,
        cap: Fen,
        used: Fen,
    },
    /// The provider is paused.
    ProviderPaused { why: String },
    /// New orders are held until an operator releases them.
    Held { why: String },
}

impl Decision {
    /// The alert this decision raises and keeps standing while it holds,
    /// if any.
    pub fn standing(&self) -> Option<Standing> {
        match self {
            Decision::Skip { .. } => Some(Standing::Skipped),
            Decision::GaveUp { why } => Some(Standing::GaveUp { why: why.clone() }),
            Decision::Held { why } => Some(Standing::Held { why: why.clone() }),
            Decision::BudgetExceeded { period, cap, used } => Some(Standing::BudgetExceeded {
                period: (*period).to_owned(),
                cap: *cap,
                used: *used,
            }),
            _ => None,
        }
    }

    /// One line for logs, `status` and `plan`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Decision::NotDue { due_at } => {
                format!("not due; due at {}", crate::timefmt::utc(*due_at))
            }
            Decision::Renew { why } => format!("renew: {why}"),
            Decision::Skip { why } => format!("skip: {why}"),
            Decision::Waiting { state, why } => format!("order {state}: {why}"),
            Decision::RetryLater { at } => {
                format!("last attempt failed; retry at {}", crate::timefmt::utc(*at))
            }
            Decision::GaveUp { why } => format!("gave up: {why}"),
            Decision::BudgetExceeded { period, cap, used } => {
                format!("budget exceeded: {used} of {cap} per {period} used")
            }
            Decision::ProviderPaused { why } => format!("provider paused: {why}"),
            Decision::Held { why } => format!("held: {why}"),
        }
    }
}

/// Decides for one account under one rule.
pub fn decide(f: &Facts<'_>) -> Decision {
    let lapsed = f.end.is_none_or(|end| end <= f.now);
    if let Some(end) = f.end {
        let window = f.renew_before.as_secs() as i64;
        if end - f.now > window {
            return Decision::NotDue {
                due_at: end - window,
            };
        }
    }
    if lapsed && f.when_lapsed == WhenLapsed::Skip {
        let why = match f.end {
            Some(end) => format!(
                "lapsed {}; when_lapsed: skip",
                crate::timefmt::relative(end - f.now)
            ),
            None => "no membership; when_lapsed: skip".to_owned(),
        };
        return Decision::Skip { why };
    }
    // An order awaiting approval already holds its money: the store's
    // plan weighs the caps without it, so the decision does not either.
    let mut weigh_budget = true;
    if let Some(order) = f.existing {
        match order.state {
            OrderState::AwaitingApproval => {
                if !order.replans_at(f.max_price) {
                    return Decision::Waiting {
                        state: order.state,
                        why: order.last_why().to_owned(),
                    };
                }
                weigh_budget = false;
            }
            OrderState::Failed => {
                if order.attempts >= f.max_attempts {
                    return Decision::GaveUp {
                        why: format!(
                            "{} of {} attempts failed; last: {}",
                            order.attempts,
                            f.max_attempts,
                            order.last_why()
                        ),
                    };
                }
                match order.retry_at {
                    None => {
                        return Decision::GaveUp {
                            why: format!("not retried: {}", order.last_why()),
                        };
                    }
                    Some(at) if at > f.now => return Decision::RetryLater { at },
                    Some(_) => {}
                }
            }
            state => {
                let why = match state {
                    OrderState::Succeeded => "paid; waiting for the new end to show".to_owned(),
                    OrderState::Unknown => "possibly paid; needs evidence (callback, end moving) or `vipd orders resolve`".to_owned(),
                    OrderState::Pending => "accepted; waiting for the vendor's callback".to_owned(),
                    _ => "in flight".to_owned(),
                };
                return Decision::Waiting { state, why };
            }
        }
    }
    if let Some(why) = f.held {
        return Decision::Held {
            why: why.to_owned(),
        };
    }
    if let Admission::Closed { why } = &f.admission {
        return Decision::ProviderPaused { why: why.clone() };
    }
    let b = &f.budget;
    for (period, cap, used) in [
        ("day", b.per_day, b.used_day),
        ("month", b.per_month, b.used_month),
    ] {
        if let Some(cap) = cap.filter(|_| weigh_budget) {
            if used.0 + f.max_price.0 > cap.0 {
                return Decision::BudgetExceeded { period, cap, used };
            }
        }
    }
    let why = match f.end {
        Some(end) if end > f.now => format!(
            "ends {} (renew_before {})",
            crate::timefmt::relative(end - f.now),
            crate::units::HumanDuration(f.renew_before)
        ),
        Some(end) => format!(
            "lapsed {}; when_lapsed: renew",
            crate::timefmt::relative(end - f.now)
        ),
        None => "no membership; when_lapsed: renew".to_owned(),
    };
    Decision::Renew { why }
}

/// What an attempt's outcome class means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterAttempt {
    /// Paid.
    Succeeded,
    /// Paid; result by callback.
    Pending,
    /// Possibly paid.
    Unknown,
    /// Not paid; retry at this time (or never).
    Failed { retry_at: Option<i64> },
}

/// What a provider gate must do after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateEffect {
    /// Nothing.
    None,
    /// Pause until a probe succeeds.
    PauseUntilProbe,
    /// Pause until the configuration is reloaded.
    PauseUntilReload,
    /// A paid order went through: resume if paused for a probe.
    Resume,
}

/// The meaning of one attempt's outcome, for the order and the provider.
/// `attempt` counts from 1; `end` bounds the retry time; `base` is the
/// first retry delay in seconds (`daemon.retry_base`, default 60):
/// transient failures retry after `base`, doubling up to 30 × `base`;
/// rejections after 10 × `base`, up to 120 × `base`.
pub(crate) fn after_attempt(
    class: OutcomeClass,
    debug_mode: bool,
    attempt: u32,
    now: i64,
    end: Option<i64>,
    base: i64,
) -> (AfterAttempt, GateEffect) {
    use OutcomeClass::*;
    let retry =
        |first: i64, cap: i64| Some(retry_time(first * base, cap * base, attempt, now, end));
    match class {
        Accepted => (AfterAttempt::Succeeded, GateEffect::Resume),
        Pending => (AfterAttempt::Pending, GateEffect::Resume),
        Debug if debug_mode => (AfterAttempt::Succeeded, GateEffect::None),
        // A debug reply outside debug mode is an error: never billed, and
        // retrying would only get the same answer.
        Debug => (AfterAttempt::Failed { retry_at: None }, GateEffect::None),
        Unknown => (AfterAttempt::Unknown, GateEffect::None),
        // The client already corrected the clock and retried once.
        Clock => (
            AfterAttempt::Failed {
                retry_at: retry(1, 10),
            },
            GateEffect::None,
        ),
        Transient | NotSent => (
            AfterAttempt::Failed {
                retry_at: retry(1, 30),
            },
            GateEffect::None,
        ),
        Rejected => (
            AfterAttempt::Failed {
                retry_at: Some(retry_after_refusal(attempt, now, end, base)),
            },
            GateEffect::None,
        ),
        // The provider gate holds these back; the order may go when it opens.
        Exhausted => (
            AfterAttempt::Failed {
                retry_at: Some(now),
            },
            GateEffect::PauseUntilProbe,
        ),
        Config => (
            AfterAttempt::Failed {
                retry_at: Some(now),
            },
            GateEffect::PauseUntilReload,
        ),
    }
}

/// When to retry a period after the vendor's callback said attempt
/// `attempt` was not paid: as after a `Rejected` reply (10 × `base` at
/// first, doubling, at most 120 × `base`), never past the end.
pub(crate) fn retry_after_refusal(attempt: u32, now: i64, end: Option<i64>, base: i64) -> i64 {
    retry_time(10 * base, 120 * base, attempt, now, end)
}

/// Exponential backoff from `base` seconds, doubled per attempt, capped at
/// `cap`, and never past the membership's end while it is in the future.
pub(crate) fn retry_time(base: i64, cap: i64, attempt: u32, now: i64, end: Option<i64>) -> i64 {
    let exp = attempt.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1 << exp).min(cap);
    let at = now + delay;
    match end {
        Some(end) if end > now => at.min(end),
        _ => at,
    }
}

/// Tolerance when comparing a new end with the expected one (README,
/// "Renewals": verification): a vendor may count a month as 30 or 31 days.
pub(crate) const END_TOLERANCE: i64 = 86_400;

/// The least end a renewal of `adds_secs` shows, for an order planned when
/// the end was `observed_end` (none: from the order's creation).
pub(crate) fn expected_end(observed_end: Option<i64>, created_at: i64, adds_secs: i64) -> i64 {
    observed_end.unwrap_or(0).max(created_at) + adds_secs - END_TOLERANCE
}

/// What a membership read says about one open or paid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The end moved: an open order was paid (settle it, then verify it).
    Paid,
    /// A pending order's callback is overdue and the end has not moved:
    /// possibly paid, `unknown`, never re-sent.
    CallbackOverdue,
    /// A paid order's new end shows.
    Verified,
    /// A paid order's new end did not show by its deadline.
    Unverified,
    /// Nothing to do yet.
    Nothing,
}

/// The verdict for an order in `state` with `verification`, last changed
/// at `updated_at`, given whether the end `moved` past what it expects,
/// at `now`, with callbacks due within `callback_within` seconds.
pub fn evidence(
    state: OrderState,
    verification: &Verification,
    moved: bool,
    updated_at: i64,
    now: i64,
    callback_within: i64,
) -> Verdict {
    match (state, verification, moved) {
        (OrderState::Pending | OrderState::Unknown, _, true) => Verdict::Paid,
        (OrderState::Pending, _, false) if now - updated_at > callback_within => {
            Verdict::CallbackOverdue
        }
        (OrderState::Succeeded, Verification::Waiting { .. }, true) => Verdict::Verified,
        (OrderState::Succeeded, Verification::Waiting { deadline }, false) if now > *deadline => {
            Verdict::Unverified
        }
        _ => Verdict::Nothing,
    }
}

#[cfg(test)]
mod tests;
