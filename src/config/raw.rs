//! The shape of `rules.yaml`, exactly as written: serde structs that mirror
//! the file, with `deny_unknown_fields` everywhere. Nothing here is
//! validated beyond types; [`super::build`] turns these into runtime
//! values and names the offending entry in every error.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::units::{Fen, HumanDuration, Rate};
use crate::upstream::HttpMethod;
use crate::upstream::sign::SignMode;
use crate::upstream::vipinfo::{Format, Membership};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The schema hint editors use; ignored.
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub products: BTreeMap<String, RawProduct>,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub sandbox: RawSandbox,
    #[serde(default)]
    pub plugins: RawPlugins,
    #[serde(default)]
    pub manual: RawManual,
}

/// `manual:`: recharges outside the rules (`vipd recharge`,
/// `POST /api/recharge`, `vipd.recharge` from Lua).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManual {
    pub budget: Option<RawBudget>,
}

/// `plugins:` limits for Lua handlers and each plugin's own settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    /// Wall-clock limit per handler call.
    pub timeout: Option<HumanDuration>,
    /// Memory cap of the Lua state, in MiB.
    pub memory_mb: Option<u64>,
    /// Lua VM instructions per handler call.
    pub instructions: Option<u64>,
    /// Each plugin's `vipd.kv` quota in MiB: kept, and written per minute.
    pub kv_mb: Option<u64>,
    /// `settings.{plugin}`: free-form values that plugin reads as
    /// `vipd.settings`.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// `host:port` destinations `vipd.http` may reach although they are
    /// loopback or the daemon's own listeners.
    #[serde(default)]
    pub http_allow: Vec<String>,
    /// Recharge providers whose secret `vipd.sign{provider=}` may use.
    #[serde(default)]
    pub sign_with: Vec<String>,
}

/// `daemon:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub state_dir: Option<String>,
    pub scripts_dir: Option<String>,
    pub timezone: Option<String>,
    pub admin_listen: Option<String>,
    pub callback_listen: Option<String>,
    pub public_url: Option<String>,
    /// Run the simulated upstream in-process and point providers at it.
    #[serde(default)]
    pub sandbox: bool,
    /// Where the in-process sandbox listens (default a free loopback port).
    pub sandbox_listen: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub admin_token: Option<String>,
    /// A second bearer token that may only read (`/metrics`, status,
    /// orders, plan).
    pub read_token: Option<String>,
    /// First checks after start-up are spread over this (default 10s).
    pub startup_spread: Option<HumanDuration>,
    /// How often a paused provider lets one order through as a probe.
    pub probe_every: Option<HumanDuration>,
    /// Account checks running at once (default 64).
    pub max_concurrent_checks: Option<u32>,
    /// The first retry delay after a failure that was not billed (default
    /// 60s); later retries double it, up to 30 times it.
    pub retry_base: Option<HumanDuration>,
    /// How long recorded events are kept (default 400d).
    pub event_retention: Option<HumanDuration>,
}

/// One entry of `providers:`, told apart by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Built once per configuration load; a few hundred bytes per provider
// are not worth a box at every use.
#[allow(clippy::large_enum_variant)]
pub enum RawProvider {
    /// Membership reads (QQ Connect).
    QqConnect(RawQqConnect),
    /// The vendor's signed recharge API.
    Recharge(RawRecharge),
}

/// `kind: qq_connect`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQqConnect {
    pub base_url: String,
    #[serde(deserialize_with = "string_or_number")]
    pub oauth_consumer_key: String,
    /// The app key, needed only to refresh access tokens.
    pub client_secret: Option<String>,
    pub timeout: Option<HumanDuration>,
    pub rate_limit: Option<Rate>,
    #[serde(default)]
    pub format: Format,
}

/// `kind: recharge`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecharge {
    pub base_url: String,
    #[serde(deserialize_with = "string_or_number")]
    pub appid: String,
    pub secret: String,
    #[serde(default)]
    pub sign_mode: SignMode,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default)]
    pub debug: bool,
    pub timeout: Option<HumanDuration>,
    pub rate_limit: Option<Rate>,
    pub max_in_flight: Option<u32>,
    /// The parameter naming the account (default `qq_number`).
    pub target_param: Option<String>,
    #[serde(default)]
    pub callback: RawCallback,
}

/// `callback:` of a recharge provider: how its callbacks are read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallback {
    pub order_field: Option<String>,
    pub status_field: Option<String>,
    pub sign_field: Option<String>,
    pub price_field: Option<String>,
    pub success_values: Option<Vec<String>>,
    pub failure_values: Option<Vec<String>>,
    pub reply: Option<String>,
    pub time_field: Option<String>,
    pub max_age: Option<HumanDuration>,
    pub within: Option<HumanDuration>,
}

/// One entry of `products:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProduct {
    pub provider: String,
    pub path: String,
    pub extends: Membership,
    pub adds: HumanDuration,
    pub max_price: Fen,
    /// Extra request parameters the vendor wants for this product.
    #[serde(default, deserialize_with = "string_map")]
    pub params: BTreeMap<String, String>,
}

/// One entry of `accounts:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub name: String,
    #[serde(deserialize_with = "string_or_number")]
    pub qq_number: String,
    pub openid: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The `qq_connect` provider that reads this account (default: the
    /// only one).
    pub provider: Option<String>,
}

/// One entry of `rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    /// Required: a rule that pays must say whom it pays for.
    pub accounts: RawSelector,
    pub check: RawCheck,
    pub membership: Membership,
    pub renew_before: HumanDuration,
    pub product: String,
    #[serde(default)]
    pub when_lapsed: WhenLapsed,
    #[serde(default)]
    pub budget: RawBudget,
    pub max_attempts: Option<u32>,
    pub verify_within: Option<HumanDuration>,
}

/// `accounts:` of a rule: `all`, `{ tags: [...] }` or `{ names: [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSelector {
    /// Only `all` is accepted.
    Word(String),
    /// Tags and/or names.
    Map(RawSelectorMap),
}

/// The mapping form of a selector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelectorMap {
    pub tags: Option<Vec<String>>,
    pub names: Option<Vec<String>>,
}

/// `check:` of a rule: a cron expression or `{ every: 10m }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCheck {
    /// 5 or 6 fields.
    Cron(String),
    /// A fixed interval.
    Every(RawEvery),
}

/// `{ every: DURATION }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvery {
    pub every: HumanDuration,
}

/// What to do when the membership has already lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenLapsed {
    /// Buy a renewal anyway.
    #[default]
    Renew,
    /// Leave it lapsed (and say so).
    Skip,
}

/// `budget:` of a rule, in yuan.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub per_day: Option<Fen>,
    pub per_month: Option<Fen>,
}

/// `sandbox:`: the simulated upstream's starting state and fault knobs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    /// `sync` answers 10000; `async` answers 10023 and calls back.
    pub mode: Option<SandboxMode>,
    pub callback_delay: Option<HumanDuration>,
    /// How long a refreshed access token lives (QQ's 90 days by default).
    pub token_ttl: Option<HumanDuration>,
    /// Money at the vendor; unlimited when absent.
    pub balance: Option<Fen>,
    /// Price charged per product (default: the product's `max_price`).
    #[serde(default)]
    pub prices: BTreeMap<String, Fen>,
    /// Starting memberships: account → membership → end relative to the
    /// sandbox's start (`2d`, `-1h`).
    #[serde(default)]
    pub memberships: BTreeMap<String, BTreeMap<Membership, String>>,
    #[serde(default)]
    pub faults: RawFaults,
    /// Seed for the fault dice, for reproducible runs.
    pub seed: Option<u64>,
}

/// The sandbox's recharge mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Answer 10000 and extend at once.
    Sync,
    /// Answer 10023, extend and call back after `callback_delay`.
    #[default]
    Async,
}

/// Fault knobs per API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaults {
    #[serde(default)]
    pub recharge: crate::sandbox::Knobs,
    #[serde(default)]
    pub vip_info: crate::sandbox::Knobs,
}

/// Accepts `"1"` and `1` alike for ids that YAML would read as numbers.
pub fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        Str(String),
        Int(i64),
        UInt(u64),
    }
    Ok(
        match S::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a string or a whole number"))?
        {
            S::Str(s) => s,
            S::Int(i) => i.to_string(),
            S::UInt(u) => u.to_string(),
        },
    )
}

fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct V(#[serde(deserialize_with = "string_or_number")] String);
    let m: BTreeMap<String, V> = BTreeMap::deserialize(d)?;
    Ok(m.into_iter().map(|(k, V(v))| (k, v)).collect())
}
