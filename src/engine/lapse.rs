//! Watching the end of every covered membership, whatever happens to its
//! renewal: when the end comes within the rule's `at_risk` and no renewal
//! has moved it, `renewal_at_risk` fires, naming the order and its state
//! (or that there is none, and what the check decided); when the end
//! passes unmoved, `membership_lapsed` fires. Each once per end, recorded
//! in the pair's check state, so on a shared store every node knows.
//!
//! The order's own clocks (`callback.within`, `verify_within`) can end
//! after the membership does; this one runs on the membership's end, so
//! no state an order can be in (planned, sent, pending, unknown,
//! unverified, held, awaiting a retry, vetoed, over budget) lets a covered
//! membership lapse in silence. When a read fails, the last end seen is
//! watched. When the next regular check would come after the moment the
//! end enters `at_risk` or passes, a check is woken at that moment.

use std::time::Duration;

use super::Engine;
use super::events::{Event, EventKind};
use crate::config::{Account, Rule};
use crate::ledger::{CheckState, Order, OrderState, Verification};

/// What a check found about its membership's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alarm {
    /// The end (unix seconds) is within `at_risk` and has not moved.
    AtRisk { end: i64 },
    /// The end passed and had not moved.
    Lapsed { end: i64 },
}

/// Whether this check raises an alarm, given the end it read (or, when
/// the read failed, `None` and the last one seen in `prev`); sets `next`'s
/// markers so that each alarm fires once per end.
///
/// A lapsed end alarms only if vipd saw it in the future (at this check's
/// predecessor, or by raising `renewal_at_risk` for it): a membership
/// found lapsed at first sight was not lost while vipd watched it (a rule
/// then renews it or, `when_lapsed: skip`, leaves it alone and says so).
///
/// `renewing`: this check is about to pay for the end; whether it is at
/// risk is asked again if it pays nothing (a veto, say), and otherwise at
/// the next check, which the payment's follow-ups bring soon. A membership
/// found due with less than `at_risk` left is not called at risk before
/// its renewal was even tried.
pub(super) fn assess(
    end: Option<i64>,
    now: i64,
    at_risk: Duration,
    renewing: bool,
    prev: &CheckState,
    next: &mut CheckState,
) -> Option<Alarm> {
    let end = end.or(prev.observed_end)?;
    next.at_risk_for = prev.at_risk_for.filter(|e| *e == end);
    next.lapsed_for = prev.lapsed_for.filter(|e| *e == end);
    if end <= now {
        let watched = next.at_risk_for.is_some()
            || prev.observed_end == Some(end) && prev.checked_at.is_some_and(|c| c < end);
        if watched && next.lapsed_for.is_none() {
            next.lapsed_for = Some(end);
            return Some(Alarm::Lapsed { end });
        }
        return None;
    }
    if end - now <= at_risk.as_secs() as i64 && next.at_risk_for.is_none() && !renewing {
        next.at_risk_for = Some(end);
        return Some(Alarm::AtRisk { end });
    }
    None
}

impl Engine {
    /// Raises `alarm` for `rule`'s membership of `account`, naming the
    /// order for that end (the newest, under any rule or manual) and what
    /// the check decided (`decision`).
    pub(super) async fn raise(
        &self,
        rule: &Rule,
        account: &Account,
        alarm: Alarm,
        decision: &str,
        now: i64,
    ) {
        let end = match alarm {
            Alarm::AtRisk { end } | Alarm::Lapsed { end } => end,
        };
        let order = match self.store.orders_of(&account.name).await {
            Ok(orders) => newest_for(orders, rule, end),
            Err(e) => {
                tracing::warn!(account = %account.name, error = %e, "cannot read the account's orders for the alert");
                None
            }
        };
        let state = order.as_ref().map_or("none", state_of);
        let what = match &order {
            Some(o) => format!("order {} is {state}", o.key),
            None => "no order".to_owned(),
        };
        let (kind, detail) = match alarm {
            Alarm::AtRisk { .. } => (
                EventKind::RenewalAtRisk,
                format!(
                    "{} ends {} ({}) and no renewal has moved it: {what} ({decision})",
                    rule.membership,
                    crate::timefmt::relative(end - now),
                    crate::timefmt::utc(end)
                ),
            ),
            Alarm::Lapsed { .. } => (
                EventKind::MembershipLapsed,
                format!(
                    "{} lapsed at {} and no renewal had moved it: {what} ({decision})",
                    rule.membership,
                    crate::timefmt::utc(end)
                ),
            ),
        };
        let mut ev = match &order {
            Some(o) => Event::new(kind, now, detail).order(o),
            None => Event::new(kind, now, detail),
        };
        ev = ev.about(&account.name, &rule.name);
        ev.state = Some(state.to_owned());
        ev.membership = Some(rule.membership.to_string());
        ev.old_end = Some(end);
        ev.reason = Some(decision.to_owned());
        self.emit(ev).await;
    }

    /// Wakes a check of the pair at the moments the end enters `at_risk`
    /// and passes, when the next regular check would come later.
    pub(super) fn wake_for_end(
        &self,
        rule: &Rule,
        account: &Account,
        end: Option<i64>,
        now: i64,
        tz: chrono_tz::Tz,
    ) {
        let Some(end) = end else { return };
        let next = rule.check.next_after(now, tz).unwrap_or(i64::MAX);
        let risk = end - rule.at_risk.as_secs() as i64;
        for moment in [risk, end + 1] {
            if moment > now && moment < next {
                let delay = Duration::from_secs((moment - now) as u64);
                self.follow_up(&rule.name, &account.name, delay);
            }
        }
    }
}

/// The newest order for `rule`'s membership of the account that was
/// decided on `end` (any rule's, or a manual one).
fn newest_for(orders: Vec<Order>, rule: &Rule, end: i64) -> Option<Order> {
    orders
        .into_iter()
        .filter(|o| o.membership == rule.membership && o.observed_end == Some(end))
        .max_by_key(|o| o.created_at)
}

/// An order's state as an operator reads it: a paid order whose end did
/// not move by its deadline is `unverified`.
fn state_of(o: &Order) -> &'static str {
    match (o.state, &o.verification) {
        (OrderState::Succeeded, Verification::Unverified { .. }) => "unverified",
        (state, _) => state.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const RISK: Duration = Duration::from_secs(3600);

    fn seen(end: i64, at: i64) -> CheckState {
        CheckState {
            checked_at: Some(at),
            observed_end: Some(end),
            ..CheckState::default()
        }
    }

    /// Runs one check over `prev`: its alarm and the state it leaves.
    fn check(end: Option<i64>, now: i64, prev: &CheckState) -> (Option<Alarm>, CheckState) {
        let mut next = CheckState {
            checked_at: Some(now),
            observed_end: end.or(prev.observed_end),
            ..CheckState::default()
        };
        (assess(end, now, RISK, false, prev, &mut next), next)
    }

    #[test]
    fn an_end_that_comes_near_then_passes_alarms_once_each() {
        let end = NOW + 2 * 3600;
        let (alarm, s) = check(Some(end), NOW, &CheckState::default());
        assert_eq!(alarm, None, "outside at_risk");
        let (alarm, s) = check(Some(end), end - 3600, &s);
        assert_eq!(alarm, Some(Alarm::AtRisk { end }));
        let (alarm, s) = check(Some(end), end - 60, &s);
        assert_eq!(alarm, None, "once per end");
        // The read fails at the end: the last end seen is watched.
        let (alarm, s) = check(None, end, &s);
        assert_eq!(alarm, Some(Alarm::Lapsed { end }));
        let (alarm, _) = check(Some(end), end + 600, &s);
        assert_eq!(alarm, None, "once per end");
    }

    #[test]
    fn a_renewal_that_moves_the_end_resets_the_watch() {
        let end = NOW + 600;
        let (alarm, s) = check(Some(end), NOW, &CheckState::default());
        assert_eq!(alarm, Some(Alarm::AtRisk { end }));
        let moved = end + 30 * 86_400;
        let (alarm, s) = check(Some(moved), NOW + 60, &s);
        assert_eq!(alarm, None);
        assert_eq!((s.at_risk_for, s.lapsed_for), (None, None));
    }

    #[test]
    fn a_check_that_renews_asks_again_later() {
        let end = NOW + 600;
        let mut next = CheckState::default();
        let prev = CheckState::default();
        assert_eq!(assess(Some(end), NOW, RISK, true, &prev, &mut next), None);
        assert_eq!(next.at_risk_for, None);
        let (alarm, _) = check(Some(end), NOW + 5, &next);
        assert_eq!(
            alarm,
            Some(Alarm::AtRisk { end }),
            "the renewal did not move it"
        );
    }

    #[test]
    fn an_end_passed_while_vipd_was_down_alarms_at_its_next_check() {
        let end = NOW + 7 * 86_400;
        let (_, s) = check(Some(end), NOW, &CheckState::default());
        let (alarm, _) = check(Some(end), end + 86_400, &s);
        assert_eq!(alarm, Some(Alarm::Lapsed { end }));
    }

    #[test]
    fn a_membership_lapsed_at_first_sight_is_not_a_lapse_vipd_let_happen() {
        let (alarm, s) = check(Some(NOW - 86_400), NOW, &CheckState::default());
        assert_eq!(alarm, None);
        let (alarm, _) = check(Some(NOW - 86_400), NOW + 60, &s);
        assert_eq!(alarm, None);
        assert_eq!(check(None, NOW, &CheckState::default()).0, None);
    }

    #[test]
    fn at_risk_zero_raises_only_the_lapse() {
        let end = NOW + 10;
        let mut next = CheckState::default();
        assert_eq!(
            assess(
                Some(end),
                NOW,
                Duration::ZERO,
                false,
                &seen(end, NOW - 5),
                &mut next
            ),
            None
        );
        let prev = seen(end, NOW);
        assert_eq!(
            assess(Some(end), end, Duration::ZERO, false, &prev, &mut next),
            Some(Alarm::Lapsed { end })
        );
    }
}
