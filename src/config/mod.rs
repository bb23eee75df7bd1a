//! `rules.yaml`: read ([`raw`]), then validated into runtime values
//! ([`Config`]). Runtime code never re-checks what is here: a `Config`
//! that exists is valid.
//!
//! Validation collects every problem it can find, each naming the file,
//! `line:col` where it can, and the entry (`provider wapi`, `account
//! alice`), so `vipd check` shows them all at once.

mod depth;
mod diagnose;
pub mod error;
pub mod raw;
pub mod rules;
pub mod secret;
pub mod spans;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::model::{Budget, CallbackMapping, SandboxMode, Secret};
pub use error::{ConfigError, ConfigErrors};
pub use rules::{Check, Rule, WhenLapsed};
pub use secret::SecretSource;

use crate::model::{Format, HttpMethod, Knobs, Membership, SignMode, Signer};
use crate::units::{Fen, HumanDuration, Rate};

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

/// `--state-dir`, set once at start; wins over `$STATE_DIRECTORY` and
/// `daemon.state_dir` in every configuration read after.
static STATE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets the `--state-dir` override (the first call wins).
pub fn override_state_dir(dir: PathBuf) {
    let _ = STATE_DIR.set(dir);
}

/// Whether the state folder comes from `--state-dir` or
/// `$STATE_DIRECTORY` rather than the file.
pub fn state_dir_overridden() -> bool {
    STATE_DIR.get().is_some() || std::env::var_os("STATE_DIRECTORY").is_some()
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its folder: relative paths in the file resolve against it.
    pub base_dir: PathBuf,
    /// `daemon:`
    pub daemon: Daemon,
    /// `providers:` by name.
    pub providers: BTreeMap<String, Provider>,
    /// `products:` by name.
    pub products: BTreeMap<String, Product>,
    /// `accounts:` in file order; names are unique.
    pub accounts: Vec<Account>,
    /// `rules:` in file order; names are unique.
    pub rules: Vec<Rule>,
    /// `sandbox:`
    pub sandbox: SandboxSettings,
    /// `plugins:`
    pub plugins: PluginSettings,
    /// `manual:`: caps on recharges outside the rules.
    pub manual: Manual,
    /// Where secrets are written literally (`providers.wapi.secret`), for
    /// the warning about readable files. Only these are kept: with a token
    /// per account, a record of every secret would cost about 100 bytes an
    /// account for the daemon's lifetime.
    pub literal_secrets: Vec<String>,
    /// `${credential:}` secrets that cannot be read outside the service
    /// (located messages), left empty. [`Config::load`] refuses them;
    /// [`Config::load_outside`] keeps them as warnings.
    pub unavailable: Vec<ConfigError>,
    /// Indices into `accounts` in name order, for binary search: every
    /// check looks its account up, so with 10,000 accounts a scan would
    /// cost O(n²) per cycle. Four bytes an account, where a map keyed by
    /// a copy of each name took about seventy.
    account_index: Vec<u32>,
}

/// `manual:` with defaults applied. Manual recharges (the CLI, the admin
/// API, `vipd.recharge` from Lua) pass the same ledger gate as rules, under
/// the rule name `manual`, with these caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manual {
    /// Default 100.00 a day and 500.00 a month: small, so that a plugin
    /// in a loop or a leaked admin token cannot spend much.
    pub budget: Budget,
}

impl Default for Manual {
    fn default() -> Self {
        Manual {
            budget: Budget {
                per_day: Some(Fen(10_000)),
                per_month: Some(Fen(50_000)),
            },
        }
    }
}

/// `plugins:` with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// Wall-clock limit per handler call (default 5 s).
    pub timeout: Duration,
    /// Memory cap of one Lua state, in bytes (default 64 MiB).
    pub memory: usize,
    /// Lua VM instructions per handler call (default 100 million).
    pub instructions: u64,
    /// Each plugin's `vipd.kv` quota, in bytes kept and bytes written per
    /// minute (default 16 MiB).
    pub kv_bytes: u64,
    /// Each plugin's own settings (`vipd.settings`), by plugin name.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// `host:port` destinations `vipd.http` may reach although they are
    /// loopback or the daemon's own listeners (lower-case host).
    pub http_allow: Vec<String>,
    /// Recharge providers whose secret `vipd.sign{provider=}` may use.
    pub sign_with: Vec<String>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            timeout: Duration::from_secs(5),
            memory: 64 << 20,
            instructions: 100_000_000,
            kv_bytes: 16 << 20,
            settings: BTreeMap::new(),
            http_allow: Vec::new(),
            sign_with: Vec::new(),
        }
    }
}

/// `daemon:` with defaults applied.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// The sled store. `$STATE_DIRECTORY` (systemd) wins over the file.
    pub state_dir: PathBuf,
    /// Lua plugins.
    pub scripts_dir: PathBuf,
    /// For cron and budget days, e.g. `Asia/Shanghai`.
    pub timezone: chrono_tz::Tz,
    /// `/healthz /metrics /api/*`.
    pub admin_listen: SocketAddr,
    /// `/notify/{provider}`.
    pub callback_listen: SocketAddr,
    /// What the vendor calls back, without a trailing slash. `None`: the
    /// callback listener's own address, known once it is bound.
    pub public_url: Option<String>,
    /// Run the simulated upstream in-process.
    pub sandbox: bool,
    /// Where that sandbox listens.
    pub sandbox_listen: SocketAddr,
    /// Decide and log, never pay.
    pub dry_run: bool,
    /// Bearer token for `/api/*` and `/metrics`, when set: every request.
    pub admin_token: Option<Secret>,
    /// Bearer token that may only read: `/metrics`, status, orders, plan.
    pub read_token: Option<Secret>,
    /// First checks after start-up are spread over this.
    pub startup_spread: Duration,
    /// How often a paused provider lets one order through as a probe.
    pub probe_every: Duration,
    /// Account checks running at once.
    pub max_concurrent_checks: usize,
    /// First retry delay in seconds (see `decide::after_attempt`).
    pub retry_base_secs: i64,
    /// How long recorded events are kept; orders are kept for ever.
    pub event_retention: Duration,
}

/// A provider: one upstream application.
#[derive(Debug, Clone)]
// Built once per configuration load; a few hundred bytes per provider
// are not worth a box at every use.
#[allow(clippy::large_enum_variant)]
pub enum Provider {
    /// Membership reads.
    QqConnect(QqConnectProvider),
    /// Paid renewals.
    Recharge(RechargeProvider),
}

impl Provider {
    /// The provider's base URL.
    pub fn base_url(&self) -> &str {
        match self {
            Provider::QqConnect(p) => &p.base_url,
            Provider::Recharge(p) => &p.base_url,
        }
    }

    fn set_base_url(&mut self, url: &str) {
        match self {
            Provider::QqConnect(p) => p.base_url = url.to_owned(),
            Provider::Recharge(p) => p.base_url = url.to_owned(),
        }
    }
}

/// `kind: qq_connect`
#[derive(Debug, Clone)]
pub struct QqConnectProvider {
    /// Its key in `providers:`.
    pub name: String,
    /// e.g. `https://graph.qq.com`, no trailing slash.
    pub base_url: String,
    /// The app id.
    pub oauth_consumer_key: String,
    /// The app key, for token refresh.
    pub client_secret: Option<Secret>,
    /// Per request.
    pub timeout: Duration,
    /// Requests per period, when limited.
    pub rate_limit: Option<Rate>,
    /// json or xml.
    pub format: Format,
}

/// `kind: recharge`
#[derive(Debug, Clone)]
pub struct RechargeProvider {
    /// Its key in `providers:`.
    pub name: String,
    /// e.g. `https://vendor.example`, no trailing slash.
    pub base_url: String,
    /// The application id.
    pub appid: String,
    /// The application secret.
    pub secret: Secret,
    /// md5 or hash.
    pub sign_mode: SignMode,
    /// GET or POST.
    pub method: HttpMethod,
    /// Send `debug=1`: the vendor answers 10024 and bills nothing.
    pub debug: bool,
    /// Per request.
    pub timeout: Duration,
    /// Requests per period, when limited.
    pub rate_limit: Option<Rate>,
    /// Requests in flight at once.
    pub max_in_flight: u32,
    /// The parameter naming the account.
    pub target_param: String,
    /// How callbacks are read.
    pub callback: CallbackMapping,
}

impl RechargeProvider {
    /// The signer for requests and callbacks.
    pub fn signer(&self) -> Signer {
        Signer::new(self.sign_mode, self.secret.clone())
    }
}

/// One product: a renewal that can be bought.
#[derive(Debug, Clone)]
pub struct Product {
    /// Its key in `products:`.
    pub name: String,
    /// The `kind: recharge` provider that sells it.
    pub provider: String,
    /// The API path, e.g. `/api/164/310`.
    pub path: String,
    /// The membership it extends.
    pub extends: Membership,
    /// How much it adds.
    pub adds: Duration,
    /// The most we pay for it; budgets reserve this.
    pub max_price: Fen,
    /// Extra request parameters, signed with the rest.
    pub params: Vec<(String, String)>,
}

/// One account whose memberships vipd keeps.
#[derive(Debug, Clone)]
pub struct Account {
    /// Unique name, used everywhere.
    pub name: String,
    /// The QQ number recharged.
    pub qq_number: String,
    /// The QQ Connect openid read.
    pub openid: String,
    /// The access token for reads.
    pub access_token: Secret,
    /// For refreshing the access token, when given.
    pub refresh_token: Option<Secret>,
    /// For rule selectors.
    pub tags: Vec<String>,
    /// The `qq_connect` provider that reads it.
    pub provider: String,
}

/// How long QQ's refreshed access tokens live: 90 days.
pub const QQ_TOKEN_TTL: Duration = Duration::from_secs(90 * 86_400);

/// The simulated upstream's settings.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// sync or async.
    pub mode: SandboxMode,
    /// How long before an async order settles and calls back.
    pub callback_delay: Duration,
    /// How long a refreshed access token lives.
    pub token_ttl: Duration,
    /// Money at the vendor; `None` = unlimited.
    pub balance: Option<Fen>,
    /// Price per product name.
    pub prices: BTreeMap<String, Fen>,
    /// Starting ends, relative to the sandbox's start, in seconds.
    pub memberships: BTreeMap<String, BTreeMap<Membership, i64>>,
    /// Faults of the recharge API.
    pub recharge_faults: Knobs,
    /// Faults of the membership API.
    pub vip_info_faults: Knobs,
    /// Seed for the fault dice.
    pub seed: Option<u64>,
}

impl Config {
    /// Reads and validates a file, every secret included: what the
    /// daemon and anything that pays or reads upstream needs.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_outside(path)?.every_secret()
    }

    /// [`Config::load`] for commands an operator runs beside the service
    /// (`check`, `status`, `orders`, `plan` through the daemon): a
    /// `${credential:}` only the service can read is left empty and listed
    /// in [`Config::unavailable`] instead of failing the whole file.
    pub fn load_outside(path: &Path) -> Result<Config, ConfigErrors> {
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
            Err(ConfigErrors(self.unavailable))
        }
    }

    /// [`Config::parse`] as [`Config::load_outside`] reads.
    pub fn parse_outside(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
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
        let raw: raw::RawConfig = match yaml_serde::from_str(text) {
            Ok(raw) => raw,
            // Not a file of the right shape: every such error, each at its
            // key (a syntax error is the parser's one).
            Err(e) => {
                let all = match yaml_serde::from_str::<yaml_serde::Value>(text) {
                    Ok(value) => diagnose::all(path, value, &spans::Spans::parse(text)),
                    Err(_) => Vec::new(),
                };
                return Err(if all.is_empty() {
                    ConfigErrors::from_yaml(path, &e)
                } else {
                    ConfigErrors(all)
                });
            }
        };
        Builder::new(text, path).build(raw)
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<&Account> {
        let at = self
            .account_index
            .binary_search_by(|&i| self.accounts[i as usize].name.as_str().cmp(name))
            .ok()?;
        Some(&self.accounts[self.account_index[at] as usize])
    }

    /// The `qq_connect` provider of an account.
    pub fn reader_of(&self, account: &Account) -> &QqConnectProvider {
        match self.providers.get(&account.provider) {
            Some(Provider::QqConnect(p)) => p,
            _ => unreachable!(
                "validated: account {} has a qq_connect provider",
                account.name
            ),
        }
    }

    /// The `recharge` provider of a product.
    pub fn seller_of(&self, product: &Product) -> &RechargeProvider {
        match self.providers.get(&product.provider) {
            Some(Provider::Recharge(p)) => p,
            _ => unreachable!(
                "validated: product {} has a recharge provider",
                product.name
            ),
        }
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.name == name)
    }

    /// Problems that do not make the file invalid but would surprise an
    /// operator: rules that would renew repeatedly, renewal windows with
    /// fewer than three checks in them, rules that select nobody, and
    /// literal secrets in a file other users can read.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings_at().into_iter().map(|(_, w)| w).collect()
    }

    /// [`Config::warnings`], each with the line and column of the entry
    /// it is about, when it is about one. The file is read again and parsed
    /// for positions only when there is a warning to place.
    pub fn located_warnings(&self) -> Vec<(Option<spans::At>, String)> {
        let warnings = self.warnings_at();
        let spans = warnings
            .iter()
            .any(|(path, _)| path.is_some())
            .then(|| std::fs::read_to_string(&self.path).ok())
            .flatten()
            .map(|text| spans::Spans::parse(&text));
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
    fn warnings_at(&self) -> Vec<(Option<Vec<&str>>, String)> {
        let mut out: Vec<(Option<Vec<&str>>, String)> = Vec::new();
        let now = crate::model::now_unix();
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
            if let Some(product) = self.products.get(&rule.product) {
                if rule.renew_before >= product.adds {
                    out.push((key("renew_before"), format!(
                        "{subject}: renew_before ({}) is not smaller than what {} adds ({}): after each renewal the account is due again, so it would renew repeatedly",
                        HumanDuration(rule.renew_before),
                        product.name,
                        HumanDuration(product.adds)
                    )));
                }
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
        out
    }

    /// Points every provider at `base_url` (the in-process sandbox).
    pub fn point_providers_at(&mut self, base_url: &str) {
        for p in self.providers.values_mut() {
            p.set_base_url(base_url);
        }
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

/// Turns a [`raw::RawConfig`] into a [`Config`], collecting errors.
struct Builder<'a> {
    text: &'a str,
    /// Where each entry is, from the parser: built at the first error
    /// (a valid file never needs it).
    spans: std::cell::OnceCell<spans::Spans>,
    path: &'a Path,
    base_dir: PathBuf,
    errors: Vec<ConfigError>,
    literal_secrets: Vec<String>,
    unavailable: Vec<ConfigError>,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str, path: &'a Path) -> Self {
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
                    self.literal_secrets.push(at.join("."));
                }
                secret
            }
            Err(e) => {
                let key = at.last().copied().unwrap_or("secret");
                let error = self.located(at, format!("{subject}: {key}: {e}"));
                // Outside the service a credential may be unreadable: the
                // callers that need every secret refuse it then.
                match e {
                    secret::SecretError::Outside { .. } => self.unavailable.push(error),
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

    fn build(mut self, raw: raw::RawConfig) -> Result<Config, ConfigErrors> {
        let daemon = self.daemon(raw.daemon);
        let providers = self.providers(raw.providers);
        let products = self.products(raw.products, &providers);
        let accounts = self.accounts(raw.accounts, &providers);
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
        for (key, cap) in [("per_day", b.per_day), ("per_month", b.per_month)] {
            if cap.is_some_and(|c| c < Fen::ZERO) {
                self.error(
                    &["manual", "budget", key],
                    format!("manual: budget {key} cannot be negative"),
                );
            }
        }
        Manual {
            budget: Budget {
                per_day: b.per_day.or(defaults.per_day),
                per_month: b.per_month.or(defaults.per_month),
            },
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
        let state_dir = match (STATE_DIR.get(), std::env::var_os("STATE_DIRECTORY")) {
            (Some(flag), _) => flag.clone(),
            // systemd may pass several, colon-separated; the first is ours.
            (None, Some(dirs)) => {
                PathBuf::from(dirs.to_string_lossy().split(':').next().unwrap_or_default())
            }
            (None, None) => self.path_in(d.state_dir.as_deref().unwrap_or("state")),
        };
        let admin_token = d
            .admin_token
            .map(|raw| self.secret(&["daemon", "admin_token"], "daemon", &raw));
        let read_token = d
            .read_token
            .map(|raw| self.secret(&["daemon", "read_token"], "daemon", &raw));
        if admin_token.is_none() && !admin_listen.ip().is_loopback() {
            self.error(
                &["daemon", "admin_listen"],
                format!(
                    "daemon: admin_listen: {admin_listen} is reachable from other hosts, and the admin API can spend money: set daemon.admin_token (e.g. \"${{credential:admin_token}}\") or listen on 127.0.0.1"
                ),
            );
        }
        if read_token.is_some() && admin_token.is_none() {
            self.error(
                &["daemon", "read_token"],
                "daemon: read_token: without admin_token the API is open to loopback peers and a read token restricts nothing: set admin_token too",
            );
        }
        if let (Some(a), Some(r)) = (&admin_token, &read_token)
            && a.expose() == r.expose()
            && !a.expose().is_empty()
        {
            self.error(
                &["daemon", "read_token"],
                "daemon: read_token: is the same as admin_token, so a scrape credential could spend money: use two different tokens",
            );
        }
        let tz_name = d.timezone.as_deref().unwrap_or("Asia/Shanghai");
        let timezone = tz_name.parse().unwrap_or_else(|_| {
            self.error(&["daemon", "timezone"], format!("daemon: timezone: unknown zone {tz_name:?} (expected an IANA name such as Asia/Shanghai or UTC)"));
            chrono_tz::Tz::UTC
        });
        Daemon {
            state_dir,
            scripts_dir: self.path_in(d.scripts_dir.as_deref().unwrap_or("scripts")),
            timezone,
            admin_listen,
            callback_listen,
            public_url,
            sandbox: d.sandbox,
            sandbox_listen,
            dry_run: d.dry_run,
            admin_token,
            read_token,
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
        products: &BTreeMap<String, Product>,
        accounts: &[Account],
    ) -> Vec<Rule> {
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
            let selected = self.select(&at("accounts"), &subject, r.accounts, accounts);
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
            match products.get(&r.product) {
                None => {
                    let hint = error::closest(&r.product, products.keys().map(String::as_str))
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    self.error(&at("product"), format!("{subject}: no product named {}{hint}", r.product));
                }
                Some(p) if p.extends != r.membership => self.error(
                    &at("membership"),
                    format!(
                        "{subject}: watches {} but product {} extends {}; the renewal would never show and the rule would pay again",
                        r.membership, p.name, p.extends
                    ),
                ),
                Some(_) => {}
            }
            if r.max_attempts == Some(0) {
                self.error(
                    &at("max_attempts"),
                    format!("{subject}: max_attempts must be at least 1"),
                );
            }
            for (key, cap) in [
                ("per_day", r.budget.per_day),
                ("per_month", r.budget.per_month),
            ] {
                if cap.is_some_and(|c| c < Fen::ZERO) {
                    self.error(
                        &["rules", name.as_str(), "budget", key],
                        format!("{subject}: budget {key} cannot be negative"),
                    );
                }
            }
            out.push(Rule {
                name: r.name.into(),
                accounts: selected,
                check,
                membership: r.membership,
                renew_before: r.renew_before.get(),
                product: r.product,
                when_lapsed: r.when_lapsed,
                budget: Budget {
                    per_day: r.budget.per_day,
                    per_month: r.budget.per_month,
                },
                max_attempts: r.max_attempts.unwrap_or(3).max(1),
                verify_within: r
                    .verify_within
                    .map_or(Duration::from_secs(3600), HumanDuration::get),
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
    ) -> Vec<Arc<str>> {
        let all = || accounts.iter().map(|a| a.name.as_str().into()).collect();
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
                    if !accounts.iter().any(|a| &a.name == n) {
                        let hint = error::closest(n, accounts.iter().map(|a| a.name.as_str()))
                            .map(|h| format!(" (did you mean `{h}`?)"))
                            .unwrap_or_default();
                        self.error(
                            at,
                            format!("{subject}: accounts: no account named {n}{hint}"),
                        );
                    }
                }
                accounts
                    .iter()
                    .filter(|a| {
                        m.names.as_ref().is_some_and(|ns| ns.contains(&a.name))
                            || m.tags
                                .as_ref()
                                .is_some_and(|ts| a.tags.iter().any(|t| ts.contains(t)))
                    })
                    .map(|a| a.name.as_str().into())
                    .collect()
            }
        }
    }

    fn providers(&mut self, raw: BTreeMap<String, raw::RawProvider>) -> BTreeMap<String, Provider> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let subject = format!("provider {name}");
            let at = |key: &'static str| ["providers", name.as_str(), key];
            let provider = match p {
                raw::RawProvider::QqConnect(q) => Provider::QqConnect(QqConnectProvider {
                    base_url: self.url(&at("base_url"), &subject, &q.base_url),
                    oauth_consumer_key: q.oauth_consumer_key,
                    client_secret: q
                        .client_secret
                        .map(|raw| self.secret(&at("client_secret"), &subject, &raw)),
                    timeout: q
                        .timeout
                        .map_or(Duration::from_secs(10), HumanDuration::get),
                    rate_limit: q.rate_limit,
                    format: q.format,
                    name: name.clone(),
                }),
                raw::RawProvider::Recharge(r) => {
                    let secret = self.secret(&at("secret"), &subject, &r.secret);
                    if r.max_in_flight == Some(0) {
                        self.error(
                            &at("max_in_flight"),
                            format!("{subject}: max_in_flight must be at least 1"),
                        );
                    }
                    let cb = r.callback;
                    let defaults = CallbackMapping::default();
                    Provider::Recharge(RechargeProvider {
                        base_url: self.url(&at("base_url"), &subject, &r.base_url),
                        appid: r.appid,
                        secret,
                        sign_mode: r.sign_mode,
                        method: r.method,
                        debug: r.debug,
                        timeout: r
                            .timeout
                            .map_or(Duration::from_secs(15), HumanDuration::get),
                        rate_limit: r.rate_limit,
                        max_in_flight: r.max_in_flight.unwrap_or(8).max(1),
                        target_param: r.target_param.unwrap_or_else(|| "qq_number".into()),
                        callback: CallbackMapping {
                            order_field: cb.order_field.unwrap_or(defaults.order_field),
                            status_field: cb.status_field.unwrap_or(defaults.status_field),
                            sign_field: cb.sign_field.unwrap_or(defaults.sign_field),
                            price_field: cb.price_field.unwrap_or(defaults.price_field),
                            success_values: cb.success_values.unwrap_or(defaults.success_values),
                            failure_values: cb.failure_values.unwrap_or(defaults.failure_values),
                            reply: cb.reply.unwrap_or(defaults.reply),
                            time_field: cb.time_field.unwrap_or(defaults.time_field),
                            max_age: cb.max_age.map_or(defaults.max_age, HumanDuration::get),
                            within: cb.within.map_or(defaults.within, HumanDuration::get),
                        },
                        name: name.clone(),
                    })
                }
            };
            out.insert(name, provider);
        }
        out
    }

    fn products(
        &mut self,
        raw: BTreeMap<String, raw::RawProduct>,
        providers: &BTreeMap<String, Provider>,
    ) -> BTreeMap<String, Product> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let subject = format!("product {name}");
            let at = |key: &'static str| ["products", name.as_str(), key];
            match providers.get(&p.provider) {
                Some(Provider::Recharge(_)) => {}
                Some(Provider::QqConnect(_)) => self.error(
                    &at("provider"),
                    format!("{subject}: provider {} is a qq_connect provider; products need kind: recharge", p.provider),
                ),
                None => {
                    let hint = error::closest(&p.provider, providers.keys().map(String::as_str))
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    self.error(&at("provider"), format!("{subject}: no provider named {}{hint}", p.provider));
                }
            }
            if !p.path.starts_with('/') {
                self.error(
                    &at("path"),
                    format!("{subject}: path {:?} must start with /", p.path),
                );
            }
            if p.adds.get().is_zero() {
                self.error(
                    &at("adds"),
                    format!("{subject}: adds must be longer than 0s"),
                );
            }
            if p.max_price <= Fen::ZERO {
                self.error(
                    &at("max_price"),
                    format!("{subject}: max_price must be more than 0.00"),
                );
            }
            out.insert(
                name.clone(),
                Product {
                    name,
                    provider: p.provider,
                    path: p.path,
                    extends: p.extends,
                    adds: p.adds.get(),
                    max_price: p.max_price,
                    params: p.params.into_iter().collect(),
                },
            );
        }
        out
    }

    fn accounts(
        &mut self,
        raw: Vec<raw::RawAccount>,
        providers: &BTreeMap<String, Provider>,
    ) -> Vec<Account> {
        let readers: Vec<&String> = providers
            .iter()
            .filter(|(_, p)| matches!(p, Provider::QqConnect(_)))
            .map(|(n, _)| n)
            .collect();
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for a in raw {
            let subject = format!("account {}", a.name);
            let name = a.name.clone();
            let at = |key: &'static str| ["accounts", name.as_str(), key];
            if a.name.is_empty()
                || !a
                    .name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-.@".contains(c))
            {
                self.error(
                    &at("name"),
                    format!("{subject}: names use letters, digits and _ - . @ only"),
                );
            }
            if !seen.insert(a.name.clone()) {
                self.error(&at("name"), format!("{subject}: the name is used twice"));
            }
            if a.qq_number.is_empty() || !a.qq_number.bytes().all(|b| b.is_ascii_digit()) {
                self.error(
                    &at("qq_number"),
                    format!("{subject}: qq_number {:?} is not a number", a.qq_number),
                );
            }
            let provider = match (&a.provider, readers.as_slice()) {
                (Some(p), _) => {
                    if !matches!(providers.get(p), Some(Provider::QqConnect(_))) {
                        self.error(
                            &at("provider"),
                            format!("{subject}: {p} is not a qq_connect provider"),
                        );
                    }
                    p.clone()
                }
                (None, [only]) => (*only).clone(),
                (None, []) => {
                    self.error(
                        &at("name"),
                        format!("{subject}: no qq_connect provider is configured to read it"),
                    );
                    String::new()
                }
                (None, _) => {
                    self.error(
                        &at("name"),
                        format!("{subject}: several qq_connect providers exist; say which with provider:"),
                    );
                    String::new()
                }
            };
            let access_token = self.secret(&at("access_token"), &subject, &a.access_token);
            let refresh_token = a
                .refresh_token
                .map(|raw| self.secret(&at("refresh_token"), &subject, &raw));
            out.push(Account {
                name: a.name,
                qq_number: a.qq_number,
                openid: a.openid,
                access_token,
                refresh_token,
                tags: a.tags,
                provider,
            });
        }
        out
    }

    fn sandbox(
        &mut self,
        raw: raw::RawSandbox,
        products: &BTreeMap<String, Product>,
        accounts: &[Account],
    ) -> SandboxSettings {
        for product in raw.prices.keys() {
            if !products.contains_key(product) {
                self.error(
                    &["sandbox", "prices", product],
                    format!("sandbox: prices: no product named {product}"),
                );
            }
        }
        let mut memberships = BTreeMap::new();
        for (account, terms) in raw.memberships {
            if !accounts.iter().any(|a| a.name == account) {
                self.error(
                    &["sandbox", "memberships", &account],
                    format!("sandbox: memberships: no account named {account}"),
                );
            }
            let mut ends = BTreeMap::new();
            for (m, rel) in terms {
                match HumanDuration::parse_signed_secs(&rel) {
                    Ok(secs) => {
                        ends.insert(m, secs);
                    }
                    Err(e) => self.error(
                        &["sandbox", "memberships", &account],
                        format!("sandbox: memberships: {account}: {m}: {e}"),
                    ),
                }
            }
            memberships.insert(account, ends);
        }
        for (api, knobs) in [
            ("recharge", &raw.faults.recharge),
            ("vip_info", &raw.faults.vip_info),
        ] {
            if let Err(e) = knobs.validate() {
                // The knob is the message's first word: point at its key.
                let knob = e.split_whitespace().next().unwrap_or_default();
                self.error(
                    &["sandbox", "faults", api, knob],
                    format!("sandbox: faults: {api}: {e}"),
                );
            }
        }
        SandboxSettings {
            mode: raw.mode.unwrap_or_default(),
            callback_delay: raw
                .callback_delay
                .map_or(Duration::from_millis(500), HumanDuration::get),
            token_ttl: raw.token_ttl.map_or(QQ_TOKEN_TTL, HumanDuration::get),
            balance: raw.balance,
            prices: raw.prices,
            memberships,
            recharge_faults: raw.faults.recharge,
            vip_info_faults: raw.faults.vip_info,
            seed: raw.seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
daemon: { sandbox: true }
providers:
  qq: { kind: qq_connect, base_url: "https://graph.qq.com", oauth_consumer_key: 101234567 }
  wapi:
    kind: recharge
    base_url: https://vendor.example/
    appid: 1
    secret: "0123456789abcdef0123456789abcdef"
products:
  qq_vip_month: { provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }
accounts:
  - { name: alice, qq_number: 5666857, openid: OPENID1, access_token: tok, tags: [staff] }
"#;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("rules.yaml"))
    }

    /// The defaults the schema states are the ones the configuration
    /// applies: a file with every stated default written out builds the
    /// same configuration as one that leaves them out.
    #[test]
    fn the_schemas_defaults_are_the_ones_applied() {
        if std::env::var_os("STATE_DIRECTORY").is_some() {
            return;
        }
        let schema: serde_json::Value = serde_json::from_str(&schema()).unwrap();
        let defs = &schema["$defs"];
        let text = format!(
            "{GOOD}rules:\n  - {{ name: keep, accounts: all, check: {{ every: 1h }}, membership: qq_vip, renew_before: 3d, product: qq_vip_month }}\n"
        );
        let mut doc: serde_json::Value = yaml_serde::from_str(&text).unwrap();
        let provider = |kind: &str| {
            defs["RawProvider"]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["properties"]["kind"]["const"] == kind)
                .unwrap()
                .clone()
        };
        let fill = |obj: &mut serde_json::Value, def: &str| {
            let node = match def {
                "RawQqConnect" => provider("qq_connect"),
                "RawRecharge" => provider("recharge"),
                _ => defs[def].clone(),
            };
            let props = node["properties"].as_object().unwrap();
            let mut filled = 0;
            for (k, v) in props {
                if let Some(d) = v.get("default")
                    && obj.get(k).is_none()
                {
                    obj[k] = d.clone();
                    filled += 1;
                }
            }
            assert!(filled > 0, "{def}: no default filled");
        };
        // The root's own sections are inline in the root schema.
        let root_props = schema["properties"].as_object().unwrap();
        assert!(root_props.contains_key("daemon"));
        fill(&mut doc["daemon"], "RawDaemon");
        fill(&mut doc["providers"]["qq"], "RawQqConnect");
        doc["providers"]["wapi"]["callback"] = serde_json::json!({});
        fill(&mut doc["providers"]["wapi"]["callback"], "RawCallback");
        fill(&mut doc["providers"]["wapi"], "RawRecharge");
        fill(&mut doc["rules"][0], "RawRule");
        doc["plugins"] = serde_json::json!({});
        fill(&mut doc["plugins"], "RawPlugins");
        doc["sandbox"] = serde_json::json!({});
        fill(&mut doc["sandbox"], "RawSandbox");
        let explicit = yaml_serde::to_string(&doc).unwrap();
        let implicit = format!("{:?}", parse(&text).unwrap());
        let explicit = format!("{:?}", parse(&explicit).unwrap());
        assert_eq!(implicit, explicit);
    }

    /// Paths beside a configuration in the current folder printed as
    /// `././state` (issue 11, item 7).
    #[test]
    fn paths_beside_the_file_have_no_dot_components() {
        if std::env::var_os("STATE_DIRECTORY").is_some() {
            return;
        }
        let c = parse(&GOOD.replace(
            "daemon: { sandbox: true }",
            "daemon: { sandbox: true, state_dir: ./state }",
        ))
        .unwrap();
        assert_eq!(c.daemon.state_dir, Path::new("state"));
        assert_eq!(c.daemon.scripts_dir, Path::new("scripts"));
        let c = Config::parse(GOOD, Path::new("/etc/vipd/./rules.yaml")).unwrap();
        assert_eq!(c.daemon.state_dir, Path::new("/etc/vipd/state"));
    }

    /// 100,000 nested brackets took 126 s before the parser's recursion
    /// limit refused them (its flow-level bookkeeping is quadratic); they
    /// are refused before parsing, at the bracket past the limit.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let d = 100_000;
        let text = format!(
            "{GOOD}plugins:\n  settings:\n    x: {}{}\n",
            "[".repeat(d),
            "]".repeat(d)
        );
        let e = parse(&text).unwrap_err().to_string();
        let line = GOOD.lines().count() + 3;
        assert_eq!(
            e,
            format!(
                "rules.yaml:{line}:{}: brackets nested more than 128 deep; refused before parsing",
                8 + 128
            )
        );
        // 128 deep is the parser's own business (its recursion limit).
        let text = format!(
            "{GOOD}plugins:\n  settings:\n    x: {}{}\n",
            "[".repeat(20),
            "]".repeat(20)
        );
        parse(&text).unwrap();
    }

    /// Found by the config fuzz target (fuzz/regressions/config/): an
    /// empty key made the error locator loop forever.
    #[test]
    fn an_empty_key_is_an_error_not_a_hang() {
        for text in ["\"\" : 1\n", "&a: 1\n", "daemon: { \"\" : 1 }\n"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains("unknown field ``") || e.contains("a top-level key must be text"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn good_config_builds() {
        let c = parse(GOOD).unwrap();
        let Provider::Recharge(w) = &c.providers["wapi"] else {
            panic!()
        };
        assert_eq!(w.base_url, "https://vendor.example");
        assert_eq!(w.appid, "1");
        assert_eq!(w.max_in_flight, 8);
        assert_eq!(c.products["qq_vip_month"].max_price, Fen(2000));
        assert_eq!(
            c.products["qq_vip_month"].adds,
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(c.accounts[0].provider, "qq");
        assert_eq!(c.accounts[0].qq_number, "5666857");
        assert_eq!(c.daemon.public_url, None);
        assert_eq!(c.daemon.callback_listen.port(), 9611);
        assert_eq!(
            c.literal_secrets,
            ["providers.wapi.secret", "accounts.alice.access_token"]
        );
    }

    #[test]
    fn unknown_keys_suggest_and_locate() {
        let text = GOOD.replace("    appid: 1\n", "    appid: 1\n    secert: x\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("rules.yaml:"), "{e}");
        assert!(
            e.contains("unknown field `secert`") && e.contains("did you mean `secret`?"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_entry_and_line() {
        let text = GOOD.replace("provider: wapi,", "provider: wpai,");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("product qq_vip_month: no provider named wpai (did you mean `wapi`?)"),
            "{e}"
        );
        assert!(e.starts_with("rules.yaml:11:"), "{e}");
    }

    #[test]
    fn missing_env_secret_names_the_variable_not_a_value() {
        let text = GOOD.replace(
            "\"0123456789abcdef0123456789abcdef\"",
            "\"${env:VIPD_TEST_SURELY_UNSET_42}\"",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains(
                "provider wapi: secret: environment variable VIPD_TEST_SURELY_UNSET_42 is not set"
            ),
            "{e}"
        );
    }

    const RULE: &str = r#"
rules:
  - name: keep
    accounts: { tags: [staff] }
    check: "*/10 * * * *"
    membership: qq_vip
    renew_before: 3d
    product: qq_vip_month
    budget: { per_day: 500, per_month: "3000.50" }
"#;

    #[test]
    fn rules_build_with_defaults() {
        let c = parse(&format!("{GOOD}{RULE}")).unwrap();
        let r = &c.rules[0];
        assert_eq!(r.accounts, [Arc::from("alice")]);
        assert_eq!(r.max_attempts, 3);
        assert_eq!(r.verify_within, Duration::from_secs(3600));
        assert_eq!(r.when_lapsed, WhenLapsed::Renew);
        assert_eq!(r.budget.per_month, Some(Fen(300_050)));
        assert_eq!(c.daemon.timezone, chrono_tz::Asia::Shanghai);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn rule_errors_name_the_rule() {
        let cases = [
            (
                "product: qq_vip_month",
                "product: qq_vip_mnth",
                "rule keep: no product named qq_vip_mnth (did you mean `qq_vip_month`?)",
            ),
            (
                "membership: qq_vip",
                "membership: qq_haohua",
                "rule keep: watches qq_haohua but product qq_vip_month extends qq_vip",
            ),
            (
                "{ tags: [staff] }",
                "{ names: [alcie] }",
                "rule keep: accounts: no account named alcie (did you mean `alice`?)",
            ),
            (
                "{ tags: [staff] }",
                "everyone",
                "rule keep: accounts: \"everyone\" is not a selector",
            ),
            (
                "\"*/10 * * * *\"",
                "\"* * *\"",
                "rule keep: cron \"* * *\" has 3 fields",
            ),
        ];
        for (from, to, want) in cases {
            let text = format!("{GOOD}{}", RULE.replace(from, to));
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{to}: {e}");
            assert!(e.starts_with("rules.yaml:"), "{e}");
        }
        let text = format!(
            "{GOOD}{}",
            RULE.replace("    accounts: { tags: [staff] }\n", "")
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("missing field `accounts`"), "{e}");
    }

    #[test]
    fn warnings_for_repeat_renewals_and_thin_windows() {
        let text = format!(
            "{GOOD}{}",
            RULE.replace("renew_before: 3d", "renew_before: 30d")
                .replace("\"*/10 * * * *\"", "{ every: 11d }")
        );
        let w = parse(&text).unwrap().warnings().join("\n");
        assert!(
            w.contains(
                "rule keep: renew_before (30d) is not smaller than what qq_vip_month adds (30d)"
            ),
            "{w}"
        );
        assert!(w.contains("fewer than three checks"), "{w}");
        let text = format!(
            "{GOOD}{}",
            RULE.replace("{ tags: [staff] }", "{ tags: [nobody] }")
        );
        assert!(
            parse(&text)
                .unwrap()
                .warnings()
                .join("")
                .contains("selects no account")
        );
    }

    #[test]
    fn unknown_timezone_is_an_error() {
        let text = GOOD.replace(
            "daemon: { sandbox: true }",
            "daemon: { sandbox: true, timezone: Mars/Olympus }",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("unknown zone \"Mars/Olympus\""), "{e}");
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let text = GOOD
            .replace("max_price: 20.00", "max_price: 0")
            .replace("qq_number: 5666857", "qq_number: abc");
        let errs = parse(&text).unwrap_err();
        assert_eq!(errs.0.len(), 2, "{errs}");
    }

    #[cfg(unix)]
    #[test]
    fn many_literal_secrets_warn_in_one_line() {
        use std::os::unix::fs::PermissionsExt;
        let readable = |text: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("rules.yaml");
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            Config::load(&path).unwrap().warnings()
        };
        let text = GOOD.replace("daemon: { sandbox: true }", "daemon: { sandbox: false }");
        // Two literal secrets: the vendor's, and alice's token.
        let few = readable(&text);
        assert_eq!(
            few.iter().filter(|w| w.contains("literally")).count(),
            2,
            "{few:?}"
        );

        let mut many = text.clone();
        for i in 0..9 {
            many.push_str(&format!(
                "  - {{ name: b{i}, qq_number: {}, openid: O{i}, access_token: t{i} }}\n",
                1000 + i
            ));
        }
        let warnings = readable(&many);
        let literal: Vec<_> = warnings
            .iter()
            .filter(|w| w.contains("literally"))
            .collect();
        assert_eq!(literal.len(), 1, "{warnings:?}");
        assert!(
            literal[0].starts_with("11 secrets are written literally")
                && literal[0].contains("providers.wapi.secret")
                && literal[0].contains("and 8 more"),
            "{}",
            literal[0]
        );
    }

    #[test]
    fn accounts_are_found_by_name_in_any_file_order() {
        let mut text = GOOD.to_owned();
        let names = ["zed", "bob", "carol", "a10", "a2", "a1"];
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!(
                "  - {{ name: {name}, qq_number: {}, openid: O{i}, access_token: t{i} }}\n",
                1000 + i
            ));
        }
        let c = parse(&text).unwrap();
        for name in names.iter().chain(&["alice"]) {
            assert_eq!(c.account(name).map(|a| a.name.as_str()), Some(*name));
        }
        assert_eq!(c.account("a3").map(|a| &a.name), None);
        assert_eq!(c.account("").map(|a| &a.name), None);
    }
}
