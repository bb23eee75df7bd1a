//! Reading numbers the way real upstream replies send them: as JSON numbers
//! or as numeric strings, sometimes missing, sometimes `""`.

use serde_json::Value;

/// Why a value is not a usable integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is not an integer: {value}")]
pub(crate) struct NotAnInteger {
    /// The field name, for the message.
    pub field: String,
    /// The offending value, shortened.
    pub value: String,
}

/// Reads an integer written as a number (`5`, `5.0`) or a numeric string
/// (`"5"`, `" 5 "`). Missing, `null` and `""` are `None`.
pub(crate) fn int_field(field: &str, value: Option<&Value>) -> Result<Option<i64>, NotAnInteger> {
    let bad = |v: &Value| NotAnInteger {
        field: field.to_owned(),
        value: shorten(&v.to_string()),
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_int_text(field, s),
        Some(v @ Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                integral_f64(n.as_f64()).map(Some).ok_or_else(|| bad(v))
            }
        }
        Some(v) => Err(bad(v)),
    }
}

/// Parses the integer text of `field`; `""` is `None`. `"12.0"` is
/// accepted, `"12.5"` not.
pub(crate) fn parse_int_text(field: &str, s: &str) -> Result<Option<i64>, NotAnInteger> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Ok(i) = t.parse::<i64>() {
        return Ok(Some(i));
    }
    integral_f64(t.parse::<f64>().ok())
        .map(Some)
        .ok_or_else(|| NotAnInteger {
            field: field.to_owned(),
            value: shorten(&format!("{s:?}")),
        })
}

fn integral_f64(f: Option<f64>) -> Option<i64> {
    let f = f?;
    // i64::MAX as f64 rounds up to 2^63, so the bound is exclusive.
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
}

/// Reads a text field: strings as they are, numbers printed, others `None`.
pub(crate) fn text_field(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Cuts a value for an error message (upstream garbage can be huge).
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_strings() {
        let cases = [
            (json!(5), Some(5)),
            (json!("5"), Some(5)),
            (json!(" 17 "), Some(17)),
            (json!(1359507642.0), Some(1359507642)),
            (json!("1359507642.0"), Some(1359507642)),
            (json!(""), None),
            (json!(null), None),
            (json!(-3), Some(-3)),
        ];
        for (v, want) in cases {
            assert_eq!(int_field("f", Some(&v)), Ok(want), "{v}");
        }
        assert_eq!(int_field("f", None), Ok(None));
        for bad in [
            json!("abc"),
            json!(1.5),
            json!("1e400"),
            json!([1]),
            json!({"a":1}),
            json!(true),
        ] {
            let e = int_field("codeid", Some(&bad)).unwrap_err();
            assert_eq!(e.field, "codeid");
        }
    }

    #[test]
    fn shorten_keeps_messages_small() {
        let long = "x".repeat(10_000);
        assert!(shorten(&long).chars().count() <= 81);
        assert_eq!(shorten("abc"), "abc");
    }
}
