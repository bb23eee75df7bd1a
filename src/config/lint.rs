//! Warnings: what does not make a file invalid but would surprise an
//! operator, each with the entry it is about (and so its line).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Config, spans};
use crate::model::Membership;
use crate::units::HumanDuration;

impl Config {
    /// Problems that do not make the file invalid but would surprise an
    /// operator: rules that would renew repeatedly, renewal windows with
    /// fewer than three checks in them, rules that select nobody, and
    /// literal secrets in a file other users can read.
    /// `now` (unix seconds) places calendar checks (`check: cron`).
    pub fn warnings(&self, now: i64) -> Vec<String> {
        self.warnings_at(now).into_iter().map(|(_, w)| w).collect()
    }

    /// [`Config::warnings`], each with the line and column of the entry
    /// it is about, when it is about one. The file is read again and parsed
    /// for positions only when there is a warning to place, keeping only
    /// the positions of the entries warned about.
    pub(crate) fn located_warnings(&self, now: i64) -> Vec<(Option<spans::At>, String)> {
        let warnings = self.warnings_at(now);
        let asked: Vec<Vec<&str>> = warnings.iter().filter_map(|(p, _)| p.clone()).collect();
        let spans = (!asked.is_empty())
            .then(|| std::fs::read_to_string(&self.path).ok())
            .flatten()
            .map(|text| spans::Spans::parse_for(&text, &asked));
        warnings
            .into_iter()
            .map(|(path, w)| {
                let at = path
                    .zip(spans.as_ref())
                    .and_then(|(path, spans)| spans.locate(&path));
                (at, w)
            })
            .collect()
    }

    /// Each warning with the key path of the entry it is about.
    fn warnings_at(&self, now: i64) -> Vec<(Option<Vec<&str>>, String)> {
        let mut out: Vec<(Option<Vec<&str>>, String)> = Vec::new();
        if self.rules.is_empty() {
            out.push((
                None,
                "no rules: vipd will check and renew nothing (add a rule under rules:)".to_owned(),
            ));
        }
        for rule in &self.rules {
            let subject = format!("rule {}", rule.name);
            let key = |k: &'static str| Some(vec!["rules", &*rule.name, k]);
            if rule.accounts.is_empty() {
                out.push((key("accounts"), format!("{subject}: selects no account")));
            }
            let product = &rule.product;
            if rule.renew_before >= product.adds {
                out.push((key("renew_before"), format!(
                    "{subject}: renew_before ({}) is not smaller than what {} adds ({}): after each renewal the account is due again, so it would renew repeatedly",
                    HumanDuration(rule.renew_before),
                    product.name,
                    HumanDuration(product.adds)
                )));
            }
            if rule.at_risk > rule.renew_before {
                out.push((key("at_risk"), format!(
                    "{subject}: at_risk ({}) is longer than renew_before ({}): every renewal would be called at risk before it is even due",
                    HumanDuration(rule.at_risk),
                    HumanDuration(rule.renew_before)
                )));
            }
            let interval = rule.check.interval(now, self.daemon.timezone);
            if rule.renew_before < interval * 3 {
                out.push((key("check"), format!(
                    "{subject}: the renewal window ({}) holds fewer than three checks ({}); one failed check could let the membership lapse",
                    HumanDuration(rule.renew_before),
                    rule.check
                )));
            }
        }
        let mut covered: BTreeMap<(&str, Membership), &str> = BTreeMap::new();
        for rule in &self.rules {
            for account in &rule.accounts {
                if let Some(first) = covered.insert((account, rule.membership), &rule.name) {
                    out.push((Some(vec!["rules", &*rule.name]), format!(
                        "rules {first} and {} both renew {} for account {account}; only one order per period is ever paid, the other rule waits",
                        rule.name, rule.membership
                    )));
                }
            }
        }
        // With `daemon.sandbox: true` every provider points at the loopback
        // sandbox, so literal values are the sandbox's own, not secrets.
        if !self.daemon.sandbox && file_is_world_readable(&self.path) {
            let literal = &self.literal_secrets;
            const FIX: &str = "use ${env:..}, ${file:..} or ${credential:..}";
            // One line per secret reads well for a few; a file with an
            // access token per account would print thousands, so past a
            // handful they are summarised in one line.
            const ONE_BY_ONE: usize = 5;
            if literal.len() <= ONE_BY_ONE {
                for key in literal {
                    out.push((
                        Some(key.split('.').collect()),
                        format!("{key} is written literally in a file other users can read; {FIX}"),
                    ));
                }
            } else {
                out.push((Some(literal[0].split('.').collect()), format!(
                    "{} secrets are written literally in a file other users can read ({}, ... and {} more); {FIX}",
                    literal.len(),
                    literal[..3].join(", "),
                    literal.len() - 3
                )));
            }
        }
        if let Some(file) = &self.accounts_file {
            if !self.daemon.sandbox
                && file.literal_secrets > 0
                && file_is_world_readable(&file.path)
            {
                out.push((
                    Some(vec!["accounts_file"]),
                    format!(
                        "accounts_file: {} holds {} secrets written literally and other users can read it; chmod 600 it, or use ${{env:..}}, ${{file:..}} or ${{credential:..}}",
                        file.path.display(),
                        file.literal_secrets
                    ),
                ));
            }
        }
        out
    }
}

#[cfg(unix)]
fn file_is_world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(not(unix))]
fn file_is_world_readable(_: &Path) -> bool {
    false
}
