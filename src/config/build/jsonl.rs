//! `accounts_file:`: accounts from a JSON Lines file, each line located.

use super::*;

/// Past this many, a file's syntax errors are summed up in one more line:
/// a file in the wrong format would otherwise print one per account.
const MAX_LINE_ERRORS: usize = 20;

impl Builder<'_> {
    /// Reads `accounts_file:` (resolved against the configuration's
    /// folder, kept as `accounts_path`): each account with its line number.
    /// A line that is not an account is an error naming the file, the line
    /// and the column; the other lines are still read.
    pub(super) fn accounts_file(&mut self, raw: Option<&str>) -> Vec<(raw::RawAccount, usize)> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let path = self.path_in(raw);
        self.accounts_path = Some(path.clone());
        // A device or a pipe (`/dev/zero`, `/dev/stdin`) would be read
        // without end: only a regular file is an accounts file.
        if let Ok(meta) = std::fs::metadata(&path) {
            if !meta.is_file() {
                self.error(
                    &["accounts_file"],
                    format!("accounts_file: {} is not a regular file", path.display()),
                );
                return Vec::new();
            }
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    &["accounts_file"],
                    format!("accounts_file: cannot read {}: {e}", path.display()),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut bad = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<raw::RawAccount>(line) {
                Ok(a) => out.push((a, i + 1)),
                Err(e) => {
                    bad += 1;
                    if bad <= MAX_LINE_ERRORS {
                        self.errors.push(ConfigError {
                            file: path.clone(),
                            line: Some(i + 1),
                            column: Some(e.column()),
                            message: format!("not an account: {}", without_position(&e)),
                        });
                    }
                }
            }
        }
        if bad > MAX_LINE_ERRORS {
            self.errors.push(ConfigError {
                file: path.clone(),
                line: None,
                column: None,
                message: format!(
                    "{} more lines are not accounts (each line must be one JSON object, such as {{\"name\": \"alice\", \"qq_number\": \"10001\", \"openid\": \"...\", \"access_token\": \"${{env:ALICE_TOKEN}}\"}})",
                    bad - MAX_LINE_ERRORS
                ),
            });
        }
        out
    }
}

/// serde_json's message without its " at line 1 column 7" (the error
/// already names the file's line and column).
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
