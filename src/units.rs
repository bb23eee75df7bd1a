//! Value types that appear in configuration and on the wire: money in
//! integer fen, human durations (`90s`, `10m`, `3d`), and request rates
//! (`20/s`).
//!
//! Money is never a float: the vendor quotes prices as decimal yuan strings
//! (`"12.11"`) or JSON numbers, and budgets are compared to the fen. Every
//! parser here is strict and its error says what it expected.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An amount of money in fen (1 yuan = 100 fen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fen(pub i64);

/// Why a money string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid amount {input:?}: {reason} (expected decimal yuan such as 12.50)")]
pub struct MoneyError {
    /// What was given, for the message.
    input: String,
    /// What is wrong with it.
    reason: &'static str,
}

impl Fen {
    /// Zero fen.
    pub(crate) const ZERO: Fen = Fen(0);

    /// Parses decimal yuan (`"12"`, `"12.5"`, `"12.50"`, `"-3.01"`) exactly.
    /// More than two decimals is an error, never a rounding.
    pub(crate) fn parse_yuan(input: &str) -> Result<Fen, MoneyError> {
        let err = |reason| MoneyError {
            input: input.chars().take(40).collect(),
            reason,
        };
        let s = input.trim();
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("not a number"));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
            return Err(err("not a number"));
        }
        if frac.len() > 2 {
            return Err(err("more than two decimals (fen is the smallest unit)"));
        }
        let whole: i64 = whole.parse().map_err(|_| err("too large"))?;
        let mut fen_part: i64 = frac.parse().unwrap_or(0);
        if frac.len() == 1 {
            fen_part *= 10;
        }
        let total = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(fen_part))
            .ok_or_else(|| err("too large"))?;
        Ok(Fen(if negative { -total } else { total }))
    }

    /// Interprets a JSON/YAML float as yuan through its shortest decimal
    /// representation (`12.11_f64` prints as `12.11`), so no binary rounding
    /// leaks into the amount.
    pub(crate) fn from_f64_yuan(value: f64) -> Result<Fen, MoneyError> {
        if !value.is_finite() {
            return Err(MoneyError {
                input: value.to_string(),
                reason: "not a finite number",
            });
        }
        Fen::parse_yuan(&format!("{value}"))
    }

    /// The amount in yuan as a float, for display and Lua only.
    pub(crate) fn as_yuan_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Fen {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fen::parse_yuan(s)
    }
}

impl schemars::JsonSchema for Fen {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "money".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An amount in yuan, at most two decimals (kept as integer fen; more is an error, never a rounding).",
            "oneOf": [
                { "type": "number", "minimum": 0, "multipleOf": 0.01 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]{1,2})?$" }
            ],
            "examples": [20.0, "12.50"]
        })
    }
}

impl Serialize for Fen {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Fen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount in yuan, such as 20.00")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Fen, E> {
                Fen::parse_yuan(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Fen, E> {
                v.checked_mul(100)
                    .map(Fen)
                    .ok_or_else(|| E::custom("amount too large"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Fen, E> {
                i64::try_from(v)
                    .ok()
                    .and_then(|v| v.checked_mul(100))
                    .map(Fen)
                    .ok_or_else(|| E::custom("amount too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Fen, E> {
                Fen::from_f64_yuan(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A duration written the human way: `500ms`, `90s`, `10m`, `1h30m`, `3d`,
/// `2w`. Serialized back in the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 500ms, 90s, 10m, 1h30m, 3d)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl HumanDuration {
    /// Parses one or more `<number><unit>` groups; units are `ms s m h d w`.
    pub fn parse(input: &str) -> Result<HumanDuration, DurationError> {
        let err = |reason| DurationError {
            input: input.chars().take(40).collect(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut total_ms: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("a number must come before each unit"));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit_ms: u64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 7 * 86_400_000,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total_ms = number
                .checked_mul(unit_ms)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| err("too large"))?;
        }
        Ok(HumanDuration(Duration::from_millis(total_ms)))
    }

    /// Parses an optionally signed duration (`-1d`, `+2h`): used where a
    /// point in time is given relative to now.
    pub(crate) fn parse_signed_secs(input: &str) -> Result<i64, DurationError> {
        let s = input.trim();
        let (sign, body) = match s.as_bytes().first() {
            Some(b'-') => (-1, &s[1..]),
            Some(b'+') => (1, &s[1..]),
            _ => (1, s),
        };
        let d = HumanDuration::parse(body)?;
        Ok(sign * i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX))
    }

    /// The std duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000)] {
            if ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        if ms % 60_000 == 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1_000 == 0 {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HumanDuration::parse(s)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d|w))+$",
            "description": "A duration: 500ms, 90s, 10m, 1h30m, 3d, 2w.",
            "examples": ["10m", "3d"]
        })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        HumanDuration::parse(&s).map_err(de::Error::custom)
    }
}

/// A request rate such as `20/s`, `100/m` or `1000/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// How many requests...
    pub count: u32,
    /// ...per this period.
    pub per: Duration,
}

impl Rate {
    /// The time between two requests at this rate.
    pub fn interval(self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid rate {s:?} (expected e.g. 20/s, 100/m, 1000/h)");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("invalid rate {s:?}: the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl schemars::JsonSchema for Rate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "rate".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+/[smh]$",
            "description": "Requests per second, minute or hour: 20/s, 100/m, 1000/h.",
            "examples": ["20/s"]
        })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_exactly() {
        let cases = [
            ("12", 1200),
            ("12.5", 1250),
            ("12.50", 1250),
            ("0.01", 1),
            ("-3.01", -301),
            (" 7.10 ", 710),
            ("198.72", 19872),
        ];
        for (input, fen) in cases {
            assert_eq!(Fen::parse_yuan(input), Ok(Fen(fen)), "{input}");
        }
        for bad in [
            "",
            "abc",
            "1.234",
            "1.",
            ".5",
            "1,5",
            "--1",
            "1e3",
            "99999999999999999999",
        ] {
            assert!(Fen::parse_yuan(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn money_from_float_uses_shortest_repr() {
        assert_eq!(Fen::from_f64_yuan(12.11), Ok(Fen(1211)));
        assert_eq!(Fen::from_f64_yuan(0.1 + 0.2).map_err(|_| ()), Err(()));
        assert_eq!(Fen::from_f64_yuan(20.0), Ok(Fen(2000)));
        assert!(Fen::from_f64_yuan(f64::NAN).is_err());
    }

    #[test]
    fn money_displays_two_decimals() {
        assert_eq!(Fen(1211).to_string(), "12.11");
        assert_eq!(Fen(5).to_string(), "0.05");
        assert_eq!(Fen(-301).to_string(), "-3.01");
    }

    #[test]
    fn durations_parse_and_print() {
        let cases = [
            ("500ms", 500),
            ("90s", 90_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("3d", 259_200_000),
            ("2w", 1_209_600_000),
        ];
        for (input, ms) in cases {
            let d = HumanDuration::parse(input).unwrap();
            assert_eq!(d.0.as_millis(), ms, "{input}");
        }
        assert_eq!(HumanDuration::parse("90s").unwrap().to_string(), "90s");
        assert_eq!(HumanDuration::parse("120s").unwrap().to_string(), "2m");
        assert_eq!(HumanDuration::parse("1h30m").unwrap().to_string(), "90m");
        for bad in ["", "10", "m", "10x", "1.5h", "-1d", "10 m"] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(HumanDuration::parse_signed_secs("-1d"), Ok(-86_400));
        assert_eq!(HumanDuration::parse_signed_secs("+2h"), Ok(7_200));
    }

    #[test]
    fn rates_parse() {
        let r: Rate = "20/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(50));
        assert_eq!("100/m".parse::<Rate>().unwrap().to_string(), "100/m");
        for bad in ["0/s", "20", "20/d", "x/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} should fail");
        }
    }
}
