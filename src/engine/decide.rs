//! Pure decisions: is this account due, what does an attempt's outcome
//! mean, when may it be retried. No clock, no I/O: every input is a
//! parameter, so every branch is covered by a table test.

use std::time::Duration;

use crate::config::WhenLapsed;
use crate::ledger::{Order, OrderState, Standing};
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

/// When a renewal is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// A rule's `renew_before`: due when the end is this close.
    Before(Duration),
    /// An operator's manual order: due now, whatever the end.
    Now,
}

/// Everything a decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Unix seconds.
    pub now: i64,
    /// The membership end just read (`None`: no membership).
    pub end: Option<i64>,
    /// When a renewal is due.
    pub window: Window,
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
    pub fn describe(&self) -> String {
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
    if let (Window::Before(window), Some(end)) = (f.window, f.end) {
        let window = window.as_secs() as i64;
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
    if let Some(order) = f.existing {
        match order.state {
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
        if let Some(cap) = cap {
            if used.0 + f.max_price.0 > cap.0 {
                return Decision::BudgetExceeded { period, cap, used };
            }
        }
    }
    let why = match (f.end, f.window) {
        (Some(end), Window::Before(window)) if end > f.now => format!(
            "ends {} (renew_before {})",
            crate::timefmt::relative(end - f.now),
            crate::units::HumanDuration(window)
        ),
        (Some(end), Window::Now) if end > f.now => {
            format!("ends {}", crate::timefmt::relative(end - f.now))
        }
        (Some(end), _) => format!(
            "lapsed {}; when_lapsed: renew",
            crate::timefmt::relative(end - f.now)
        ),
        (None, _) => "no membership; when_lapsed: renew".to_owned(),
    };
    Decision::Renew { why }
}

/// What an attempt's outcome class means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
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
pub enum GateEffect {
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
pub fn after_attempt(
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
                retry_at: retry(10, 120),
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

/// Exponential backoff from `base` seconds, doubled per attempt, capped at
/// `cap`, and never past the membership's end while it is in the future.
pub fn retry_time(base: i64, cap: i64, attempt: u32, now: i64, end: Option<i64>) -> i64 {
    let exp = attempt.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1 << exp).min(cap);
    let at = now + delay;
    match end {
        Some(end) if end > now => at.min(end),
        _ => at,
    }
}

#[cfg(test)]
mod tests {
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
        }
    }

    fn facts<'a>(end: Option<i64>, existing: Option<&'a Order>) -> Facts<'a> {
        Facts {
            now: NOW,
            end,
            window: Window::Before(Duration::from_secs(3 * DAY as u64)),
            when_lapsed: WhenLapsed::Renew,
            max_attempts: 3,
            existing,
            admission: Admission::Open,
            budget: BudgetView::default(),
            max_price: Fen(2000),
            held: None,
        }
    }

    /// An operator's order has no window: due with a month left, and its
    /// words name no `renew_before`; the other guards still hold.
    #[test]
    fn a_manual_order_is_due_now_under_the_same_guards() {
        let manual = |end, existing| Facts {
            window: Window::Now,
            ..facts(end, existing)
        };
        match decide(&manual(Some(NOW + 30 * DAY), None)) {
            Decision::Renew { why } => assert_eq!(why, "ends in 30d 0h"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&facts(Some(NOW + 30 * DAY), None)),
            Decision::NotDue { .. }
        ));
        let paid = order(OrderState::Succeeded, 1, None);
        assert!(matches!(
            decide(&manual(Some(NOW + 30 * DAY), Some(&paid))),
            Decision::Waiting { .. }
        ));
        let capped = Facts {
            budget: BudgetView {
                per_day: Some(Fen(1000)),
                ..BudgetView::default()
            },
            ..manual(None, None)
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
}
