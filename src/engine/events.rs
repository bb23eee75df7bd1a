//! Events (README "Lua plugins"): what the engine tells the world. Each is logged once
//! through `tracing`, kept in the ledger's event log (so `status` can say
//! what happened and why) and delivered to the Lua plugins that listen.
//!
//! One payload type, [`Event`], serves every kind; [`FIELDS`] documents its
//! fields for `vipd lua-types`, and a test checks the two agree.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ledger::store::Store;
use crate::ledger::{EventRecord, Order};

/// The events the engine emits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    VipInfo,
    BeforeRecharge,
    RechargeResult,
    OrderSettled,
    RenewalVerified,
    RenewalUnverified,
    RenewalAtRisk,
    MembershipLapsed,
    OrderUnknown,
    BillingConflict,
    RenewalHeld,
    BudgetExceeded,
    ProviderPaused,
    AccountAuthFailed,
    ParseCallback,
    ApprovalRequired,
    ApprovalEscalated,
    RenewalApproved,
    RenewalDeclined,
    RenewalUnapproved,
    #[default]
    Error,
    /// A plugin vetoed a renewal (recorded; not a Lua event).
    RenewalVetoed,
}

impl EventKind {
    /// The events plugins can listen to, in the order README "Lua plugins" lists them.
    pub(crate) const LUA: [EventKind; 21] = [
        EventKind::VipInfo,
        EventKind::BeforeRecharge,
        EventKind::RechargeResult,
        EventKind::OrderSettled,
        EventKind::RenewalVerified,
        EventKind::RenewalUnverified,
        EventKind::RenewalAtRisk,
        EventKind::MembershipLapsed,
        EventKind::OrderUnknown,
        EventKind::BillingConflict,
        EventKind::RenewalHeld,
        EventKind::BudgetExceeded,
        EventKind::ProviderPaused,
        EventKind::AccountAuthFailed,
        EventKind::ParseCallback,
        EventKind::ApprovalRequired,
        EventKind::ApprovalEscalated,
        EventKind::RenewalApproved,
        EventKind::RenewalDeclined,
        EventKind::RenewalUnapproved,
        EventKind::Error,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::VipInfo => "vip_info",
            EventKind::BeforeRecharge => "before_recharge",
            EventKind::RechargeResult => "recharge_result",
            EventKind::OrderSettled => "order_settled",
            EventKind::RenewalVerified => "renewal_verified",
            EventKind::RenewalUnverified => "renewal_unverified",
            EventKind::RenewalAtRisk => "renewal_at_risk",
            EventKind::MembershipLapsed => "membership_lapsed",
            EventKind::OrderUnknown => "order_unknown",
            EventKind::BillingConflict => "billing_conflict",
            EventKind::RenewalHeld => "renewal_held",
            EventKind::BudgetExceeded => "budget_exceeded",
            EventKind::ProviderPaused => "provider_paused",
            EventKind::AccountAuthFailed => "account_auth_failed",
            EventKind::ParseCallback => "parse_callback",
            EventKind::ApprovalRequired => "approval_required",
            EventKind::ApprovalEscalated => "approval_escalated",
            EventKind::RenewalApproved => "renewal_approved",
            EventKind::RenewalDeclined => "renewal_declined",
            EventKind::RenewalUnapproved => "renewal_unapproved",
            EventKind::Error => "error",
            EventKind::RenewalVetoed => "renewal_vetoed",
        }
    }

    /// The kind named `name`, if plugins can listen to it.
    pub(crate) fn lua_named(name: &str) -> Option<EventKind> {
        EventKind::LUA.into_iter().find(|k| k.as_str() == name)
    }

    /// What the event means, for the generated `---@meta` file.
    pub fn doc(self) -> &'static str {
        match self {
            EventKind::VipInfo => "A membership read succeeded (every check).",
            EventKind::BeforeRecharge => {
                "A renewal is about to be planned and paid. Return `false` or `{skip = \"reason\"}` to veto it (recorded in the ledger), or `{approve = \"reason\"}` to have a person approve it first (it is planned as `awaiting_approval`)."
            }
            EventKind::RechargeResult => {
                "The vendor answered (or did not answer) a recharge request."
            }
            EventKind::OrderSettled => {
                "An order became `succeeded` or `failed` (by reply, callback, evidence or operator)."
            }
            EventKind::RenewalVerified => "The membership end moved as a paid order promised.",
            EventKind::RenewalUnverified => {
                "Paid, but the end did not move within `verify_within`; nothing is re-paid."
            }
            EventKind::RenewalAtRisk => {
                "A covered membership ends within the rule's `at_risk` and no renewal has moved its end, whatever the order's state (none, planned, sent, pending, unknown, unverified, held, awaiting a retry, vetoed, over budget): `key` and `state` name the order, `reason` what the last check decided. Once per end."
            }
            EventKind::MembershipLapsed => {
                "A covered membership's end passed and no renewal had moved it. Once per end."
            }
            EventKind::OrderUnknown => {
                "An order may or may not be paid (lost reply, crash while sent); it is never re-sent automatically."
            }
            EventKind::BillingConflict => {
                "The vendor's word contradicts the ledger: an attempt recorded as not paid was billed, a period was billed twice, an attempt was billed above its `max_price`, or a paid attempt is reported failed. Billed money is always counted; check the vendor's records."
            }
            EventKind::RenewalHeld => {
                "A due renewal is held: the store was damaged and accepted, or restored from a backup, so it may have forgotten orders the vendor billed. Compare with the vendor's order list, then `vipd store release`. Fires once per streak."
            }
            EventKind::BudgetExceeded => {
                "A renewal was skipped because it would pass a budget cap."
            }
            EventKind::ProviderPaused => {
                "A recharge provider stopped taking orders (balance, configuration)."
            }
            EventKind::AccountAuthFailed => {
                "An account's credentials were rejected (once per failure streak)."
            }
            EventKind::ParseCallback => {
                "A signed vendor callback the built-in mapping does not understand. Return `{order = vendor_or_vipd_order_id, status = \"success\"|\"failed\", price = yuan?}`."
            }
            EventKind::ApprovalRequired => {
                "A renewal is planned as `awaiting_approval`, its money held in the budget, nothing sent: `reason` says why (`approve_above`, `approve_when_budget_left_below`, a plugin), `price` what it would cost. `vipd orders approve KEY --reason …` or `decline`."
            }
            EventKind::ApprovalEscalated => {
                "A renewal still awaits approval and the membership's end has come within one of the rule's `escalate` steps (`reason` names it). Once per step."
            }
            EventKind::RenewalApproved => {
                "A person approved a renewal (`by`, `reason`); it is paid at the pair's next check, through every guard."
            }
            EventKind::RenewalDeclined => {
                "A person declined a renewal (`by`, `reason`); its money is back in the budget and its rule does not pay that period."
            }
            EventKind::RenewalUnapproved => {
                "The membership's end passed while its renewal awaited approval: the order is `failed`, not paid, its money back in the budget."
            }
            EventKind::Error => {
                "Something failed that an operator must see (store errors and the like)."
            }
            EventKind::RenewalVetoed => "A plugin vetoed a renewal.",
        }
    }

    /// The fields every event of this kind carries (besides `event`, `at`,
    /// `detail` and `dry_run`, which all carry).
    pub fn fields(self) -> &'static [&'static str] {
        // The fields of an event about one order, then `extra`.
        macro_rules! order_fields {
            ($($extra:literal),*) => {
                &[
                    "account",
                    "rule",
                    "key",
                    "state",
                    "membership",
                    "product",
                    "provider",
                    "old_end",
                    "attempt",
                    $($extra),*
                ]
            };
        }
        match self {
            EventKind::VipInfo => &["account", "rule", "memberships"],
            EventKind::BeforeRecharge => &[
                "account",
                "rule",
                "key",
                "membership",
                "product",
                "provider",
                "price",
            ],
            EventKind::RechargeResult => order_fields!("class"),
            EventKind::OrderSettled
            | EventKind::OrderUnknown
            | EventKind::RenewalUnverified
            | EventKind::BillingConflict => order_fields!(),
            EventKind::RenewalVerified => &[
                "account",
                "rule",
                "key",
                "state",
                "membership",
                "product",
                "provider",
                "old_end",
                "new_end",
            ],
            EventKind::RenewalAtRisk | EventKind::MembershipLapsed => &[
                "account",
                "rule",
                "key",
                "state",
                "membership",
                "old_end",
                "reason",
            ],
            EventKind::BudgetExceeded => &["account", "rule", "period", "cap", "used", "price"],
            EventKind::RenewalHeld => &["account", "rule", "reason"],
            EventKind::ProviderPaused => &["provider", "message"],
            EventKind::AccountAuthFailed => &["account", "message"],
            EventKind::ParseCallback => &["provider", "fields"],
            EventKind::ApprovalRequired => order_fields!("price", "reason"),
            // Why (approvals), and who answered.
            EventKind::ApprovalEscalated | EventKind::RenewalUnapproved => {
                order_fields!("reason")
            }
            EventKind::RenewalApproved | EventKind::RenewalDeclined => {
                order_fields!("by", "reason")
            }
            EventKind::Error => &[],
            EventKind::RenewalVetoed => &["account", "rule", "plugin", "reason"],
        }
    }

    /// Events an operator must look at are warnings; the rest are news.
    fn is_alert(self) -> bool {
        matches!(
            self,
            EventKind::RenewalUnverified
                | EventKind::RenewalAtRisk
                | EventKind::MembershipLapsed
                | EventKind::OrderUnknown
                | EventKind::BillingConflict
                | EventKind::RenewalHeld
                | EventKind::BudgetExceeded
                | EventKind::ProviderPaused
                | EventKind::AccountAuthFailed
                | EventKind::ApprovalRequired
                | EventKind::ApprovalEscalated
                | EventKind::RenewalUnapproved
                | EventKind::Error
        )
    }

    /// Kept in the ledger's event log. Reads and questions to plugins are
    /// not: they happen on every check.
    fn is_recorded(self) -> bool {
        !matches!(
            self,
            EventKind::VipInfo | EventKind::BeforeRecharge | EventKind::ParseCallback
        )
    }
}

/// One membership as plugins see it (`vip_info` events, `vipd.vip_info`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TermView {
    /// Unix seconds of the last recharge, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    /// Unix seconds of the expiry, when a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
}

/// The payload of every event: the fields that apply are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Event {
    /// What happened; serialized as `event`, its snake_case name.
    #[serde(rename = "event")]
    pub kind: EventKind,
    /// Unix seconds.
    pub at: i64,
    /// What happened, in words (also in the log and ledger).
    pub detail: String,
    /// Whether the daemon runs with `--dry-run` (never pays).
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_end: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_end: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codeid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memberships: Option<BTreeMap<String, TermView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Every payload field: name, LuaLS type, meaning. `vipd lua-types` is
/// generated from this; a test checks it matches [`Event`].
pub(crate) const FIELDS: &[(&str, &str, &str)] = &[
    ("event", "vipd.EventName", "The event name."),
    ("at", "integer", "Unix seconds."),
    (
        "detail",
        "string",
        "What happened, in words (also in the log and the ledger).",
    ),
    (
        "dry_run",
        "boolean",
        "Whether the daemon never pays (`--dry-run`).",
    ),
    ("account", "string", "The account's name."),
    (
        "rule",
        "string",
        "The rule's name (`manual` for `vipd recharge`).",
    ),
    ("key", "string", "The order's decision key."),
    (
        "state",
        "vipd.OrderState",
        "The order's state after the event.",
    ),
    (
        "membership",
        "string",
        "The membership renewed, e.g. `qq_vip`.",
    ),
    ("product", "string", "The product bought."),
    ("provider", "string", "The provider concerned."),
    (
        "old_end",
        "integer",
        "The end observed when the renewal was decided (unix seconds).",
    ),
    (
        "new_end",
        "integer",
        "The end observed after the renewal (unix seconds).",
    ),
    (
        "price",
        "number",
        "Yuan: the price paid, or the most that may be paid.",
    ),
    (
        "class",
        "string",
        "What the vendor's reply means: accepted, pending, debug, clock, transient, exhausted, config, rejected, unknown, not_sent.",
    ),
    (
        "codeid",
        "integer",
        "The vendor's `codeid`, when it replied.",
    ),
    (
        "message",
        "string",
        "The vendor's or the upstream's message.",
    ),
    ("attempt", "integer", "Sends of this order so far."),
    ("period", "string", "The budget period: `day` or `month`."),
    ("cap", "number", "Yuan: the budget cap."),
    ("used", "number", "Yuan: spent or held in the period."),
    (
        "memberships",
        "table<string, vipd.Term>",
        "Every membership read, by name.",
    ),
    (
        "fields",
        "table<string, string>",
        "The callback's fields (signature verified).",
    ),
    ("plugin", "string", "The plugin concerned."),
    (
        "reason",
        "string",
        "Why (a veto's reason, why approval is needed, an approver's reason).",
    ),
    (
        "by",
        "string",
        "Who made a manual change (an approval, a resolve): `token NAME` for an admin token, a Unix user for a command, `plugin NAME`.",
    ),
];

impl Event {
    /// An event of `kind` at `at`.
    pub fn new(kind: EventKind, at: i64, detail: impl Into<String>) -> Event {
        Event {
            kind,
            at,
            detail: detail.into(),
            ..Event::default()
        }
    }

    /// Fills the fields that describe `order`.
    pub fn order(mut self, order: &Order) -> Event {
        self.account = Some(order.account.clone());
        self.rule = Some(order.rule.clone());
        self.key = Some(order.key.clone());
        self.state = Some(order.state.as_str().to_owned());
        self.membership = Some(order.membership.as_str().to_owned());
        self.product = Some(order.product.clone());
        self.provider = Some(order.provider.clone());
        self.old_end = order.observed_end;
        self.attempt = Some(order.attempts);
        self.price = order
            .price
            .or((order.spent.0 > 0).then_some(order.spent))
            .map(|f| f.as_yuan_f64());
        self
    }

    /// Sets the account and rule.
    pub fn about(mut self, account: &str, rule: &str) -> Event {
        self.account = Some(account.to_owned());
        self.rule = Some(rule.to_owned());
        self
    }

    /// Sets who made an operator's change, and why.
    pub(crate) fn said_by(mut self, by: &str, why: &str) -> Event {
        self.by = Some(by.to_owned());
        self.reason = Some(why.to_owned());
        self
    }

    /// Sets the key.
    pub fn key(mut self, key: &str) -> Event {
        self.key = Some(key.to_owned());
        self
    }
}

/// Logs an event and keeps it in the ledger's event log. A store failure
/// is logged, never raised: an event must not stop a renewal.
pub async fn record(store: &dyn Store, ev: &Event) {
    let kind = ev.kind;
    let (account, rule, key) = (ev.account.as_deref(), ev.rule.as_deref(), ev.key.as_deref());
    if kind.is_alert() {
        tracing::warn!(event = kind.as_str(), account, rule, key, "{}", ev.detail);
    } else if kind.is_recorded() {
        tracing::info!(event = kind.as_str(), account, rule, key, "{}", ev.detail);
    }
    if !kind.is_recorded() {
        return;
    }
    let record = EventRecord {
        at: ev.at,
        kind: kind.as_str().to_owned(),
        account: ev.account.clone(),
        rule: ev.rule.clone(),
        key: ev.key.clone(),
        detail: ev.detail.clone(),
    };
    if let Err(e) = store.record_event(&record).await {
        tracing::error!(error = %e, "could not record event {}", kind.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_docs_match_the_payload() {
        let full = Event {
            account: Some(String::new()),
            rule: Some(String::new()),
            key: Some(String::new()),
            state: Some(String::new()),
            membership: Some(String::new()),
            product: Some(String::new()),
            provider: Some(String::new()),
            old_end: Some(0),
            new_end: Some(0),
            price: Some(0.0),
            class: Some(String::new()),
            codeid: Some(0),
            message: Some(String::new()),
            attempt: Some(0),
            period: Some(String::new()),
            cap: Some(0.0),
            used: Some(0.0),
            memberships: Some(BTreeMap::new()),
            fields: Some(BTreeMap::new()),
            plugin: Some(String::new()),
            reason: Some(String::new()),
            by: Some(String::new()),
            ..Event::default()
        };
        let json = serde_json::to_value(&full).unwrap();
        let mut serialized: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut documented: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
        serialized.sort_unstable();
        documented.sort_unstable();
        assert_eq!(serialized, documented);
        for kind in EventKind::LUA.into_iter().chain([EventKind::RenewalVetoed]) {
            for f in kind.fields() {
                assert!(documented.contains(f), "{kind:?} lists undocumented {f}");
            }
            let json = serde_json::to_value(Event::new(kind, 0, "")).unwrap();
            assert_eq!(json["event"], kind.as_str());
        }
    }
}
