//! The builder: a [`raw::RawConfig`] checked entry by entry into a
//! [`Config`], every error collected with its location.

mod budget;
mod entries;
mod jsonl;
mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::units::{Fen, HumanDuration};

/// Turns a [`raw::RawConfig`] into a [`Config`], collecting errors.
pub(super) struct Builder<'a> {
    text: &'a str,
    /// Where each entry is, from the parser: built at the first error
    /// (a valid file never needs it).
    spans: std::cell::OnceCell<spans::Spans>,
    path: &'a Path,
    base_dir: PathBuf,
    errors: Vec<ConfigError>,
    literal_secrets: Vec<String>,
    unavailable: Vec<Unavailable>,
    /// `accounts_file:`, resolved, once it is read.
    accounts_path: Option<PathBuf>,
    /// The line of `accounts_file:` being built, when the entry comes from
    /// there: its errors name that file and line instead of a YAML key.
    at_line: Option<usize>,
    /// Secrets written literally in `accounts_file:`.
    file_literal_secrets: usize,
}

impl<'a> Builder<'a> {
    pub(super) fn new(text: &'a str, path: &'a Path) -> Self {
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Builder {
            text,
            spans: std::cell::OnceCell::new(),
            path,
            base_dir,
            errors: Vec::new(),
            literal_secrets: Vec::new(),
            unavailable: Vec::new(),
            accounts_path: None,
            at_line: None,
            file_literal_secrets: 0,
        }
    }

    /// Where the entry at `at` (a key path) is.
    fn locate(&self, at: &[&str]) -> Option<spans::At> {
        self.spans
            .get_or_init(|| spans::Spans::parse(self.text))
            .locate(at)
    }

    /// An error about the entry at `at` (a key path), located.
    fn located(&self, at: &[&str], message: String) -> ConfigError {
        if let (Some(file), Some(line)) = (&self.accounts_path, self.at_line) {
            return ConfigError {
                file: file.clone(),
                line: Some(line),
                column: None,
                message,
            };
        }
        let loc = self.locate(at);
        ConfigError {
            file: self.path.to_owned(),
            line: loc.map(|l| l.0),
            column: loc.map(|l| l.1),
            message,
        }
    }

    /// Records an error about the entry at `at` (a key path).
    fn error(&mut self, at: &[&str], message: impl Into<String>) {
        let e = self.located(at, message.into());
        self.errors.push(e);
    }

    fn secret(&mut self, at: &[&str], subject: &str, raw: &str) -> Secret {
        match secret::resolve(raw, &self.base_dir) {
            Ok((secret, source)) => {
                if source == SecretSource::Literal {
                    if self.at_line.is_some() {
                        self.file_literal_secrets += 1;
                    } else {
                        self.literal_secrets.push(at.join("."));
                    }
                }
                secret
            }
            Err(e) => {
                let key = at.last().copied().unwrap_or("secret");
                let error = self.located(at, format!("{subject}: {key}: {e}"));
                // Outside the service a credential may be unreadable: the
                // callers that need every secret refuse it then.
                match e {
                    secret::SecretError::Outside { .. } => self.unavailable.push(Unavailable {
                        at: at.iter().map(|s| (*s).to_owned()).collect(),
                        error,
                    }),
                    _ => self.errors.push(error),
                }
                Secret::new("")
            }
        }
    }

    fn url(&mut self, at: &[&str], subject: &str, raw: &str) -> String {
        match url::Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                raw.trim_end_matches('/').to_owned()
            }
            Ok(_) => {
                self.error(at, format!("{subject}: {raw:?} is not an http(s) URL"));
                String::new()
            }
            Err(e) => {
                self.error(at, format!("{subject}: invalid URL {raw:?}: {e}"));
                String::new()
            }
        }
    }

    fn addr(&mut self, at: &[&str], raw: Option<&str>, default: &str) -> SocketAddr {
        let raw = raw.unwrap_or(default);
        raw.parse().unwrap_or_else(|_| {
            self.error(
                at,
                format!(
                    "daemon: {}: {raw:?} is not an address such as 127.0.0.1:9610",
                    at[1]
                ),
            );
            default.parse().expect("defaults are valid addresses")
        })
    }

    /// `raw` against the configuration's folder, without `.` components
    /// (`rules.yaml` with `./state` is `state`, not `././state`).
    fn path_in(&self, raw: &str) -> PathBuf {
        let joined: PathBuf = self
            .base_dir
            .join(raw)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        if joined.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            joined
        }
    }

    pub(super) fn build(mut self, raw: raw::RawConfig) -> Result<Config, ConfigErrors> {
        let daemon = self.daemon(raw.daemon);
        let providers = self.providers(raw.providers);
        let products = self.products(raw.products, &providers);
        let from_file = self.accounts_file(raw.accounts_file.as_deref());
        let in_file = from_file.len();
        let accounts = self.accounts(raw.accounts, from_file, &providers);
        let accounts_file = self.accounts_path.take().map(|path| AccountsFile {
            path,
            accounts: in_file,
            literal_secrets: self.file_literal_secrets,
        });
        let rules = self.rules(raw.rules, &products, &accounts);
        let sandbox = self.sandbox(raw.sandbox, &products, &accounts);
        let plugins = self.plugins(raw.plugins);
        let manual = self.manual(raw.manual);
        for p in &plugins.sign_with {
            if !matches!(providers.get(p), Some(Provider::Recharge(_))) {
                self.error(
                    &["plugins", "sign_with"],
                    format!("{p:?} is not a recharge provider"),
                );
            }
        }
        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        let mut account_index: Vec<u32> = (0..accounts.len() as u32).collect();
        account_index
            .sort_unstable_by(|&a, &b| accounts[a as usize].name.cmp(&accounts[b as usize].name));
        Ok(Config {
            path: self.path.to_owned(),
            base_dir: self.base_dir,
            daemon,
            providers,
            products,
            accounts,
            accounts_file,
            rules,
            sandbox,
            plugins,
            manual,
            literal_secrets: {
                let mut literal = self.literal_secrets;
                literal.shrink_to_fit();
                literal
            },
            unavailable: self.unavailable,

            account_index,
        })
    }

    fn manual(&mut self, m: raw::RawManual) -> Manual {
        let defaults = Manual::default().budget;
        let Some(b) = m.budget else {
            return Manual::default();
        };
        let at = ["manual", "budget"];
        if b.approve_above.is_some() || b.approve_when_budget_left_below.is_some() {
            self.error(
                &at,
                "manual: approvals apply to rules; a manual order is already an operator's (or a plugin's) own act, capped by manual.budget",
            );
        }
        let budget = self.budget(&at, "manual", b);
        Manual {
            budget: Budget::caps(
                budget.per_day.or(defaults.per_day),
                budget.per_month.or(defaults.per_month),
            ),
        }
    }

    fn plugins(&mut self, p: raw::RawPlugins) -> PluginSettings {
        let defaults = PluginSettings::default();
        let timeout = p.timeout.map_or(defaults.timeout, |d| d.0);
        if timeout.is_zero() {
            self.error(&["plugins", "timeout"], "must be more than 0s");
        }
        if p.memory_mb.is_some_and(|m| !(4..=4096).contains(&m)) {
            self.error(&["plugins", "memory_mb"], "must be between 4 and 4096");
        }
        if p.instructions.is_some_and(|n| n < 10_000) {
            self.error(&["plugins", "instructions"], "must be at least 10000");
        }
        if p.kv_mb.is_some_and(|m| !(1..=1024).contains(&m)) {
            self.error(&["plugins", "kv_mb"], "must be between 1 and 1024");
        }
        let mut webhook_secrets = BTreeMap::new();
        for (name, raw) in p.webhook_secrets {
            let at = ["plugins", "webhook_secrets", name.as_str()];
            let said = self.unavailable.len() + self.errors.len();
            let secret = self.secret(&at, "plugins: webhook_secrets", &raw);
            // A secret that could not be read is said already.
            if self.unavailable.len() + self.errors.len() == said && secret.expose().len() < 16 {
                self.error(
                    &at,
                    format!("plugins: webhook secret {name} is shorter than 16 characters; receivers verify with it, so make it long and random"),
                );
            }
            webhook_secrets.insert(name, secret);
        }
        PluginSettings {
            timeout,
            memory: p.memory_mb.map_or(defaults.memory, |m| (m as usize) << 20),
            instructions: p.instructions.unwrap_or(defaults.instructions),
            kv_bytes: p.kv_mb.map_or(defaults.kv_bytes, |m| m << 20),
            settings: p.settings,
            http_allow: p
                .http_allow
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            sign_with: p.sign_with,
            webhook_secrets,
        }
    }

    fn store(&mut self, s: raw::RawStore) -> StoreKind {
        let (url, node, lease, pool_size) = match s {
            raw::RawStore::Sled => return StoreKind::Sled,
            raw::RawStore::Postgres {
                url,
                node,
                lease,
                pool_size,
            } => (url, node, lease, pool_size),
        };
        let at = |k: &'static str| ["daemon", "store", k];
        let url = self.secret(&at("url"), "daemon: store", &url);
        let node = node.unwrap_or_else(host_name);
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if node.is_empty() || node.len() > 63 || !node.chars().all(valid) {
            self.error(
                &at("node"),
                format!(
                    "daemon: store: node: {node:?} is not a node name (1 to 63 letters, digits, '-', '_' or '.')"
                ),
            );
        }
        let lease = lease.map_or(Duration::from_secs(15), HumanDuration::get);
        if !(Duration::from_secs(3)..=Duration::from_secs(600)).contains(&lease) {
            self.error(
                &at("lease"),
                "daemon: store: lease: must be between 3s and 10m",
            );
        }
        let pool_size = pool_size.unwrap_or(16);
        if !(2..=256).contains(&pool_size) {
            self.error(
                &at("pool_size"),
                "daemon: store: pool_size: must be between 2 and 256",
            );
        }
        StoreKind::Postgres {
            url,
            node,
            lease,
            pool_size: pool_size as usize,
        }
    }

    fn daemon(&mut self, d: raw::RawDaemon) -> Daemon {
        let admin_listen = self.addr(
            &["daemon", "admin_listen"],
            d.admin_listen.as_deref(),
            "127.0.0.1:9610",
        );
        let callback_listen = self.addr(
            &["daemon", "callback_listen"],
            d.callback_listen.as_deref(),
            "127.0.0.1:9611",
        );
        let sandbox_listen = self.addr(
            &["daemon", "sandbox_listen"],
            d.sandbox_listen.as_deref(),
            "127.0.0.1:0",
        );
        let public_url = d
            .public_url
            .map(|u| self.url(&["daemon", "public_url"], "daemon: public_url", &u));
        let (state_dir, state_dir_from) = match std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated; the first is ours.
            Some(dirs) => (
                PathBuf::from(dirs.to_string_lossy().split(':').next().unwrap_or_default()),
                StateDirFrom::Environment,
            ),
            None => (
                self.path_in(d.state_dir.as_deref().unwrap_or("state")),
                StateDirFrom::File,
            ),
        };
        let (admin_token, tokens) =
            self.tokens(d.admin_token, d.read_token, d.tokens, admin_listen);
        let store = d.store.map_or(StoreKind::Sled, |s| self.store(s));
        let tz_name = d.timezone.as_deref().unwrap_or("Asia/Shanghai");
        let timezone = tz_name.parse().unwrap_or_else(|_| {
            self.error(&["daemon", "timezone"], format!("daemon: timezone: unknown zone {tz_name:?} (expected an IANA name such as Asia/Shanghai or UTC)"));
            chrono_tz::Tz::UTC
        });
        Daemon {
            state_dir,
            state_dir_from,
            scripts_dir: self.path_in(d.scripts_dir.as_deref().unwrap_or("scripts")),
            timezone,
            admin_listen,
            callback_listen,
            public_url,
            sandbox: d.sandbox,
            sandbox_listen,
            dry_run: d.dry_run,
            admin_token,
            tokens,
            store,
            startup_spread: d
                .startup_spread
                .map_or(Duration::from_secs(10), HumanDuration::get),
            probe_every: d
                .probe_every
                .map_or(Duration::from_secs(600), HumanDuration::get),
            max_concurrent_checks: d.max_concurrent_checks.unwrap_or(64).max(1) as usize,
            retry_base_secs: d.retry_base.map_or(60, |r| r.get().as_secs().max(1) as i64),
            // A year and a month: last year's events for a yearly review.
            event_retention: d
                .event_retention
                .map_or(Duration::from_secs(400 * 86_400), HumanDuration::get),
        }
    }

    fn rules(
        &mut self,
        raw: Vec<raw::RawRule>,
        products: &BTreeMap<String, Arc<Product>>,
        accounts: &[Account],
    ) -> Vec<Rule> {
        // Each account's place, by name: resolving a rule's names costs
        // one lookup each, whatever the number of accounts.
        let places: HashMap<&str, u32> = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.as_str(), i as u32))
            .collect();
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            let subject = format!("rule {}", r.name);
            let name = r.name.clone();
            let at = |key: &'static str| ["rules", name.as_str(), key];
            if r.name.is_empty() || r.name.contains(['/', '\0']) {
                self.error(
                    &at("name"),
                    format!("{subject}: a rule name cannot be empty or contain '/'"),
                );
            }
            if !seen.insert(r.name.clone()) {
                self.error(&at("name"), format!("{subject}: the name is used twice"));
            }
            if r.name == MANUAL_RULE {
                self.error(
                    &at("name"),
                    format!("{subject}: the name is reserved for manual orders (`vipd recharge`)"),
                );
            }
            let resolved = self.select(&at("accounts"), &subject, r.accounts, accounts, &places);
            let check = match r.check {
                raw::RawCheck::Cron(expr) => Check::cron(&expr).unwrap_or_else(|e| {
                    self.error(&at("check"), format!("{subject}: {e}"));
                    Check::Every(Duration::from_secs(600))
                }),
                raw::RawCheck::Every(e) if e.every.get() < Duration::from_secs(1) => {
                    self.error(
                        &at("check"),
                        format!("{subject}: check every {} is shorter than 1s", e.every),
                    );
                    Check::Every(Duration::from_secs(1))
                }
                raw::RawCheck::Every(e) => Check::Every(e.every.get()),
            };
            let product = match products.get(&r.product) {
                None => {
                    let hint = error::closest(&r.product, products.keys().map(String::as_str))
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    self.error(
                        &at("product"),
                        format!("{subject}: no product named {}{hint}", r.product),
                    );
                    None
                }
                Some(p) => {
                    if p.extends != r.membership {
                        self.error(
                            &at("membership"),
                            format!(
                                "{subject}: watches {} but product {} extends {}; the renewal would never show and the rule would pay again",
                                r.membership, p.name, p.extends
                            ),
                        );
                    }
                    Some(p.clone())
                }
            };
            if r.max_attempts == Some(0) {
                self.error(
                    &at("max_attempts"),
                    format!("{subject}: max_attempts must be at least 1"),
                );
            }
            let budget = self.budget(&at("budget"), &subject, r.budget);
            let escalate = self.escalate(&at("escalate"), &subject, r.escalate);
            // Without its product the rule is an error already reported:
            // the build fails, so no rule is made that names nothing.
            let Some(product) = product else { continue };
            out.push(Rule {
                name: r.name.into(),
                accounts: resolved
                    .iter()
                    .map(|&i| accounts[i as usize].name.as_str().into())
                    .collect(),
                resolved,
                check,
                membership: r.membership,
                renew_before: r.renew_before.get(),
                product,
                when_lapsed: r.when_lapsed,
                budget,
                max_attempts: r.max_attempts.unwrap_or(3).max(1),
                verify_within: r.verify_within.map_or(VERIFY_WITHIN, HumanDuration::get),
                at_risk: r
                    .at_risk
                    .map_or(r.renew_before.get() / 2, HumanDuration::get),
                escalate,
            });
        }
        out
    }

    fn select(
        &mut self,
        at: &[&str],
        subject: &str,
        sel: raw::RawSelector,
        accounts: &[Account],
        places: &HashMap<&str, u32>,
    ) -> Vec<u32> {
        let all = || (0..accounts.len() as u32).collect();
        match sel {
            raw::RawSelector::Word(w) if w == "all" => all(),
            raw::RawSelector::Word(w) => {
                self.error(at, format!("{subject}: accounts: {w:?} is not a selector (expected all, {{ tags: [...] }} or {{ names: [...] }})"));
                Vec::new()
            }
            raw::RawSelector::Map(m) => {
                if m.tags.is_none() && m.names.is_none() {
                    self.error(
                        at,
                        format!("{subject}: accounts: give tags, names, or write all"),
                    );
                }
                for n in m.names.iter().flatten() {
                    if !places.contains_key(n.as_str()) {
                        let hint = error::closest(n, accounts.iter().map(|a| a.name.as_str()))
                            .map(|h| format!(" (did you mean `{h}`?)"))
                            .unwrap_or_default();
                        self.error(
                            at,
                            format!("{subject}: accounts: no account named {n}{hint}"),
                        );
                    }
                }
                let names: HashSet<&str> = m.names.iter().flatten().map(String::as_str).collect();
                let tags: HashSet<&str> = m.tags.iter().flatten().map(String::as_str).collect();
                (0..accounts.len() as u32)
                    .filter(|&i| {
                        let a = &accounts[i as usize];
                        names.contains(a.name.as_str())
                            || a.tags.iter().any(|t| tags.contains(t.as_str()))
                    })
                    .collect()
            }
        }
    }
}

/// This host's name (a node's default name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
