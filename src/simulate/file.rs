//! The test file `vipd test` reads: what is given, what happens, and what
//! must be true. The types are the schema (`vipd schema --tests`); every
//! key is described for editors, and unknown keys are refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::raw::RawSandbox;
use crate::config::{ConfigError, ConfigErrors};
use crate::ledger::OrderState;
use crate::model::Membership;
use crate::sandbox::ControlChange;
use crate::units::{Fen, HumanDuration};

/// A file of tests for `vipd test`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The tests, each run from a fresh start: a new ledger, a new vendor,
    /// the clock at `start`.
    pub tests: Vec<TestCase>,
}

/// One test: a rules file, a vendor, a timeline, and what must hold.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// The test's name, in the report.
    pub name: String,
    /// The rules file to test, relative to this test file.
    pub rules: String,
    /// When the test starts (RFC 3339; default 2027-01-15T08:00:00Z).
    /// Budget days and months follow from it.
    pub start: Option<String>,
    /// The vendor's starting state: these keys replace those of the rules
    /// file's `sandbox:` section (memberships relative to `start`: `2d`,
    /// `-1h`; mode, callback delay, balance, prices, faults, seed).
    pub sandbox: Option<RawSandbox>,
    /// The Lua plugins to load: a folder of `*.lua`, relative to this
    /// file (default: the rules file's `daemon.scripts_dir`, as `vipd run`
    /// loads them), for every configuration of the test. They run on the
    /// simulated clock; their `vipd.http` requests are not sent (each is
    /// answered `200` with an empty body, and counted: `expect: http`).
    pub scripts_dir: Option<String>,
    /// What happens, in order. Time passes only in `advance` steps (and at
    /// the end, by `run_for`).
    #[serde(default)]
    pub timeline: Vec<Step>,
    /// How long the run goes on after the timeline before the final
    /// expectations (default 0s).
    pub run_for: Option<HumanDuration>,
    /// What must be true at the end.
    #[serde(default)]
    pub expect: Expect,
}

/// One step of a timeline: a mapping with exactly one of its keys.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(try_from = "RawStep")]
#[schemars(with = "RawStep")]
pub enum Step {
    Advance(HumanDuration),
    ClockStep(String),
    Vendor(ControlChange),
    Reload(String),
    RedeliverCallback(String),
    Resolve(ResolveStep),
    Approve(AnswerStep),
    Decline(AnswerStep),
    Forecast(HumanDuration),
    Expect(Expect),
}

/// One step of a timeline, as written: exactly one of these keys.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub(crate) struct RawStep {
    /// Let this long pass with everything running (`3d`, `90m`).
    advance: Option<HumanDuration>,
    /// Step the daemon's wall clock (`+2h`, `-30m`), as an operator or a
    /// bad NTP server would; the vendor's clock keeps true time.
    clock_step: Option<String>,
    /// Change the vendor's behaviour from now on (mode, callback delay,
    /// balance, faults).
    vendor: Option<ControlChange>,
    /// Reload with another rules file (relative to this test file), as
    /// `vipd run` does on SIGHUP.
    reload: Option<String>,
    /// The vendor delivers the last callback of this account's latest
    /// order again, exactly as it was first sent.
    redeliver_callback: Option<String>,
    /// An operator settles this account's latest order, as `vipd orders
    /// resolve` does.
    resolve: Option<ResolveStep>,
    /// An operator approves this account's latest order awaiting
    /// approval, as `vipd orders approve` does (recorded as by `vipd test`).
    approve: Option<AnswerStep>,
    /// An operator declines this account's latest order awaiting
    /// approval, as `vipd orders decline` does.
    decline: Option<AnswerStep>,
    /// Make the forecast (`vipd forecast`) now, for this many whole days
    /// (`30d`); once its window is over, what the run paid in it must
    /// agree: as many renewals per rule, no more spent than it said.
    forecast: Option<HumanDuration>,
    /// These must be true now.
    expect: Option<Expect>,
}

impl TryFrom<RawStep> for Step {
    type Error = String;
    fn try_from(r: RawStep) -> Result<Step, String> {
        let mut steps = Vec::new();
        steps.extend(r.advance.map(Step::Advance));
        steps.extend(r.clock_step.map(Step::ClockStep));
        steps.extend(r.vendor.map(Step::Vendor));
        steps.extend(r.reload.map(Step::Reload));
        steps.extend(r.redeliver_callback.map(Step::RedeliverCallback));
        steps.extend(r.resolve.map(Step::Resolve));
        steps.extend(r.approve.map(Step::Approve));
        steps.extend(r.decline.map(Step::Decline));
        steps.extend(r.forecast.map(Step::Forecast));
        steps.extend(r.expect.map(Step::Expect));
        match (steps.pop(), steps.is_empty()) {
            (Some(step), true) => Ok(step),
            _ => Err(
                "a step has exactly one of advance, clock_step, vendor, reload, \
                      redeliver_callback, resolve, approve, decline, forecast, expect"
                    .into(),
            ),
        }
    }
}

/// `resolve:` an account's latest open order, on an operator's word.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveStep {
    /// The account.
    pub account: String,
    /// `succeeded` (it was paid) or `failed` (it was not).
    #[serde(rename = "as")]
    pub as_state: OrderState,
    /// Why (recorded with it; default "resolved in a vipd test").
    pub reason: Option<String>,
}

/// `approve:` or `decline:` an account's latest order awaiting approval.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerStep {
    /// The account.
    pub account: String,
    /// Why (required, as on the command line).
    pub reason: String,
}

/// What must be true. Beside these, every expectation checks vipd's
/// promises: nothing paid twice, and no covered membership lapsed without
/// an alert.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Orders in the ledger.
    #[serde(default)]
    pub orders: Vec<OrdersExpect>,
    /// Requests the vendor billed (and did not refund), per account.
    #[serde(default)]
    pub billed: BTreeMap<String, usize>,
    /// Events fired.
    #[serde(default)]
    pub events: Vec<EventsExpect>,
    /// Money spent under a rule.
    #[serde(default)]
    pub spend: Vec<SpendExpect>,
    /// Memberships' ends, as the vendor holds them.
    #[serde(default)]
    pub memberships: Vec<MembershipExpect>,
    /// Plugins' `vipd.kv` values.
    #[serde(default)]
    pub kv: Vec<KvExpect>,
    /// Plugins' `vipd.http` requests (answered, never sent).
    #[serde(default)]
    pub http: Vec<HttpExpect>,
}

/// One plugin's `vipd.kv` key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvExpect {
    /// The plugin (its file name without `.lua`).
    pub plugin: String,
    /// The key.
    pub key: String,
    /// Its value (any YAML; `null`: the key is not set).
    pub value: serde_json::Value,
}

/// Plugins' `vipd.http` requests whose method and URL (without its query)
/// start with `url`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpExpect {
    /// `POST https://hooks.example/` and the like: a prefix of
    /// `METHOD URL`.
    pub url: String,
    /// Exactly this many (default: at least one; 0: none).
    pub count: Option<usize>,
}

/// The orders of one account (and rule, and state): how many, and their
/// price.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrdersExpect {
    /// The account.
    pub account: String,
    /// Only this rule's orders (`manual` for manual ones).
    pub rule: Option<String>,
    /// Only orders in this state.
    pub state: Option<OrderState>,
    /// Exactly this many (default: at least one).
    pub count: Option<usize>,
    /// Each one's price, as paid.
    pub price: Option<Fen>,
}

/// Events of one kind: how many, and by when.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsExpect {
    /// The event (`renewal_verified`, `budget_exceeded`, ...).
    pub kind: String,
    /// Only those naming this account.
    pub account: Option<String>,
    /// Exactly this many (default: at least one; 0: none).
    pub count: Option<usize>,
    /// The first came at most this long after the test's start.
    pub within: Option<HumanDuration>,
}

/// What a rule spent over the run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendExpect {
    /// The rule (`manual` for manual orders).
    pub rule: String,
    /// The sum of what its orders cost.
    pub total: Fen,
}

/// A membership's end, as the vendor holds it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipExpect {
    /// The account.
    pub account: String,
    /// The membership.
    pub membership: Membership,
    /// Its end, relative to the test's start (`32d`, `-1d`).
    pub ends: String,
    /// How far the end may be from that (default 1h).
    pub tolerance: Option<HumanDuration>,
}

/// A test file read: its tests, and where each entry is.
pub struct Loaded {
    pub path: PathBuf,
    pub file: TestFile,
    /// The same text as a YAML value (a test's `sandbox:` keys, as written).
    pub raw: yaml_serde::Value,
    pub spans: crate::config::spans::Spans,
}

impl Loaded {
    /// Reads `path`; an error names the file, line and column.
    pub fn read(path: &Path) -> Result<Loaded, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one(path, format!("cannot read: {e}")))?;
        let file: TestFile =
            yaml_serde::from_str(&text).map_err(|e| ConfigErrors::from_yaml(path, &e))?;
        let raw = yaml_serde::from_str(&text).map_err(|e| ConfigErrors::from_yaml(path, &e))?;
        Ok(Loaded {
            path: path.to_owned(),
            file,
            raw,
            spans: crate::config::spans::Spans::parse(&text),
        })
    }

    /// An error at the entry `path` names (`["tests", "0", "rules"]`).
    pub(crate) fn error_at(&self, at: &[&str], message: impl Into<String>) -> ConfigError {
        let found = self.spans.locate(at);
        ConfigError {
            file: self.path.clone(),
            line: found.map(|a| a.0),
            column: found.map(|a| a.1),
            message: message.into(),
        }
    }

    /// `file:line:col` of the entry at `at`.
    pub(crate) fn where_is(&self, at: &[&str]) -> String {
        match self.spans.locate(at) {
            Some((line, col)) => format!("{}:{line}:{col}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// A path named in this file, relative to its folder.
    pub fn beside(&self, name: &str) -> PathBuf {
        self.path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(name)
    }
}

/// The JSON Schema of test files.
pub fn schema() -> String {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<TestFile>();
    schema.insert(
        "$id".into(),
        "https://raw.githubusercontent.com/vipd/vipd/main/vipd-test.schema.json".into(),
    );
    schema.insert("title".into(), "vipd test file".into());
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
