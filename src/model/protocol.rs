//! The vendor protocol's configurable choices, named by the configuration
//! (which reads them), the clients (which speak them) and the sandbox
//! (which answers them).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::Fen;

/// GET or POST, as a provider is configured.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// Parameters in the query string.
    Get,
    /// Parameters in a form body.
    #[default]
    Post,
}

/// Reply format to ask for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `format=json`
    #[default]
    Json,
    /// `format=xml`
    Xml,
}

impl Format {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Xml => "xml",
        }
    }
}

/// The sandbox's recharge mode.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Answer 10000 and extend at once.
    Sync,
    /// Answer 10023, extend and call back after `callback_delay`.
    #[default]
    Async,
}

/// How a provider's callbacks are read (README "Renewals: decisions, the ledger, callbacks").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackMapping {
    /// Field with the vendor's order id.
    pub order_field: String,
    /// Field with the result.
    pub status_field: String,
    /// Field with the signature.
    pub sign_field: String,
    /// Field with the price billed, if the vendor sends one.
    pub price_field: String,
    /// Status values that mean success.
    pub success_values: Vec<String>,
    /// Status values that mean failure.
    pub failure_values: Vec<String>,
    /// Body of the HTTP 200 reply.
    pub reply: String,
    /// Field with the unix time the callback was signed at.
    pub time_field: String,
    /// Callbacks signed longer ago are refused: a replay carries its old
    /// time, and the signature covers it.
    pub max_age: Duration,
    /// A `pending` order with no callback after this long becomes
    /// `unknown` (and alerts): a lost callback must not leave an order
    /// waiting, and a membership lapsing, in silence.
    pub within: Duration,
}

impl Default for CallbackMapping {
    fn default() -> Self {
        CallbackMapping {
            order_field: "orderid".into(),
            status_field: "status".into(),
            sign_field: "sign".into(),
            price_field: "price".into(),
            success_values: vec!["success".into(), "1".into(), "10000".into()],
            failure_values: vec!["failed".into(), "fail".into(), "0".into()],
            reply: "success".into(),
            time_field: "time".into(),
            max_age: Duration::from_secs(86_400),
            within: Duration::from_secs(7_200),
        }
    }
}

/// Spending caps of a rule, per day and per month in the daemon's
/// timezone, and when a person must approve a renewal first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Per calendar day.
    pub per_day: Option<Fen>,
    /// Per calendar month.
    pub per_month: Option<Fen>,
    /// A renewal whose price is above this waits for approval.
    pub approve_above: Option<Fen>,
    /// A renewal that would leave less than this under a cap (day or
    /// month) waits for approval.
    pub approve_when_left_below: Option<Fen>,
}

impl Budget {
    /// Caps only: no approvals.
    pub const fn caps(per_day: Option<Fen>, per_month: Option<Fen>) -> Budget {
        Budget {
            per_day,
            per_month,
            approve_above: None,
            approve_when_left_below: None,
        }
    }
}

/// The ledger-facing meaning of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// 10000: billed; the order succeeded.
    Accepted,
    /// 10023: accepted, the result comes by callback.
    Pending,
    /// 10024: debug data, never billed.
    Debug,
    /// 10004: our clock is off; not billed, correct and retry at once.
    Clock,
    /// 10014, 10021: not billed; retry with backoff.
    Transient,
    /// 10018, 10022: not billed; pause the provider until a probe succeeds.
    Exhausted,
    /// A configuration problem on our side; not billed; pause until reload.
    Config,
    /// 10019, 10025, any other code: not billed; the order failed.
    Rejected,
    /// No parseable reply to a request that may have arrived: possibly
    /// billed, never re-sent automatically.
    Unknown,
    /// The request never left: not billed, retry normally.
    NotSent,
}

impl OutcomeClass {
    /// Every class, for tables and metrics.
    pub(crate) const ALL: [OutcomeClass; 10] = [
        OutcomeClass::Accepted,
        OutcomeClass::Pending,
        OutcomeClass::Debug,
        OutcomeClass::Clock,
        OutcomeClass::Transient,
        OutcomeClass::Exhausted,
        OutcomeClass::Config,
        OutcomeClass::Rejected,
        OutcomeClass::Unknown,
        OutcomeClass::NotSent,
    ];

    /// The class of a vendor `codeid`.
    pub(crate) fn of_code(code: i64) -> OutcomeClass {
        match code {
            10000 => OutcomeClass::Accepted,
            10023 => OutcomeClass::Pending,
            10024 => OutcomeClass::Debug,
            10004 => OutcomeClass::Clock,
            10014 | 10021 => OutcomeClass::Transient,
            10018 | 10022 => OutcomeClass::Exhausted,
            10001..=10003 | 10005..=10013 | 10015 | 10017 | 10020 => OutcomeClass::Config,
            _ => OutcomeClass::Rejected,
        }
    }

    /// Whether money may have moved. `Unknown` counts: the vendor may have
    /// billed a request whose reply was lost.
    pub fn may_be_billed(self) -> bool {
        matches!(
            self,
            OutcomeClass::Accepted | OutcomeClass::Pending | OutcomeClass::Unknown
        )
    }

    /// The snake_case name used in logs, metrics and Lua.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Accepted => "accepted",
            OutcomeClass::Pending => "pending",
            OutcomeClass::Debug => "debug",
            OutcomeClass::Clock => "clock",
            OutcomeClass::Transient => "transient",
            OutcomeClass::Exhausted => "exhausted",
            OutcomeClass::Config => "config",
            OutcomeClass::Rejected => "rejected",
            OutcomeClass::Unknown => "unknown",
            OutcomeClass::NotSent => "not_sent",
        }
    }
}

impl std::fmt::Display for OutcomeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
