//! Unix seconds as text people read: `2026-11-21T09:14:29Z` and "in 2d 3h".

/// RFC 3339 in UTC. Days from the epoch are turned into a civil date with
/// Howard Hinnant's `civil_from_days` algorithm (proleptic Gregorian).
pub(crate) fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A signed span, coarse: `in 2d 3h`, `5m ago`, `now`.
pub fn relative(delta_secs: i64) -> String {
    let abs = delta_secs.unsigned_abs();
    let text = match abs {
        0 => return "now".into(),
        1..=59 => format!("{abs}s"),
        60..=3599 => format!("{}m", abs / 60),
        3600..=86_399 => format!("{}h {}m", abs / 3600, abs % 3600 / 60),
        _ => format!("{}d {}h", abs / 86_400, abs % 86_400 / 3600),
    };
    if delta_secs > 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_359_507_642), "2013-01-30T01:00:42Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn relative_spans() {
        assert_eq!(relative(0), "now");
        assert_eq!(relative(90), "in 1m");
        assert_eq!(relative(-7_200), "2h 0m ago");
        assert_eq!(relative(2 * 86_400 + 3 * 3600), "in 2d 3h");
    }
}
