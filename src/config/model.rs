//! The validated configuration's types: what the rest of vipd reads.
//! Built only by `build.rs`; a value that exists is valid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Access, Budget, CallbackMapping, ConfigError, Rule, SandboxMode, Secret};
use crate::model::{Format, HttpMethod, Knobs, Membership, SignMode, Signer};
use crate::units::{Fen, Rate};

/// How long after a paid renewal its new end must show, unless a rule
/// says otherwise (`verify_within`); manual orders always use it.
pub(crate) const VERIFY_WITHIN: Duration = Duration::from_secs(3600);

/// A secret this process could not read (a `${credential:}` outside the
/// service): where it is in the file, and the located error.
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// Its key path, e.g. `["daemon", "admin_token"]`: what callers
    /// branch on.
    pub at: Vec<String>,
    /// The error, with file, line and column.
    pub error: ConfigError,
}

impl Unavailable {
    /// Whether this is the secret at `path`.
    pub(crate) fn is_at(&self, path: &[&str]) -> bool {
        self.at.iter().map(String::as_str).eq(path.iter().copied())
    }
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
    pub products: BTreeMap<String, Arc<Product>>,
    /// `accounts:` in file order, then those of `accounts_file:` in line
    /// order; names are unique.
    pub accounts: Vec<Account>,
    /// `accounts_file:`, when one is named.
    pub accounts_file: Option<AccountsFile>,
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
    /// `${credential:}` secrets that cannot be read outside the service,
    /// left empty. [`Config::load`] refuses them; [`Config::load_outside`]
    /// keeps them as warnings.
    pub unavailable: Vec<Unavailable>,
    /// Indices into `accounts` in name order, for binary search: every
    /// check looks its account up, so with 10,000 accounts a scan would
    /// cost O(n²) per cycle. Four bytes an account, where a map keyed by
    /// a copy of each name took about seventy.
    pub(super) account_index: Vec<u32>,
}

/// The JSON Lines file accounts were also read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsFile {
    /// Resolved against the configuration's folder.
    pub path: PathBuf,
    /// Accounts read from it.
    pub accounts: usize,
    /// Of their secrets, those written literally (for the warning about
    /// readable files; counted, not listed, since a file may hold a
    /// million).
    pub literal_secrets: usize,
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
            budget: Budget::caps(Some(Fen(10_000)), Some(Fen(50_000))),
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
    /// Secrets `vipd.http` signs webhooks with, by name.
    pub webhook_secrets: BTreeMap<String, Secret>,
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
            webhook_secrets: BTreeMap::new(),
        }
    }
}

/// The name `daemon.admin_token` goes by.
pub const ADMIN: &str = "admin";
/// The name `daemon.read_token` goes by.
pub(crate) const READ: &str = "read";

/// A bearer token of the admin API.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Who uses it, as recorded with each manual change.
    pub name: String,
    pub secret: Secret,
    pub access: Access,
}

impl Daemon {
    /// Whether some token may write: without one the API is open to
    /// loopback peers.
    pub fn guarded(&self) -> bool {
        self.tokens.iter().any(|t| t.access == Access::Admin)
    }
}

/// Where the state folder was given, strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDirFrom {
    /// `daemon.state_dir`, or its default `state` beside the file.
    File,
    /// `$STATE_DIRECTORY`, as systemd sets it.
    Environment,
    /// `--state-dir`.
    CommandLine,
}

/// `daemon:` with defaults applied.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// The sled store. `$STATE_DIRECTORY` (systemd) wins over the file,
    /// and `--state-dir` ([`Config::set_state_dir`]) over both.
    pub state_dir: PathBuf,
    /// Where `state_dir` was given.
    pub state_dir_from: StateDirFrom,
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
    /// Every bearer token the admin API takes, named (`admin_token` is
    /// `admin`, `read_token` is `read`); empty: an API open to loopback.
    pub tokens: Vec<ApiToken>,
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
    /// Where the ledger is kept.
    pub store: StoreKind,
}

/// Where the ledger is kept.
#[derive(Debug, Clone, Default)]
pub enum StoreKind {
    /// sled, in `state_dir`.
    #[default]
    Sled,
    /// A PostgreSQL database shared by several nodes.
    Postgres {
        /// The connection string (may hold the password).
        url: Secret,
        /// This node's name.
        node: String,
        /// A lease's length.
        lease: Duration,
        /// Connections kept at most.
        pool_size: usize,
    },
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

    pub(super) fn set_base_url(&mut self, url: &str) {
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
pub(crate) const QQ_TOKEN_TTL: Duration = Duration::from_secs(90 * 86_400);

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
