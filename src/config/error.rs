//! Configuration errors that point at the file: `rules.yaml:12:5: ...`,
//! with "did you mean" for misspelt keys and values.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The file, as given on the command line.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, naming the entry (`provider wapi: ...`).
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// A single error without a location.
    pub fn one(file: &Path, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }])
    }

    /// Turns a YAML/serde error into ours: location kept, the trailing
    /// " at line L column C" dropped (we print it in front), and a
    /// suggestion added for unknown keys and values.
    pub(crate) fn from_yaml(file: &Path, err: &yaml_serde::Error) -> ConfigErrors {
        let mut message = err.to_string();
        if let Some(pos) = message.rfind(" at line ") {
            message.truncate(pos);
        }
        if let Some(hint) = did_you_mean(&message) {
            message.push_str(&format!(" (did you mean `{hint}`?)"));
        }
        let at = err.location().map(|l| (l.line(), l.column()));
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            message,
        }])
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" and "unknown
/// variant ..." messages: the closest expected name, if one is close.
pub(crate) fn did_you_mean(message: &str) -> Option<String> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    let (given, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    closest(given, candidates)
}

/// The candidate nearest to `given` by edit distance, if near enough to be
/// a typo rather than a different word.
pub(crate) fn closest<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (given.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(given, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let msg =
            "providers.wapi: unknown field `secert`, expected one of `base_url`, `appid`, `secret`";
        assert_eq!(did_you_mean(msg).as_deref(), Some("secret"));
        let msg = "unknown field `zzzzzz`, expected one of `base_url`, `appid`";
        assert_eq!(did_you_mean(msg), None);
        let msg = "unknown variant `qq_connct`, expected `qq_connect` or `recharge`";
        assert_eq!(did_you_mean(msg).as_deref(), Some("qq_connect"));
    }
}
