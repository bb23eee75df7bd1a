//! What the ledger keeps besides orders (spend, events, check and account
//! state, tokens) and the values its transitions take and give.

use super::*;

/// Money counted against a rule in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Held for orders whose cost is not settled.
    pub reserved: Fen,
    /// Paid.
    pub settled: Fen,
}

impl Spend {
    /// What counts against a cap.
    pub fn used(self) -> Fen {
        Fen(self.reserved.0 + self.settled.0)
    }
}

/// Something that happened, kept for `status` and for saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unix seconds.
    pub at: i64,
    /// The event name (`budget_exceeded`, `order_unknown`, ...).
    pub kind: String,
    /// The account concerned.
    pub account: Option<String>,
    /// The rule concerned.
    pub rule: Option<String>,
    /// The order concerned.
    pub key: Option<String>,
    /// What happened, in words.
    pub detail: String,
}

/// What the last check of one account under one rule saw and decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    /// When it ran.
    pub checked_at: Option<i64>,
    /// The end it read.
    pub observed_end: Option<i64>,
    /// The decision, in words.
    pub decision: String,
    /// The standing plugin veto of a due renewal, so that a veto repeated
    /// at every check is recorded as an event once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veto: Option<String>,
    /// The alert this check raised, while it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<Standing>,
    /// The end `renewal_at_risk` was raised for (once per end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk_for: Option<i64>,
    /// The end `membership_lapsed` was raised for (once per end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lapsed_for: Option<i64>,
    /// The order awaiting approval that `approval_escalated` was raised
    /// for, and how many of the rule's steps it has passed (once each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated: Option<(String, u32)>,
}

/// An alert a check raised that still stands: the next check that finds
/// the same one says nothing (the operator has heard); one that finds it
/// changed or gone speaks again. (Stores written before it existed have
/// none: their first check after an upgrade alerts once more.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Standing {
    /// A lapsed membership left alone (`when_lapsed: skip`).
    Skipped,
    /// Due, and no order can progress: `why`.
    GaveUp { why: String },
    /// New orders are held: `why`.
    Held { why: String },
    /// Paying would pass a cap: `used` of `cap` per `period`.
    BudgetExceeded { period: String, cap: Fen, used: Fen },
}

/// Per-account state that outlives a check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Inside a streak of credential failures (the event fired once).
    pub auth_failing: bool,
    /// The last read error, if the last read failed.
    pub last_error: Option<String>,
}

/// An account's latest token pair, written (and made durable) before the
/// new access token is used: QQ refresh tokens work once, so a rotated
/// pair that is lost is a grant that is lost.
///
/// The store lives in the state folder (mode 0700 under systemd); these
/// values are never shown by any command or API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds when the access token expires.
    pub expires_at: Option<i64>,
    /// Seconds the access token was granted for.
    pub lifetime: Option<i64>,
    /// Unix seconds of the rotation.
    pub rotated_at: i64,
    /// Hash of the configured pair this grant descends from: when the
    /// operator configures a new grant, it wins over the stored one.
    pub grant: String,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("expires_at", &self.expires_at)
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

/// A request to plan (or re-plan) an order.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub key: String,
    pub rule: String,
    pub account: String,
    pub membership: Membership,
    pub observed_end: Option<i64>,
    pub product: String,
    pub provider: String,
    pub max_price: Fen,
    pub max_attempts: u32,
    pub budget: Budget,
    /// Budget day and month of `now` in the daemon's timezone.
    pub day: String,
    pub month: String,
    /// Why it is being paid, for the history.
    pub why: String,
    /// A plugin's `before_recharge` asked a person to approve it: why.
    pub approval_asked: Option<String>,
}

/// An operator's (or the clock's) answer to an order awaiting approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Pay it, at the price the approver saw (the product's price now).
    Approve { by: String, why: String, price: Fen },
    /// Do not pay it; the period is not renewed by its rule.
    Decline { by: String, why: String },
    /// No longer to be paid unapproved: the membership ended before
    /// anyone approved it, or its end moved without it (`why`).
    Expire { why: String },
}

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An order under this key exists and may not be re-sent now.
    Exists { state: OrderState, why: String },
    /// The key has used all its attempts.
    MaxAttempts { attempts: u32 },
    /// New orders are held (see [`Hold`]).
    Held { why: String },
    /// Paying would pass a cap.
    Budget {
        period: String,
        cap: Fen,
        used: Fen,
        price: Fen,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Exists { state, why } => {
                write!(f, "an order for this period is {state} ({why})")
            }
            Refusal::Held { why } => write!(f, "new orders are held: {why}"),
            Refusal::MaxAttempts { attempts } => {
                write!(f, "all {attempts} attempts for this period are used")
            }
            Refusal::Budget {
                period,
                cap,
                used,
                price,
            } => {
                write!(
                    f,
                    "budget {period}: {used} used of {cap}; {price} more would pass it"
                )
            }
        }
    }
}

/// What an attempt's reply means for the order (from the engine).
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// Paid now (10000, or 10024 in debug mode with `price = Some(0)`).
    Succeeded {
        price: Option<Fen>,
        vendor_orderid: Option<String>,
        verify_deadline: i64,
    },
    /// Accepted; billed; the result comes by callback.
    Pending {
        price: Option<Fen>,
        vendor_orderid: Option<String>,
    },
    /// Possibly paid.
    Unknown,
    /// Not paid; `retry_at` when it may be retried.
    Failed { retry_at: Option<i64> },
}

/// How an open order is settled.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Money moved; the renewal is bought.
    Paid {
        price: Option<Fen>,
        verify_deadline: i64,
        why: String,
    },
    /// No money moved (or it was refunded).
    NotPaid { retry_at: Option<i64>, why: String },
}

/// The order and attempt a vendor's order id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorOrder {
    /// The order's key.
    pub key: String,
    /// The attempt it was bound to (`None`: an order written before
    /// attempts were numbered, matched to its current attempt).
    pub attempt: Option<u32>,
}

/// What [`Ledger::record_attempt`] did.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The order after the reply.
    pub order: Order,
    /// Set when the reply billed an attempt while another attempt of the
    /// same period is paid already: the money is counted, and an operator
    /// must hear about it.
    pub conflict: Option<String>,
}

/// What settling an attempt did ([`Ledger::settle_attempt`]).
#[derive(Debug)]
pub enum Settled {
    /// The attempt (and perhaps the order) changed. `conflict` says how
    /// the vendor's word contradicts the ledger (an attempt recorded as
    /// not paid was billed, or a second attempt of one period was paid):
    /// the money is counted, and an operator must hear about it.
    Changed {
        order: Order,
        conflict: Option<String>,
    },
    /// The attempt already stood so (a re-delivered or replayed callback).
    Repeated,
    /// The vendor's word contradicts a paid attempt, or names no attempt
    /// that was sent: nothing changes.
    Contradicted { order: Order, why: String },
}

impl Settled {
    /// What [`change::settle_attempt`] made of `order`, as every store
    /// reports it.
    pub(crate) fn of(order: Order, result: Result<Option<Option<String>>, String>) -> Settled {
        match result {
            Ok(Some(conflict)) => Settled::Changed { order, conflict },
            Ok(None) => Settled::Repeated,
            Err(why) => Settled::Contradicted { order, why },
        }
    }

    /// The order, when it changed.
    pub fn changed(self) -> Option<Order> {
        match self {
            Settled::Changed { order, .. } => Some(order),
            Settled::Repeated | Settled::Contradicted { .. } => None,
        }
    }
}

impl Ledger {
    /// The order under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Order>, LedgerError> {
        if let Some(order) = self.open_orders.get(key) {
            return Ok(Some(order));
        }
        self.read(&keys::order(key))
    }

    /// The order whose key starts with `prefix`, if exactly one does.
    pub fn find(&self, prefix: &str) -> Result<Order, LedgerError> {
        let mut it = self.db.scan_prefix(keys::order(prefix).as_bytes());
        let first = it.next().transpose()?;
        let second = it.next().transpose()?;
        match (first, second) {
            (Some((k, v)), None) => decode(&k, &v),
            (Some(_), Some(_)) => Err(LedgerError::NotFound(format!(
                "{prefix} (several keys start so; give more of it)"
            ))),
            _ => Err(LedgerError::NotFound(prefix.to_owned())),
        }
    }

    /// Every order, optionally in one state.
    pub fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError> {
        let mut all: Vec<Order> = self.scan(keys::ORDERS)?;
        if let Some(s) = state {
            all.retain(|o| o.state == s);
        }
        all.sort_by_key(|o| (o.created_at, o.key.clone()));
        Ok(all)
    }

    /// Orders by state: kept as orders are written, so this reads no
    /// order (status, `/metrics` and the admin API poll it).
    pub fn count_by_state(
        &self,
    ) -> Result<std::collections::BTreeMap<OrderState, usize>, LedgerError> {
        Ok(self.derived.states())
    }

    /// Every order of one account.
    pub fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        let mut out = Vec::new();
        for key in self.derived.keys_of(account) {
            if let Some(order) = self.get(&key)? {
                out.push(order);
            }
        }
        Ok(out)
    }

    /// What a rule has spent in a period.
    pub fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError> {
        Ok(self.derived.spend(rule, period))
    }

    /// Appends an event (not made durable by itself).
    pub fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError> {
        let seq = self.db.generate_id()?;
        self.write(&keys::event(ev.at, seq), ev)
    }

    /// Drops the events recorded before `before` (unix seconds) and returns
    /// how many. Orders and their transition histories are never pruned:
    /// the event log is what explains them, and it is kept for
    /// `daemon.event_retention`. Keys start with the event's time, so the
    /// old ones are one range at the front; they go in batches.
    pub fn prune_events(&self, before: i64) -> Result<usize, LedgerError> {
        let end = keys::events_from(before);
        let mut pruned = 0;
        loop {
            let keys = self
                .db
                .range(keys::EVENTS.as_bytes()..end.as_bytes())
                .keys()
                .take(1024)
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Ok(pruned);
            }
            let mut batch = sled::Batch::default();
            for k in &keys {
                batch.remove(k.clone());
            }
            self.io(self.db.apply_batch(batch))?;
            pruned += keys.len();
        }
    }

    /// The latest `limit` events, newest last.
    pub fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(keys::EVENTS).rev().take(limit) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        out.reverse();
        Ok(out)
    }

    /// What the last check of (rule, account) saw.
    pub fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError> {
        Ok(self.read(&keys::check(rule, account))?.unwrap_or_default())
    }

    /// Records what a check saw and decided.
    pub fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError> {
        self.write(&keys::check(rule, account), state)
    }

    /// The account's stored token pair, if it was ever rotated.
    pub fn stored_token(&self, account: &str) -> Result<Option<StoredToken>, LedgerError> {
        self.read(&keys::token(account))
    }

    /// Stores a rotated token pair (make it durable before using it).
    pub fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError> {
        self.write(&keys::token(account), token)
    }

    /// An account's credential state.
    pub fn account_state(&self, account: &str) -> Result<AccountState, LedgerError> {
        Ok(self
            .read(&keys::account_state(account))?
            .unwrap_or_default())
    }

    /// Records an account's credential state.
    pub fn put_account_state(
        &self,
        account: &str,
        state: &AccountState,
    ) -> Result<(), LedgerError> {
        self.write(&keys::account_state(account), state)
    }
}
