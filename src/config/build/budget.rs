//! The builder's money settings: a budget's caps and approval thresholds,
//! and a rule's escalation steps.

use super::*;

/// Escalation steps when a rule sets none: three days, one, six hours.
const ESCALATE: [Duration; 3] = [
    Duration::from_secs(72 * 3600),
    Duration::from_secs(24 * 3600),
    Duration::from_secs(6 * 3600),
];

impl Builder<'_> {
    /// A `budget:` block at `at`: no amount negative. `approve_when_budget_left_below`
    /// without a cap could never apply, so it is an error too.
    pub(super) fn budget(&mut self, at: &[&str], subject: &str, b: raw::RawBudget) -> Budget {
        for (key, amount) in [
            ("per_day", b.per_day),
            ("per_month", b.per_month),
            ("approve_above", b.approve_above),
            (
                "approve_when_budget_left_below",
                b.approve_when_budget_left_below,
            ),
        ] {
            if amount.is_some_and(|c| c < Fen::ZERO) {
                let path: Vec<&str> = at.iter().copied().chain([key]).collect();
                self.error(&path, format!("{subject}: budget {key} cannot be negative"));
            }
        }
        if b.approve_when_budget_left_below.is_some()
            && b.per_day.is_none()
            && b.per_month.is_none()
        {
            let key = "approve_when_budget_left_below";
            let path: Vec<&str> = at.iter().copied().chain([key]).collect();
            self.error(
                &path,
                format!("{subject}: budget {key} needs a cap (per_day or per_month) to measure what is left"),
            );
        }
        Budget {
            per_day: b.per_day,
            per_month: b.per_month,
            approve_above: b.approve_above,
            approve_when_left_below: b.approve_when_budget_left_below,
        }
    }

    /// A rule's `escalate:` steps, longest first; none zero.
    pub(super) fn escalate(
        &mut self,
        at: &[&str],
        subject: &str,
        steps: Option<Vec<HumanDuration>>,
    ) -> Vec<Duration> {
        let Some(steps) = steps else {
            return ESCALATE.to_vec();
        };
        let mut out: Vec<Duration> = steps.iter().map(|d| d.get()).collect();
        if out.iter().any(Duration::is_zero) {
            self.error(
                at,
                format!("{subject}: escalate steps must be longer than 0s (the end passing unapproved is `renewal_unapproved`)"),
            );
        }
        out.sort_unstable_by(|a, b| b.cmp(a));
        out.dedup();
        out
    }
}
