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
    pub fn from_yaml(file: &Path, text: &str, err: &yaml_serde::Error) -> ConfigErrors {
        let mut message = err.to_string();
        if let Some(pos) = message.rfind(" at line ") {
            message.truncate(pos);
        }
        if let Some(hint) = did_you_mean(&message) {
            message.push_str(&format!(" (did you mean `{hint}`?)"));
        }
        let mut at = err.location().map(|l| (l.line(), l.column(), l.index()));
        // Inside a `kind:`-tagged entry serde buffers the mapping and
        // reports the entry's own position; point at the unknown key.
        if let (Some((_, _, index)), Some(key)) = (at, unknown_field(&message)) {
            if let Some(found) = find_key(text, index.min(text.len()), key, false) {
                let (line, col) = line_col(text, found);
                at = Some((line, col, found));
            }
        }
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            message,
        }])
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    message
        .split_once("unknown field `")?
        .1
        .split_once('`')
        .map(|(k, _)| k)
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" and "unknown
/// variant ..." messages: the closest expected name, if one is close.
pub fn did_you_mean(message: &str) -> Option<String> {
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
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
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

/// Finds where a key path such as `["providers", "wapi", "secret"]` is
/// written, for errors found after parsing (serde keeps no spans). Each
/// step is looked for after the previous one, as `step:` or, for list
/// entries, as `name: step`. Good enough to point a person at the right
/// line of block or flow YAML; `None` when a step cannot be found.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut from = 0;
    let mut found = None;
    for (depth, step) in path.iter().enumerate() {
        let at =
            find_key(text, from, step, depth == 0).or_else(|| find_name_entry(text, from, step))?;
        found = Some(at);
        from = at + step.len();
    }
    Some(line_col(text, found?))
}

fn find_key(text: &str, from: usize, key: &str, top_level: bool) -> Option<usize> {
    // An empty key (`"": 1`, reported as unknown field ``) is found
    // everywhere and would never advance the search: found by the config
    // fuzz target, which hung `vipd check` here.
    if key.is_empty() {
        return None;
    }
    let mut search = from;
    while let Some(rel) = text[search..].find(key) {
        let at = search + rel;
        let before = text[..at].chars().next_back();
        let after = &text[at + key.len()..];
        let boundary =
            before.is_none_or(|c| c == ' ' || c == '\n' || c == '{' || c == ',' || c == '-');
        let line_start = before.is_none_or(|c| c == '\n');
        if boundary
            && after.trim_start_matches(['"', '\'']).starts_with(':')
            && (!top_level || line_start)
        {
            return Some(at);
        }
        search = at + key.len();
    }
    None
}

fn find_name_entry(text: &str, from: usize, name: &str) -> Option<usize> {
    let mut search = from;
    while let Some(rel) = text[search..].find("name:") {
        let at = search + rel;
        let value = text[at + 5..].trim_start_matches(' ');
        let value = value.trim_start_matches(['"', '\'']);
        if value.starts_with(name)
            && value[name.len()..]
                .starts_with(|c: char| !c.is_alphanumeric() && c != '_' && c != '-')
        {
            return Some(at);
        }
        search = at + 5;
    }
    None
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

    #[test]
    fn locates_block_and_flow_keys() {
        let text = "daemon:\n  sandbox: true\nproviders:\n  qq: { kind: qq_connect, base_url: x }\n  wapi:\n    kind: recharge\n    secret: abc\naccounts:\n  - { name: alice, qq_number: 1 }\n  - name: bob\n    openid: o\n";
        assert_eq!(locate(text, &["providers", "wapi", "secret"]), Some((7, 5)));
        assert_eq!(
            locate(text, &["providers", "qq", "base_url"]),
            Some((4, 27))
        );
        assert_eq!(locate(text, &["accounts", "bob", "openid"]), Some((11, 5)));
        assert_eq!(locate(text, &["accounts", "alice"]), Some((9, 7)));
        assert_eq!(locate(text, &["nothing"]), None);
    }
}
