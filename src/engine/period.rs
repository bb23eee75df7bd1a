//! Budget periods: the calendar day and month of an instant in the
//! daemon's timezone (a budget day in Shanghai starts at 16:00 UTC).

use chrono::TimeZone;
use chrono_tz::Tz;

/// `("2026-11-21", "2026-11")` for `now` in `tz`.
pub fn periods(now: i64, tz: Tz) -> (String, String) {
    let local = tz
        .timestamp_opt(now, 0)
        .single()
        .unwrap_or_else(|| tz.timestamp_opt(0, 0).unwrap());
    (
        local.format("%Y-%m-%d").to_string(),
        local.format("%Y-%m").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_the_timezone() {
        let sh: Tz = "Asia/Shanghai".parse().unwrap();
        // 2026-11-30T15:59:59Z is 23:59:59 in Shanghai; one second later
        // it is December there and still November in UTC.
        let t = 1_796_054_399;
        assert_eq!(periods(t, sh), ("2026-11-30".into(), "2026-11".into()));
        assert_eq!(periods(t + 1, sh), ("2026-12-01".into(), "2026-12".into()));
        assert_eq!(
            periods(t + 1, Tz::UTC),
            ("2026-11-30".into(), "2026-11".into())
        );
    }
}
