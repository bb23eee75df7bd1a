//! `rules:`: which accounts to keep, how often to check, when to renew,
//! with what product, and within what budget.
//!
//! Cron expressions mean what crontab(5) says: 5 fields (minute hour
//! day-of-month month day-of-week), or 6 with seconds first; day-of-week
//! 0-7 with 0 and 7 both Sunday, names (`MON`, `JAN`) in any case; when
//! both day fields are restricted a day matching *either* fires (crontab
//! ORs them; the `cron` crate used before ANDed them, so `0 9 1 * 1` on a
//! Sunday the 29th fired in February), and, as Vixie cron does, a day
//! field that starts with `*` (`*/2`) counts as unrestricted, so the two
//! are ANDed. The nicknames `@hourly` to `@yearly` are accepted. Parsing
//! and the search are `croner`'s; times are in the daemon's zone.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;

use super::Product;
pub use super::raw::WhenLapsed;
pub use crate::model::Budget;
use crate::model::Membership;

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name; part of every decision key.
    pub name: Arc<str>,
    /// Names of the accounts it covers, in config order. Shared (`Arc`)
    /// with the scheduler's wakes, which hold one pair per account: with
    /// 10,000 accounts, copies would be two allocations a pair.
    pub accounts: Vec<Arc<str>>,
    /// The same accounts, resolved when the configuration was built: their
    /// places in `Config::accounts` (see [`super::Config::accounts_of`]).
    pub(in crate::config) resolved: Vec<u32>,
    /// When to check.
    pub check: Check,
    /// Which `*_end` to watch.
    pub membership: Membership,
    /// Renew when the end is this close.
    pub renew_before: Duration,
    /// What to buy, resolved when the configuration was built (shared
    /// with `Config::products`).
    pub product: Arc<Product>,
    /// What to do when already lapsed.
    pub when_lapsed: WhenLapsed,
    /// Spending caps.
    pub budget: Budget,
    /// Sends per decision key, at most.
    pub max_attempts: u32,
    /// How long after success the new end must show.
    pub verify_within: Duration,
    /// Alert when the end is this close and no renewal has moved it.
    pub at_risk: Duration,
    /// While a renewal awaits approval: escalate as the end comes within
    /// each of these, longest first.
    pub escalate: Vec<Duration>,
}

/// When a rule checks its accounts.
#[derive(Debug, Clone)]
pub enum Check {
    /// A cron schedule.
    Cron {
        /// As written.
        expr: String,
        /// Compiled.
        schedule: Box<croner::Cron>,
    },
    /// A fixed interval.
    Every(Duration),
}

impl Check {
    /// Parses a cron expression written the crontab way (see module doc).
    pub fn cron(expr: &str) -> Result<Check, String> {
        use croner::parser::{CronParser, Seconds, Year};
        let mut fields: Vec<&str> = expr.split_whitespace().collect();
        let n = fields.len();
        let nickname = n == 1 && fields[0].starts_with('@');
        if !(5..=6).contains(&n) && !nickname {
            return Err(format!(
                "cron {expr:?} has {n} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
            ));
        }
        // Vixie cron: a day field written `*…` leaves days unrestricted,
        // so a day must match both (croner's `+` on the weekday field).
        let and;
        if n >= 5 {
            let (dom, dow) = (fields[n - 3], fields[n - 1]);
            if dom != "*" && dow != "*" && (dom.starts_with('*') || dow.starts_with('*')) {
                and = format!("+{dow}");
                fields[n - 1] = &and;
            }
        }
        let schedule = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&fields.join(" "))
            .map_err(|e| format!("cron {expr:?}: {e}"))?;
        // A pattern such as `0 0 30 2 *` parses but never fires. Search a
        // leap cycle and a little (Feb 29 fires within 8 years).
        let now = chrono::Utc::now();
        let horizon = now + chrono::Duration::days(9 * 366);
        match schedule.find_next_occurrence(&now, false) {
            Ok(t) if t <= horizon => {}
            _ => return Err(format!("cron {expr:?} never fires")),
        }
        Ok(Check::Cron {
            expr: expr.to_owned(),
            schedule: Box::new(schedule),
        })
    }

    /// The first time strictly after `after` (unix seconds) it fires.
    pub(crate) fn next_after(&self, after: i64, tz: Tz) -> Option<i64> {
        match self {
            Check::Every(d) => Some(after + (d.as_secs() as i64).max(1)),
            Check::Cron { schedule, .. } => {
                let at = tz.timestamp_opt(after, 0).single()?;
                schedule
                    .find_next_occurrence(&at, false)
                    .ok()
                    .map(|t| t.timestamp())
            }
        }
    }

    /// The gap between two consecutive fires after `at`: the interval.
    pub fn interval(&self, at: i64, tz: Tz) -> Duration {
        match self {
            Check::Every(d) => *d,
            Check::Cron { .. } => {
                let first = self.next_after(at, tz).unwrap_or(at);
                let second = self.next_after(first, tz).unwrap_or(first + 60);
                Duration::from_secs((second - first).max(1) as u64)
            }
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Cron { expr, .. } => write!(f, "cron {expr:?}"),
            Check::Every(d) => write!(f, "every {}", crate::units::HumanDuration(*d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_cron() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let every10 = Check::cron("*/10 * * * *").unwrap();
        // 2026-11-21T09:14:29Z
        let t = 1_795_252_469;
        let next = every10.next_after(t, tz).unwrap();
        assert_eq!(next % 600, 0);
        assert!(next > t && next - t <= 600);
        assert_eq!(every10.interval(t, tz), Duration::from_secs(600));
        let six = Check::cron("30 0 9 * * *").unwrap();
        let n = six.next_after(t, tz).unwrap();
        // 09:00:30 in Shanghai is 01:00:30 UTC.
        assert_eq!(n.rem_euclid(86_400), 3_630);
        // Monday to Friday at 09:00 Shanghai never lands on a weekend there.
        let weekdays = Check::cron("0 9 * * 1-5").unwrap();
        let mut at = t;
        for _ in 0..10 {
            at = weekdays.next_after(at, tz).unwrap();
            let local = tz.timestamp_opt(at, 0).unwrap();
            use chrono::Datelike;
            assert!(local.weekday().number_from_monday() <= 5, "{local}");
        }
        for bad in ["* * * *", "61 * * * *", "* * * * * * * *", "0 0 30 2 *"] {
            assert!(Check::cron(bad).is_err(), "{bad}");
        }
    }

    /// Next fire times worked out by hand from crontab(5), from Sunday
    /// 2026-11-29 12:00 UTC. Day-of-month and day-of-week are ORed when
    /// both are restricted (`0 9 1 * 1` is the 1st *or* any Monday).
    #[test]
    fn next_fires_follow_crontab() {
        use chrono::{DateTime, Utc};
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        let start = at("2026-11-29T12:00:00Z");
        assert_eq!(
            Utc.timestamp_opt(start, 0)
                .unwrap()
                .format("%a")
                .to_string(),
            "Sun"
        );
        let table = [
            ("UTC", "0 9 1 * 1", "2026-11-30T09:00:00Z"), // Monday, not Feb 1
            ("UTC", "0 9 1-7 * 5", "2026-12-01T09:00:00Z"), // the 1st, not Friday 4th
            ("UTC", "0 9 13 * 5", "2026-12-04T09:00:00Z"), // a Friday, not Friday 13th
            ("UTC", "30 8 15 * MON-FRI", "2026-11-30T08:30:00Z"),
            ("UTC", "0 9 * * 1", "2026-11-30T09:00:00Z"),
            ("UTC", "0 9 * * mon", "2026-11-30T09:00:00Z"),
            ("UTC", "0 9 1 * *", "2026-12-01T09:00:00Z"),
            ("UTC", "0 9 * * 0", "2026-12-06T09:00:00Z"),
            ("UTC", "0 9 * * 7", "2026-12-06T09:00:00Z"),
            ("UTC", "0 13 * * SUN", "2026-11-29T13:00:00Z"),
            ("UTC", "0 0 * * 1-5", "2026-11-30T00:00:00Z"),
            ("UTC", "0 0 29 2 *", "2028-02-29T00:00:00Z"),
            ("UTC", "*/15 * * * *", "2026-11-29T12:15:00Z"),
            ("UTC", "0 9 * DEC *", "2026-12-01T09:00:00Z"),
            ("UTC", "0 9 */10 * *", "2026-12-01T09:00:00Z"),
            ("UTC", "30 0 9 * * *", "2026-11-30T09:00:30Z"),
            // Vixie: a day field starting with `*` ANDs: odd days that are
            // Mondays (the 30th is even).
            ("UTC", "0 9 */2 * 1", "2026-12-07T09:00:00Z"),
            ("UTC", "0 9 1 * */2", "2026-12-01T09:00:00Z"),
            ("UTC", "@daily", "2026-11-30T00:00:00Z"),
            ("UTC", "@weekly", "2026-12-06T00:00:00Z"),
            ("UTC", "@monthly", "2026-12-01T00:00:00Z"),
            // 20:00 in Shanghai at the start: 09:00 there tomorrow.
            ("Asia/Shanghai", "0 9 * * *", "2026-11-30T01:00:00Z"),
            // Monday 00:00 in Shanghai is still Sunday in UTC.
            ("Asia/Shanghai", "0 0 * * 1", "2026-11-29T16:00:00Z"),
        ];
        for (tz, expr, want) in table {
            let tz: Tz = tz.parse().unwrap();
            let got = Check::cron(expr)
                .unwrap_or_else(|e| panic!("{expr}: {e}"))
                .next_after(start, tz);
            assert_eq!(
                got.map(|t| Utc.timestamp_opt(t, 0).unwrap().to_rfc3339()),
                Some(Utc.timestamp_opt(at(want), 0).unwrap().to_rfc3339()),
                "{expr} in {tz}"
            );
        }
    }

    #[test]
    fn every_interval() {
        let c = Check::Every(Duration::from_secs(90));
        let tz: Tz = "UTC".parse().unwrap();
        assert_eq!(c.next_after(100, tz), Some(190));
        assert_eq!(c.to_string(), "every 90s");
    }
}
