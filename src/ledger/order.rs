//! The order record and its states (README "Renewals: decisions, the ledger, callbacks").
//!
//! ```text
//! awaiting_approval ──▶ planned            (approved; or declined/expired ──▶ failed)
//! planned ──▶ sent ──▶ pending ──▶ succeeded | failed
//!                 ╰──▶ succeeded | failed
//!                 ╰──▶ unknown ──▶ succeeded | failed   (evidence or operator only)
//! ```
//!
//! One decision key, at most one billed order, ever: the key is the hash of
//! (rule, account, membership, observed end), so a new period (the end
//! moved) gets a new key, and the same period can never be paid twice.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::model::Membership;
use crate::units::Fen;
use crate::units::hex_lower;

/// Where an order stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Decided, its money held in the budget; waits for a person to
    /// approve (or decline) it before anything is sent.
    AwaitingApproval,
    /// Decided and durably recorded; the request has not left.
    Planned,
    /// The request is leaving or has left; no reply yet.
    Sent,
    /// Accepted by the vendor; the result comes by callback.
    Pending,
    /// Paid.
    Succeeded,
    /// Not paid (or refunded).
    Failed,
    /// Possibly paid: the reply was lost. Resolved only by evidence.
    Unknown,
}

impl OrderState {
    /// Every state, in lifecycle order.
    pub(crate) const ALL: [OrderState; 7] = [
        OrderState::AwaitingApproval,
        OrderState::Planned,
        OrderState::Sent,
        OrderState::Pending,
        OrderState::Succeeded,
        OrderState::Failed,
        OrderState::Unknown,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::AwaitingApproval => "awaiting_approval",
            OrderState::Planned => "planned",
            OrderState::Sent => "sent",
            OrderState::Pending => "pending",
            OrderState::Succeeded => "succeeded",
            OrderState::Failed => "failed",
            OrderState::Unknown => "unknown",
        }
    }

    /// Not settled yet: the order still needs something to happen.
    pub(crate) fn is_open(self) -> bool {
        !matches!(self, OrderState::Succeeded | OrderState::Failed)
    }
}

impl std::fmt::Display for OrderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown order state {s:?} (expected one of awaiting_approval, planned, sent, pending, succeeded, failed, unknown)"))
    }
}

/// The deterministic decision key: MD5 of the versioned tuple, hex.
pub fn decision_key(
    rule: &str,
    account: &str,
    membership: Membership,
    observed_end: Option<i64>,
) -> String {
    let mut h = Md5::new();
    for part in [
        "vipd-order-v1",
        rule,
        account,
        membership.as_str(),
        &observed_end.unwrap_or(0).to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex_lower(&h.finalize())
}

/// Money held against a rule's budget for an order not yet settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetHold {
    /// The budget day (`2026-11-21`, daemon timezone).
    pub day: String,
    /// The budget month (`2026-11`).
    pub month: String,
    /// How much is held (the product's max price).
    pub amount: Fen,
}

/// A person's answer to an order that awaited approval: who, why, when,
/// and the price they saw (an approval is for that price only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The admin token's name, or the Unix user of a CLI command.
    pub by: String,
    /// Their reason, as given.
    pub why: String,
    /// Unix seconds.
    pub at: i64,
    /// The order's price when approved.
    pub price: Fen,
}

/// Whether the paid renewal has shown up in the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Verification {
    /// Not paid, or not looked at yet.
    #[default]
    None,
    /// Paid; waiting for the end to move, until `deadline`.
    Waiting { deadline: i64 },
    /// The end moved to `new_end` at `at`.
    Verified { at: i64, new_end: i64 },
    /// The end had not moved by the deadline.
    Unverified { at: i64 },
}

/// What became of one request sent under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Planned; not sent.
    Planned,
    /// May have left; no reply yet.
    Sent,
    /// Accepted and billed; the result comes by callback.
    Pending,
    /// Billed and delivered.
    Paid,
    /// Not billed, or refunded.
    NotPaid,
    /// The reply was lost: possibly billed.
    Unknown,
}

/// One request sent under a key. Callbacks name the vendor's order id,
/// and the vendor index points at `(key, n)`: a callback settles the
/// attempt it names and never another (a re-delivered `failed` for
/// attempt 1 cannot fail attempt 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first request under the key.
    pub n: u32,
    /// Where it stands.
    pub state: AttemptState,
    /// The vendor's order id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_orderid: Option<String>,
    /// Money counted against the budget for this attempt.
    pub spent: Fen,
    /// The budget periods of its plan (and the amount held then).
    pub periods: BudgetHold,
}

/// One step in an order's life: what happened and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Unix seconds.
    pub at: i64,
    /// Unix milliseconds, for latency figures and sub-second order: the
    /// store's clock when it wrote the transition (0 until then).
    #[serde(default)]
    pub at_ms: i64,
    /// The state entered.
    pub state: OrderState,
    /// Why, in words.
    pub why: String,
}

/// An order: everything needed to say what happened and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The decision key.
    pub key: String,
    /// The rule that decided it (`manual` for `vipd recharge`).
    pub rule: String,
    /// The account renewed.
    pub account: String,
    /// The membership renewed.
    pub membership: Membership,
    /// The end seen when deciding (`None`: no membership).
    pub observed_end: Option<i64>,
    /// The product bought.
    pub product: String,
    /// The recharge provider used.
    pub provider: String,
    /// Where it stands.
    pub state: OrderState,
    /// Requests sent under this key.
    pub attempts: u32,
    /// The most it may cost.
    pub max_price: Fen,
    /// What it cost, when known.
    pub price: Option<Fen>,
    /// The vendor's order id.
    pub vendor_orderid: Option<String>,
    /// Money held against the budget while the cost is not settled.
    pub hold: Option<BudgetHold>,
    /// Money counted as spent for this order.
    pub spent: Fen,
    /// The budget periods `spent` is counted in.
    pub charged_to: Option<BudgetHold>,
    /// For a failed order that may be retried: not before this time.
    pub retry_at: Option<i64>,
    /// The outcome class of the last attempt.
    pub last_outcome: Option<String>,
    /// Verification of a paid renewal.
    pub verification: Verification,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Every transition, oldest first.
    pub history: Vec<Transition>,
    /// Every request sent under this key, oldest first (empty in orders
    /// written before attempts were recorded; see [`Order::attempt_mut`]).
    #[serde(default)]
    pub attempt_log: Vec<AttemptRecord>,
    /// The approval this order's period was paid under, when its rule
    /// asked for one: it covers the key's attempts at that price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

impl Order {
    /// Moves to `state` at `at` (unix seconds), recording why. The store
    /// stamps the transition's milliseconds when it writes it.
    pub fn enter(&mut self, state: OrderState, at: i64, why: impl Into<String>) {
        self.state = state;
        self.updated_at = at;
        self.history.push(Transition {
            at,
            at_ms: 0,
            state,
            why: why.into(),
        });
    }

    /// Stamps the transitions from `start` on (those one write adds) with
    /// `ms`, unix milliseconds. Older ones keep theirs, even 0 (written
    /// before milliseconds were kept).
    pub(super) fn stamp_from(&mut self, start: usize, ms: i64) {
        for t in self.history.iter_mut().skip(start) {
            t.at_ms = ms;
        }
    }

    /// Whether another request may be sent under this key now.
    pub(crate) fn may_retry(&self, now: i64, max_attempts: u32) -> bool {
        self.state == OrderState::Failed
            && self.attempts < max_attempts
            && self.retry_at.is_some_and(|at| at <= now)
    }

    /// Attempt `n`'s record. Orders written before attempts were recorded
    /// get records made up from what the order says: the current attempt
    /// from its state, earlier ones as not paid (they were retried, so
    /// they were not billed).
    pub(crate) fn attempt_mut(&mut self, n: u32) -> &mut AttemptRecord {
        while self.attempt_log.len() < n as usize {
            let m = self.attempt_log.len() as u32 + 1;
            let current = m == self.attempts;
            let periods = self
                .hold
                .clone()
                .or_else(|| self.charged_to.clone())
                .unwrap_or(BudgetHold {
                    day: String::new(),
                    month: String::new(),
                    amount: self.max_price,
                });
            let state = match self.state {
                _ if !current => AttemptState::NotPaid,
                OrderState::AwaitingApproval | OrderState::Planned => AttemptState::Planned,
                OrderState::Sent => AttemptState::Sent,
                OrderState::Pending => AttemptState::Pending,
                OrderState::Succeeded => AttemptState::Paid,
                OrderState::Failed => AttemptState::NotPaid,
                OrderState::Unknown => AttemptState::Unknown,
            };
            self.attempt_log.push(AttemptRecord {
                n: m,
                state,
                vendor_orderid: if current {
                    self.vendor_orderid.clone()
                } else {
                    None
                },
                spent: if current { self.spent } else { Fen::ZERO },
                periods,
            });
        }
        &mut self.attempt_log[n as usize - 1]
    }

    /// The attempts the vendor billed and delivered.
    pub(crate) fn paid_attempts(&self) -> Vec<u32> {
        self.attempt_log
            .iter()
            .filter(|a| a.state == AttemptState::Paid)
            .map(|a| a.n)
            .collect()
    }

    /// Whether a person approved this order at `price`.
    pub(crate) fn approved_at(&self, price: Fen) -> bool {
        self.approval.as_ref().is_some_and(|a| a.price == price)
    }

    /// Whether an order awaiting approval is to be planned again at
    /// `price`: approved at that price (it is paid now), or priced anew
    /// (it awaits approval at the new price). Otherwise it goes on
    /// waiting.
    pub(crate) fn replans_at(&self, price: Fen) -> bool {
        self.approved_at(price) || self.max_price != price
    }

    /// The last reason recorded.
    pub fn last_why(&self) -> &str {
        self.history.last().map_or("", |t| t.why.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let k = decision_key("keep", "alice", Membership::QqVip, Some(1_700_000_000));
        assert_eq!(
            k,
            decision_key("keep", "alice", Membership::QqVip, Some(1_700_000_000))
        );
        assert_eq!(k.len(), 32);
        let others = [
            decision_key("keep2", "alice", Membership::QqVip, Some(1_700_000_000)),
            decision_key("keep", "bob", Membership::QqVip, Some(1_700_000_000)),
            decision_key("keep", "alice", Membership::QqSvip, Some(1_700_000_000)),
            decision_key("keep", "alice", Membership::QqVip, Some(1_700_000_001)),
            decision_key("keep", "alice", Membership::QqVip, None),
            // The separator keeps ("ab","c") and ("a","bc") apart.
            decision_key("kee", "palice", Membership::QqVip, Some(1_700_000_000)),
        ];
        for o in others {
            assert_ne!(k, o);
        }
    }

    #[test]
    fn states_parse_and_print() {
        for s in OrderState::ALL {
            assert_eq!(s.as_str().parse::<OrderState>(), Ok(s));
        }
        assert!("paid".parse::<OrderState>().is_err());
        assert!(OrderState::Unknown.is_open() && !OrderState::Failed.is_open());
    }
}
