//! The shape of `rules.yaml`, exactly as written: serde structs that mirror
//! the file, with `deny_unknown_fields` everywhere. Nothing here is
//! validated beyond types; [`super::build`] turns these into runtime
//! values and names the offending entry in every error.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::model::{Format, HttpMethod, Knobs, Membership, SandboxMode, SignMode};
use crate::units::{Fen, HumanDuration, Rate};

/// The whole file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// The schema hint editors use; ignored.
    #[serde(default, rename = "$schema")]
    // Accepted so that unknown keys can be refused; never read.
    #[allow(dead_code)]
    pub schema: Option<String>,
    /// Where state lives, what to listen on, how to behave.
    #[serde(default)]
    pub daemon: RawDaemon,
    /// The upstream APIs by name: `qq_connect` reads memberships,
    /// `recharge` pays.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// What can be bought, by name.
    #[serde(default)]
    pub products: BTreeMap<String, RawProduct>,
    /// The accounts whose memberships are kept.
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    /// More accounts, from a JSON Lines file (a path relative to this
    /// file's folder) that the operator's own systems write: one account a
    /// line, an object of the same shape as an entry of `accounts:`
    /// (secrets in the same `${...}` forms); blank lines are skipped. Read
    /// at start and at every reload (a change to it reloads); names are
    /// unique across both.
    pub accounts_file: Option<String>,
    /// When to check which accounts, and what to renew when.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// The simulated upstream (with `daemon.sandbox: true` or `vipd sandbox`).
    #[serde(default)]
    pub sandbox: RawSandbox,
    /// Limits and settings of the Lua plugins.
    #[serde(default)]
    pub plugins: RawPlugins,
    /// Caps on recharges outside the rules.
    #[serde(default)]
    pub manual: RawManual,
}

/// `manual:`: recharges outside the rules (`vipd recharge`,
/// `POST /api/recharge`, `vipd.recharge` from Lua).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManual {
    /// Caps in yuan (default 100.00 a day, 500.00 a month).
    pub budget: Option<RawBudget>,
}

/// `plugins:` limits for Lua handlers and each plugin's own settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugins {
    /// Wall-clock limit per handler call.
    #[schemars(extend("default" = "5s"))]
    pub timeout: Option<HumanDuration>,
    /// Memory cap of the Lua state, in MiB.
    #[schemars(extend("default" = 64), range(min = 1))]
    pub memory_mb: Option<u64>,
    /// Lua VM instructions per handler call.
    #[schemars(extend("default" = 100_000_000), range(min = 1))]
    pub instructions: Option<u64>,
    /// Each plugin's `vipd.kv` quota in MiB: kept, and written per minute.
    #[schemars(extend("default" = 16), range(min = 1, max = 1024))]
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
    /// Secrets `vipd.http` signs outgoing webhooks with (`{sign = NAME}`):
    /// name → secret, in any of the secret forms (`${env:…}`,
    /// `${file:…}`, `${credential:…}`), at least 16 characters. Plugins
    /// name a secret; they never see it.
    #[serde(default)]
    pub webhook_secrets: BTreeMap<String, String>,
}

/// One of `daemon.tokens`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToken {
    /// The bearer token (a secret).
    #[schemars(schema_with = "secret")]
    pub token: String,
    /// `admin` (everything) or `read` (status, orders, plan, metrics).
    #[serde(default)]
    pub access: Access,
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Everything, spending money included.
    #[default]
    Admin,
    /// `GET` status, orders, their traces, plan and metrics.
    Read,
}

/// `daemon:`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDaemon {
    /// The ledger store's folder, relative to this file; `$STATE_DIRECTORY`
    /// and `--state-dir` win.
    #[schemars(extend("default" = "state"))]
    pub state_dir: Option<String>,
    /// Where the Lua plugins (`*.lua`) are, relative to this file.
    #[schemars(extend("default" = "scripts"))]
    pub scripts_dir: Option<String>,
    /// IANA zone for cron schedules and budget days.
    #[schemars(extend("default" = "Asia/Shanghai"))]
    pub timezone: Option<String>,
    /// The admin API and `/metrics` (`host:port`); other hosts need `admin_token`.
    #[schemars(extend("default" = "127.0.0.1:9610"))]
    pub admin_listen: Option<String>,
    /// Where the vendor's callbacks are received (`host:port`).
    #[schemars(extend("default" = "127.0.0.1:9611"))]
    pub callback_listen: Option<String>,
    /// The callback URL the vendor is given, without a trailing slash
    /// (default: the callback listener's address).
    #[schemars(url)]
    pub public_url: Option<String>,
    /// Run the simulated upstream in-process and point providers at it.
    #[serde(default)]
    pub sandbox: bool,
    /// Where the in-process sandbox listens (default a free loopback port).
    #[schemars(extend("default" = "127.0.0.1:0"))]
    pub sandbox_listen: Option<String>,
    /// Decide and log, never pay.
    #[serde(default)]
    pub dry_run: bool,
    /// Bearer token for every admin request (a secret); required when
    /// `admin_listen` is not loopback.
    #[serde(default)]
    #[schemars(schema_with = "secret")]
    pub admin_token: Option<String>,
    /// A second bearer token that may only read (`/metrics`, status,
    /// orders, plan); a secret.
    #[serde(default)]
    #[schemars(schema_with = "secret")]
    pub read_token: Option<String>,
    /// More bearer tokens, each named: the name is recorded as who made
    /// each manual change (`admin_token` is named `admin`, `read_token`
    /// `read`). Each may do everything (`access: admin`) or only read.
    #[serde(default)]
    pub tokens: BTreeMap<String, RawToken>,
    /// First checks after start-up are spread over this.
    #[schemars(extend("default" = "10s"))]
    pub startup_spread: Option<HumanDuration>,
    /// How often a paused provider lets one order through as a probe.
    #[schemars(extend("default" = "10m"))]
    pub probe_every: Option<HumanDuration>,
    /// Account checks running at once.
    #[schemars(extend("default" = 64), range(min = 1))]
    pub max_concurrent_checks: Option<u32>,
    /// The first retry delay after a failure that was not billed (default
    /// 60s); later retries double it, up to 30 times it.
    #[schemars(extend("default" = "60s"))]
    pub retry_base: Option<HumanDuration>,
    /// How long recorded events are kept (orders are kept for ever).
    #[schemars(extend("default" = "400d"))]
    pub event_retention: Option<HumanDuration>,
    /// Where the ledger is kept: `sled` in `state_dir` (one node, the
    /// default), or `postgres`, shared by several nodes.
    #[serde(default)]
    pub store: Option<RawStore>,
}

/// `daemon.store`, told apart by `kind`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RawStore {
    /// The embedded store in `state_dir`.
    Sled,
    /// A PostgreSQL database shared by every node of a cluster.
    Postgres {
        /// A libpq connection string or `postgres://` URL (a secret: it may
        /// hold the password), e.g. `"${env:VIPD_PG_URL}"`.
        #[schemars(schema_with = "secret")]
        url: String,
        /// This node's name, unique in the cluster (default: the host name).
        #[serde(default)]
        node: Option<String>,
        /// How long a node's lease lasts unless renewed (every third of
        /// it): a dead node's accounts are taken over within this.
        #[schemars(extend("default" = "15s"))]
        #[serde(default)]
        lease: Option<HumanDuration>,
        /// Database connections this node keeps at most.
        #[schemars(extend("default" = 16), range(min = 2, max = 256))]
        #[serde(default)]
        pool_size: Option<u32>,
    },
}

/// One entry of `providers:`, told apart by `kind`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Built once per configuration load; a few hundred bytes per provider
// are not worth a box at every use.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RawProvider {
    /// Membership reads (QQ Connect).
    QqConnect(RawQqConnect),
    /// The vendor's signed recharge API.
    Recharge(RawRecharge),
}

/// `kind: qq_connect`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQqConnect {
    /// The API's base URL, e.g. `https://graph.qq.com`.
    #[schemars(url)]
    pub base_url: String,
    /// The app id (`oauth_consumer_key`), text or a number.
    #[serde(deserialize_with = "string_or_number")]
    #[schemars(schema_with = "id")]
    pub oauth_consumer_key: String,
    /// The app key (a secret), needed only to refresh access tokens.
    #[serde(default)]
    #[schemars(schema_with = "secret")]
    pub client_secret: Option<String>,
    /// Per request.
    #[schemars(extend("default" = "10s"))]
    pub timeout: Option<HumanDuration>,
    /// Requests at most this often (unlimited when absent).
    pub rate_limit: Option<Rate>,
    /// Reply format to ask for.
    #[serde(default)]
    pub format: Format,
}

/// `kind: recharge`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecharge {
    /// The vendor's base URL.
    #[schemars(url)]
    pub base_url: String,
    /// The vendor's app id, text or a number.
    #[serde(deserialize_with = "string_or_number")]
    #[schemars(schema_with = "id")]
    pub appid: String,
    /// The signing secret (a secret).
    #[schemars(schema_with = "secret")]
    pub secret: String,
    /// `md5`: the vendor's MD5 signature; `hash`: the secret itself.
    #[serde(default)]
    pub sign_mode: SignMode,
    /// How requests are sent.
    #[serde(default)]
    pub method: HttpMethod,
    /// Ask the vendor for its debug replies (10024): nothing is paid.
    #[serde(default)]
    pub debug: bool,
    /// Per request.
    #[schemars(extend("default" = "15s"))]
    pub timeout: Option<HumanDuration>,
    /// Requests at most this often (unlimited when absent).
    pub rate_limit: Option<Rate>,
    /// Recharge requests in flight at once.
    #[schemars(extend("default" = 8), range(min = 1))]
    pub max_in_flight: Option<u32>,
    /// The parameter naming the account.
    #[schemars(extend("default" = "qq_number"))]
    pub target_param: Option<String>,
    /// How the vendor's callbacks are read.
    #[serde(default)]
    pub callback: RawCallback,
}

/// `callback:` of a recharge provider: how its callbacks are read.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallback {
    /// The field holding the vendor's order id.
    #[schemars(extend("default" = "orderid"))]
    pub order_field: Option<String>,
    /// The field holding the outcome.
    #[schemars(extend("default" = "status"))]
    pub status_field: Option<String>,
    /// The field holding the signature.
    #[schemars(extend("default" = "sign"))]
    pub sign_field: Option<String>,
    /// The field holding the price paid, when the vendor sends one.
    #[schemars(extend("default" = "price"))]
    pub price_field: Option<String>,
    /// Status values that mean paid.
    #[schemars(extend("default" = ["success", "1", "10000"]))]
    pub success_values: Option<Vec<String>>,
    /// Status values that mean not paid.
    #[schemars(extend("default" = ["failed", "fail", "0"]))]
    pub failure_values: Option<Vec<String>>,
    /// The body answered to an accepted callback.
    #[schemars(extend("default" = "success"))]
    pub reply: Option<String>,
    /// The field holding the callback's time (unix seconds), if any.
    #[schemars(extend("default" = "time"))]
    pub time_field: Option<String>,
    /// Callbacks older than this (by `time_field`) are refused.
    #[schemars(extend("default" = "1d"))]
    pub max_age: Option<HumanDuration>,
    /// A pending order with no callback within this becomes `unknown`.
    #[schemars(extend("default" = "2h"))]
    pub within: Option<HumanDuration>,
}

/// One entry of `products:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProduct {
    /// The `recharge` provider that sells it.
    pub provider: String,
    /// The API path, e.g. `/api/164/310`.
    pub path: String,
    /// The membership it extends.
    pub extends: Membership,
    /// How much it adds to the membership.
    pub adds: HumanDuration,
    /// The most one order may cost, in yuan; counted against budgets.
    pub max_price: Fen,
    /// Extra request parameters the vendor wants for this product.
    #[serde(default, deserialize_with = "string_map")]
    #[schemars(schema_with = "id_map")]
    pub params: BTreeMap<String, String>,
}

/// One entry of `accounts:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    /// Unique; part of every order key.
    pub name: String,
    /// The QQ number recharged, text or a number.
    #[serde(deserialize_with = "string_or_number")]
    #[schemars(schema_with = "id")]
    pub qq_number: String,
    /// The account's openid at the QQ Connect app.
    pub openid: String,
    /// QQ Connect access token (a secret).
    #[schemars(schema_with = "secret")]
    pub access_token: String,
    /// QQ Connect refresh token (a secret); with the provider's
    /// `client_secret`, access tokens are refreshed ahead of expiry.
    #[serde(default)]
    #[schemars(schema_with = "secret")]
    pub refresh_token: Option<String>,
    /// Labels rules select accounts by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The `qq_connect` provider that reads this account (default: the
    /// only one).
    pub provider: Option<String>,
}

/// One entry of `rules:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// Unique (not `manual`); part of every order key.
    pub name: String,
    /// Whom it pays for: `all`, `{tags: [...]}` or `{names: [...]}`.
    pub accounts: RawSelector,
    /// When it checks: a crontab expression or `{every: 10m}`.
    pub check: RawCheck,
    /// The membership it keeps.
    pub membership: Membership,
    /// Renew when the membership ends within this.
    pub renew_before: HumanDuration,
    /// What it buys (must extend `membership`).
    pub product: String,
    /// What to do when the membership has already lapsed.
    #[serde(default)]
    pub when_lapsed: WhenLapsed,
    /// Spending caps in yuan, per day and per month (no cap when absent).
    #[serde(default)]
    pub budget: RawBudget,
    /// Requests sent per period at most.
    #[schemars(extend("default" = 3), range(min = 1))]
    pub max_attempts: Option<u32>,
    /// How long after a success the new end must show.
    #[schemars(extend("default" = "1h"))]
    pub verify_within: Option<HumanDuration>,
    /// Alert (`renewal_at_risk`) when the membership ends within this and
    /// no renewal has moved its end, whatever its order's state. Default:
    /// half of `renew_before`.
    pub at_risk: Option<HumanDuration>,
    /// While a renewal awaits approval, `approval_escalated` fires as the
    /// membership's end comes within each of these (once each); when the
    /// end passes unapproved, `renewal_unapproved`.
    #[schemars(extend("default" = ["72h", "24h", "6h"]))]
    pub escalate: Option<Vec<HumanDuration>>,
}

/// `accounts:` of a rule: `all`, `{ tags: [...] }` or `{ names: [...] }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum RawSelector {
    /// Only `all` is accepted.
    Word(String),
    /// Tags and/or names.
    Map(RawSelectorMap),
}

/// The mapping form of a selector.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSelectorMap {
    /// Accounts with any of these tags.
    pub tags: Option<Vec<String>>,
    /// Accounts with these names.
    pub names: Option<Vec<String>>,
}

/// `check:` of a rule: a cron expression or `{ every: 10m }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum RawCheck {
    /// 5 or 6 fields.
    Cron(String),
    /// A fixed interval.
    Every(RawEvery),
}

/// `{ every: DURATION }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvery {
    /// The interval between checks.
    pub every: HumanDuration,
}

/// What to do when the membership has already lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WhenLapsed {
    /// Buy a renewal anyway.
    #[default]
    Renew,
    /// Leave it lapsed (and say so).
    Skip,
}

/// `budget:` of a rule, in yuan.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    /// Spent or held per calendar day (in `daemon.timezone`).
    pub per_day: Option<Fen>,
    /// Spent or held per calendar month.
    pub per_month: Option<Fen>,
    /// A renewal priced above this waits for a person's approval
    /// (`vipd orders approve KEY --reason …`), holding its money in the
    /// budget, never sent until approved. Rules only.
    pub approve_above: Option<Fen>,
    /// A renewal that would leave less than this under the day's or the
    /// month's cap waits for approval. Rules only.
    pub approve_when_budget_left_below: Option<Fen>,
}

/// `sandbox:`: the simulated upstream's starting state and fault knobs.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    /// `sync` answers 10000; `async` answers 10023 and calls back.
    #[schemars(extend("default" = "async"))]
    pub mode: Option<SandboxMode>,
    /// How long after a sale an async callback is sent.
    #[schemars(extend("default" = "500ms"))]
    pub callback_delay: Option<HumanDuration>,
    /// How long a refreshed access token lives (QQ's 90 days).
    #[schemars(extend("default" = "90d"))]
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
    /// Faults injected into each API.
    #[serde(default)]
    pub faults: RawFaults,
    /// Seed for the fault dice, for reproducible runs.
    pub seed: Option<u64>,
}

/// Fault knobs per API.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFaults {
    /// Faults of the recharge API.
    #[serde(default)]
    pub recharge: Knobs,
    /// Faults of the membership API.
    #[serde(default)]
    pub vip_info: Knobs,
}

/// A secret: `${env:NAME}`, `${file:PATH}`, `${credential:NAME}`, or
/// (warned about) the value itself.
fn secret(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "description": "A secret: \"${env:NAME}\", \"${file:PATH}\" or \"${credential:NAME}\" (systemd LoadCredential); a literal value is warned about.",
        "examples": ["${credential:wapi_secret}", "${env:VIPD_WAPI_SECRET}", "${file:/etc/vipd/secret}"]
    })
}

/// An id YAML may read as a number.
fn id(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": ["string", "integer"], "minLength": 1 })
}

/// Extra request parameters: text or numbers.
fn id_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": { "type": ["string", "number", "boolean"] },
        "default": {}
    })
}

/// Accepts `"1"` and `1` alike for ids that YAML would read as numbers.
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
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
