//! Events (SPEC §5): what the engine tells the world. Each is logged once
//! through `tracing` and kept in the ledger's event log, so `status` can
//! say what happened and why.

use serde::Serialize;

use crate::ledger::{EventRecord, Ledger, Order};

/// The events the engine emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RechargeResult,
    OrderSettled,
    RenewalVerified,
    RenewalUnverified,
    OrderUnknown,
    BudgetExceeded,
    ProviderPaused,
    AccountAuthFailed,
    Error,
}

impl EventKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RechargeResult => "recharge_result",
            EventKind::OrderSettled => "order_settled",
            EventKind::RenewalVerified => "renewal_verified",
            EventKind::RenewalUnverified => "renewal_unverified",
            EventKind::OrderUnknown => "order_unknown",
            EventKind::BudgetExceeded => "budget_exceeded",
            EventKind::ProviderPaused => "provider_paused",
            EventKind::AccountAuthFailed => "account_auth_failed",
            EventKind::Error => "error",
        }
    }

    /// Events an operator must look at are warnings; the rest are news.
    fn is_alert(self) -> bool {
        matches!(
            self,
            EventKind::RenewalUnverified
                | EventKind::OrderUnknown
                | EventKind::BudgetExceeded
                | EventKind::ProviderPaused
                | EventKind::AccountAuthFailed
                | EventKind::Error
        )
    }
}

/// Records and logs an event. A store failure is logged, never raised:
/// an event must not stop a renewal.
pub fn emit(
    ledger: &Ledger,
    kind: EventKind,
    at: i64,
    account: Option<&str>,
    rule: Option<&str>,
    key: Option<&str>,
    detail: String,
) {
    if kind.is_alert() {
        tracing::warn!(event = kind.as_str(), account, rule, key, "{detail}");
    } else {
        tracing::info!(event = kind.as_str(), account, rule, key, "{detail}");
    }
    let record = EventRecord {
        at,
        kind: kind.as_str().to_owned(),
        account: account.map(str::to_owned),
        rule: rule.map(str::to_owned),
        key: key.map(str::to_owned),
        detail,
    };
    if let Err(e) = ledger.record_event(&record) {
        tracing::error!(error = %e, "could not record event {}", kind.as_str());
    }
}

/// [`emit`] about one order: its account, rule and key.
pub fn emit_order(ledger: &Ledger, kind: EventKind, at: i64, order: &Order, detail: String) {
    emit(
        ledger,
        kind,
        at,
        Some(&order.account),
        Some(&order.rule),
        Some(&order.key),
        detail,
    );
}
