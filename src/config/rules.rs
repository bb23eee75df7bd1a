//! `rules:`: which accounts to keep, how often to check, when to renew,
//! with what product, and within what budget.
//!
//! Cron expressions are written the crontab way: 5 fields (a seconds field
//! `0` is prefixed) or 6 with seconds first, and day-of-week numbered like
//! crontab (0 or 7 = Sunday, 1 = Monday). The `cron` crate numbers days
//! 1-7 from Sunday, so numeric day-of-week fields are translated: without
//! that, `1-5` would silently mean Sunday to Thursday.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;

pub use super::raw::WhenLapsed;
use crate::units::Fen;
use crate::upstream::vipinfo::Membership;

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name; part of every decision key.
    pub name: Arc<str>,
    /// Names of the accounts it covers, in config order. Shared (`Arc`)
    /// with the scheduler's wakes, which hold one pair per account: with
    /// 10,000 accounts, copies would be two allocations a pair.
    pub accounts: Vec<Arc<str>>,
    /// When to check.
    pub check: Check,
    /// Which `*_end` to watch.
    pub membership: Membership,
    /// Renew when the end is this close.
    pub renew_before: Duration,
    /// What to buy.
    pub product: String,
    /// What to do when already lapsed.
    pub when_lapsed: WhenLapsed,
    /// Spending caps.
    pub budget: Budget,
    /// Sends per decision key, at most.
    pub max_attempts: u32,
    /// How long after success the new end must show.
    pub verify_within: Duration,
}

/// Spending caps of a rule, per day and per month in the daemon's timezone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Per calendar day.
    pub per_day: Option<Fen>,
    /// Per calendar month.
    pub per_month: Option<Fen>,
}

/// When a rule checks its accounts.
#[derive(Debug, Clone)]
pub enum Check {
    /// A cron schedule.
    Cron {
        /// As written.
        expr: String,
        /// Compiled (6+ fields, crate day numbering).
        schedule: Box<cron::Schedule>,
    },
    /// A fixed interval.
    Every(Duration),
}

impl Check {
    /// Parses a cron expression written the crontab way (see module doc).
    pub fn cron(expr: &str) -> Result<Check, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let mut six: Vec<String> = match fields.len() {
            5 => std::iter::once("0")
                .chain(fields.iter().copied())
                .map(str::to_owned)
                .collect(),
            6 => fields.iter().map(|s| (*s).to_owned()).collect(),
            n => {
                return Err(format!(
                    "cron {expr:?} has {n} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
                ));
            }
        };
        six[5] =
            translate_weekdays(&six[5]).map_err(|e| format!("cron {expr:?}: day-of-week: {e}"))?;
        let schedule =
            cron::Schedule::from_str(&six.join(" ")).map_err(|e| format!("cron {expr:?}: {e}"))?;
        if schedule.upcoming(chrono::Utc).next().is_none() {
            return Err(format!("cron {expr:?} never fires"));
        }
        Ok(Check::Cron {
            expr: expr.to_owned(),
            schedule: Box::new(schedule),
        })
    }

    /// The first time strictly after `after` (unix seconds) it fires.
    pub fn next_after(&self, after: i64, tz: Tz) -> Option<i64> {
        match self {
            Check::Every(d) => Some(after + (d.as_secs() as i64).max(1)),
            Check::Cron { schedule, .. } => {
                let at = tz.timestamp_opt(after, 0).single()?;
                schedule.after(&at).next().map(|t| t.timestamp())
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

/// Turns a crontab day-of-week field (0-7, 0 and 7 = Sunday) into the cron
/// crate's numbering (1-7, 1 = Sunday). Names, `*` and `?` pass through.
pub fn translate_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" || field.chars().any(|c| c.is_ascii_alphabetic()) {
        return Ok(field.to_owned());
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .map_err(|_| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("step 0 in {part:?}"));
        }
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (parse_day(a)?, parse_day(b)?),
                None => {
                    let d = parse_day(r)?;
                    (d, if part.contains('/') { 7 } else { d })
                }
            },
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    let list: Vec<String> = (0..7)
        .filter(|&d| days[d])
        .map(|d| (d + 1).to_string())
        .collect();
    Ok(list.join(","))
}

fn parse_day(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(d) if d <= 7 => Ok(d),
        _ => Err(format!("{s:?} is not a day 0-7")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_follow_crontab_numbering() {
        // crate numbering: 1 = Sunday ... 7 = Saturday
        assert_eq!(translate_weekdays("1-5").unwrap(), "2,3,4,5,6"); // Mon-Fri
        assert_eq!(translate_weekdays("0").unwrap(), "1");
        assert_eq!(translate_weekdays("7").unwrap(), "1");
        assert_eq!(translate_weekdays("0,6").unwrap(), "1,7");
        assert_eq!(translate_weekdays("5-7").unwrap(), "1,6,7");
        assert_eq!(translate_weekdays("*/2").unwrap(), "1,3,5,7");
        assert_eq!(translate_weekdays("MON-FRI").unwrap(), "MON-FRI");
        assert_eq!(translate_weekdays("*").unwrap(), "*");
        assert!(translate_weekdays("8").is_err());
        assert!(translate_weekdays("5-1").is_err());
    }

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

    #[test]
    fn every_interval() {
        let c = Check::Every(Duration::from_secs(90));
        let tz: Tz = "UTC".parse().unwrap();
        assert_eq!(c.next_after(100, tz), Some(190));
        assert_eq!(c.to_string(), "every 90s");
    }
}
