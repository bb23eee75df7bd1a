//! `rules.yaml`: read ([`raw`]), then validated into runtime values
//! ([`Config`]). Runtime code never re-checks what is here: a `Config`
//! that exists is valid.
//!
//! Validation collects every problem it can find, each naming the file,
//! `line:col` where it can, and the entry (`provider wapi`, `account
//! alice`), so `vipd check` shows them all at once.

mod build;
mod depth;
mod diagnose;
pub mod error;
mod lint;
mod model;
pub mod raw;
pub mod rules;
pub mod secret;
pub mod spans;
mod stream;

use std::path::{Path, PathBuf};

pub use crate::model::{Budget, CallbackMapping, Membership, SandboxMode, Secret};
use build::Builder;
pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use raw::Access;
pub use rules::{Check, Rule, WhenLapsed};
pub use secret::SecretSource;

/// The JSON Schema of `rules.yaml` (`vipd schema`, committed as
/// `vipd.schema.json` for editors: `# yaml-language-server:
/// $schema=./vipd.schema.json`), generated from the very types the file is
/// read into ([`raw`]), so it cannot drift from them: every key with its
/// description (the field's doc comment) and default,
/// `additionalProperties: false` where unknown keys are refused, money as
/// `multipleOf: 0.01`.
pub fn schema() -> String {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<raw::RawConfig>();
    schema.insert(
        "$id".into(),
        "https://raw.githubusercontent.com/vipd/vipd/main/vipd.schema.json".into(),
    );
    schema.insert("title".into(), "vipd rules.yaml".into());
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The rule name manual orders (`vipd recharge`) are recorded under: no
/// rule of the file may have it.
pub const MANUAL_RULE: &str = "manual";

/// When a manual order is due for a membership no rule watches: within
/// three days of its end (the window the README's rules use).
pub(crate) const MANUAL_RENEW_BEFORE: std::time::Duration =
    std::time::Duration::from_secs(3 * 86_400);

impl Config {
    /// `--state-dir`: the state folder, over `$STATE_DIRECTORY` and
    /// `daemon.state_dir`.
    pub(crate) fn set_state_dir(&mut self, dir: PathBuf) {
        self.daemon.state_dir = dir;
        self.daemon.state_dir_from = StateDirFrom::CommandLine;
    }

    /// Reads and validates a file, every secret included: what the
    /// daemon and anything that pays or reads upstream needs.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_outside(path)?.every_secret()
    }

    /// [`Config::load`] for commands an operator runs beside the service
    /// (`check`, `status`, `orders`, `plan` through the daemon): a
    /// `${credential:}` only the service can read is left empty and listed
    /// in [`Config::unavailable`] instead of failing the whole file.
    pub(crate) fn load_outside(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one(path, format!("cannot read: {e}")))?;
        Config::parse_outside(&text, path)
    }

    /// Validates `text` as if read from `path`, every secret included.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        Config::parse_outside(text, path)?.every_secret()
    }

    /// This configuration if every secret was read, else the located
    /// errors of those that could not be.
    fn every_secret(self) -> Result<Config, ConfigErrors> {
        if self.unavailable.is_empty() {
            Ok(self)
        } else {
            Err(ConfigErrors(
                self.unavailable.into_iter().map(|u| u.error).collect(),
            ))
        }
    }

    /// [`Config::parse`] as [`Config::load_outside`] reads.
    pub(crate) fn parse_outside(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        if let Some(at) = depth::too_deep(text) {
            let (line, column) = error::line_col(text, at);
            return Err(ConfigErrors(vec![error::ConfigError {
                file: path.to_owned(),
                line: Some(line),
                column: Some(column),
                message: format!(
                    "brackets nested more than {} deep; refused before parsing",
                    depth::MAX_FLOW_DEPTH
                ),
            }]));
        }
        let raw: raw::RawConfig = match stream::from_str(text) {
            Some(raw) => {
                #[cfg(debug_assertions)]
                stream::assert_as_yaml_serde_reads(text, &raw);
                raw
            }
            None => Config::read_declined(text, path)?,
        };
        Builder::new(text, path).build(raw)
    }

    /// The file as `yaml_serde` reads it, when the fast path declined it:
    /// the configuration, or every error it has, each at its position.
    fn read_declined(text: &str, path: &Path) -> Result<raw::RawConfig, ConfigErrors> {
        match yaml_serde::from_str(text) {
            Ok(raw) => Ok(raw),
            // Not a file of the right shape: every such error, each at its
            // key (a syntax error is the parser's one).
            Err(e) => {
                let all = match yaml_serde::from_str::<yaml_serde::Value>(text) {
                    Ok(value) => diagnose::all(path, value, &spans::Spans::parse(text)),
                    Err(_) => Vec::new(),
                };
                Err(if all.is_empty() {
                    ConfigErrors::from_yaml(path, &e)
                } else {
                    ConfigErrors(all)
                })
            }
        }
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<&Account> {
        let at = self
            .account_index
            .binary_search_by(|&i| self.accounts[i as usize].name.as_str().cmp(name))
            .ok()?;
        Some(&self.accounts[self.account_index[at] as usize])
    }

    /// The accounts a rule covers, in config order: resolved when the
    /// configuration was built, so none can be missing.
    pub(crate) fn accounts_of<'a>(
        &'a self,
        rule: &'a Rule,
    ) -> impl Iterator<Item = &'a Account> + 'a {
        rule.resolved.iter().map(|&i| &self.accounts[i as usize])
    }

    /// The `qq_connect` provider of an account.
    pub(crate) fn reader_of(&self, account: &Account) -> &QqConnectProvider {
        match self.providers.get(&account.provider) {
            Some(Provider::QqConnect(p)) => p,
            _ => unreachable!(
                "validated: account {} has a qq_connect provider",
                account.name
            ),
        }
    }

    /// The `recharge` provider of a product.
    pub(crate) fn seller_of(&self, product: &Product) -> &RechargeProvider {
        match self.providers.get(&product.provider) {
            Some(Provider::Recharge(p)) => p,
            _ => unreachable!(
                "validated: product {} has a recharge provider",
                product.name
            ),
        }
    }

    /// When a manual order for `account`'s `membership` is due: within
    /// the widest `renew_before` of the rules that watch it, or
    /// [`MANUAL_RENEW_BEFORE`] when none does. An operator's order is held
    /// to the same window the rules keep, so it cannot stack periods.
    pub(crate) fn manual_window(
        &self,
        account: &str,
        membership: Membership,
    ) -> std::time::Duration {
        self.rules
            .iter()
            .filter(|r| r.membership == membership && r.accounts.iter().any(|a| &**a == account))
            .map(|r| r.renew_before)
            .max()
            .unwrap_or(MANUAL_RENEW_BEFORE)
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.name == name)
    }

    /// How long a paid order recorded under rule `name` has for its new
    /// end to show: the rule's `verify_within`, or [`VERIFY_WITHIN`] for
    /// manual orders and rules no longer in the file.
    pub fn verify_within(&self, name: &str) -> std::time::Duration {
        self.rule(name).map_or(VERIFY_WITHIN, |r| r.verify_within)
    }

    /// Points every provider at `base_url` (the in-process sandbox).
    pub fn point_providers_at(&mut self, base_url: &str) {
        for p in self.providers.values_mut() {
            p.set_base_url(base_url);
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_jsonl;
