//! What the daemon can say about itself: `status`, `plan`, and the two
//! operator actions, a manual recharge and resolving an order.

use std::collections::BTreeMap;

use serde::Serialize;

use super::decide::Decision;
use super::events::{Event, EventKind, record};
use super::manual::Operator;
use super::terms::Terms;
use super::{Engine, period, spread};
use crate::config::{Check, Config};
use crate::ledger::store::Store;
use crate::ledger::{
    ErrorKind, EventRecord, LedgerError, Order, OrderState, Settlement, Verification,
};
use crate::units::Fen;
use crate::upstream::vipinfo::Membership;

/// `vipd status` / `GET /api/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    pub now: i64,
    pub generation: u64,
    pub dry_run: bool,
    /// Per rule and account.
    pub checks: Vec<CheckLine>,
    /// Orders by state.
    pub orders: BTreeMap<String, usize>,
    /// Spending per rule this day and month.
    pub spend: Vec<SpendLine>,
    /// Paused providers and why.
    pub paused: BTreeMap<String, String>,
    /// Accounts whose reads fail.
    pub attention: BTreeMap<String, String>,
    /// The latest events.
    pub events: Vec<EventRecord>,
    /// How the last reload went (a refused one shows its error here).
    #[serde(default)]
    pub last_reload: Option<super::ReloadReport>,
    /// Loaded plugins and their handler counts.
    #[serde(default)]
    pub plugins: BTreeMap<String, super::hooks::PluginCounts>,
    /// Each account's latest manual order (`vipd recharge`), while it is
    /// open or unverified, or for 7 days after.
    #[serde(default)]
    pub manual: Vec<ManualLine>,
    /// On a shared store: the node that answered, and every node with its
    /// lease and how many pairs it checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<crate::ledger::store::NodeInfo>,
}

/// A manual order in `status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ManualLine {
    pub account: String,
    pub membership: Membership,
    pub product: String,
    pub order: OrderBrief,
    pub verification: Verification,
}

/// One (rule, account) pair in `status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckLine {
    pub rule: String,
    pub account: String,
    pub membership: Membership,
    pub observed_end: Option<i64>,
    pub checked_at: Option<i64>,
    pub next_check: Option<i64>,
    pub decision: String,
    pub last_order: Option<OrderBrief>,
}

/// An order in one line.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OrderBrief {
    pub key: String,
    pub state: OrderState,
    pub attempts: u32,
    pub spent: Fen,
    pub updated_at: i64,
    pub why: String,
}

impl From<&Order> for OrderBrief {
    fn from(o: &Order) -> Self {
        OrderBrief {
            key: o.key.clone(),
            state: o.state,
            attempts: o.attempts,
            spent: o.spent,
            updated_at: o.updated_at,
            why: o.last_why().to_owned(),
        }
    }
}

/// A rule's spending in `status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SpendLine {
    pub rule: String,
    pub day: String,
    pub used_day: Fen,
    pub per_day: Option<Fen>,
    pub month: String,
    pub used_month: Fen,
    pub per_month: Option<Fen>,
}

/// Gathers a status at `now` from the configuration and the store.
/// `paused` names paused providers (only a running daemon knows).
pub async fn status(
    config: &Config,
    store: &dyn Store,
    generation: u64,
    dry_run: bool,
    paused: BTreeMap<String, String>,
    now: i64,
) -> Result<Status, LedgerError> {
    let tz = config.daemon.timezone;
    let orders = store
        .count_by_state()
        .await?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect();
    let mut checks = Vec::new();
    let mut attention = BTreeMap::new();
    for rule in &config.rules {
        for name in &rule.accounts {
            let c = store.check_state(&rule.name, name).await?;
            let last_order = store
                .orders_of(name)
                .await?
                .into_iter()
                .filter(|o| *o.rule == *rule.name)
                .max_by_key(|o| o.updated_at);
            let offset = spread(&rule.name, name, rule.check.interval(now, tz)).as_secs() as i64;
            // Only a running daemon checks (generation 0: read from the
            // store with the daemon stopped).
            let next_check = match &rule.check {
                _ if generation == 0 => None,
                Check::Every(d) => c.checked_at.map(|at| at + d.as_secs() as i64),
                Check::Cron { .. } => rule.check.next_after(now - offset, tz).map(|t| t + offset),
            };
            checks.push(CheckLine {
                rule: rule.name.to_string(),
                account: name.to_string(),
                membership: rule.membership,
                observed_end: c.observed_end,
                checked_at: c.checked_at,
                next_check,
                decision: c.decision,
                last_order: last_order.as_ref().map(OrderBrief::from),
            });
        }
    }
    let mut manual = Vec::new();
    for a in &config.accounts {
        if let Some(err) = store.account_state(&a.name).await?.last_error {
            attention.insert(a.name.clone(), err);
        }
        let latest = store
            .orders_of(&a.name)
            .await?
            .into_iter()
            .filter(|o| &*o.rule == super::MANUAL_RULE)
            .max_by_key(|o| o.updated_at);
        if let Some(o) = latest {
            let open = !matches!(o.state, OrderState::Succeeded | OrderState::Failed)
                || matches!(
                    o.verification,
                    Verification::Waiting { .. } | Verification::Unverified { .. }
                );
            if open || now - o.updated_at < 7 * 86_400 {
                manual.push(ManualLine {
                    account: a.name.clone(),
                    membership: o.membership,
                    product: o.product.to_string(),
                    order: OrderBrief::from(&o),
                    verification: o.verification.clone(),
                });
            }
        }
    }
    let (day, month) = period::periods(now, tz);
    let mut spend = Vec::new();
    for rule in &config.rules {
        spend.push(SpendLine {
            rule: rule.name.to_string(),
            used_day: store.spend(&rule.name, &day).await?.used(),
            per_day: rule.budget.per_day,
            used_month: store.spend(&rule.name, &month).await?.used(),
            per_month: rule.budget.per_month,
            day: day.clone(),
            month: month.clone(),
        });
    }
    Ok(Status {
        now,
        generation,
        dry_run,
        checks,
        orders,
        spend,
        paused,
        attention,
        events: store.events(20).await?,
        last_reload: None,
        plugins: BTreeMap::new(),
        manual,
        node: match &config.daemon.store {
            crate::config::StoreKind::Postgres { node, .. } => Some(node.clone()),
            crate::config::StoreKind::Sled => None,
        },
        nodes: store.nodes().await?,
    })
}

/// One line of `vipd plan`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlanLine {
    pub rule: String,
    pub account: String,
    pub membership: Membership,
    pub end: Option<i64>,
    pub due: bool,
    pub decision: String,
}

/// Why an order could not be resolved. The admin API answers 404 when no
/// order (or several) match, 409 when the order is not in a state an
/// operator may resolve, 503 when the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    NotFound(LedgerError),
    #[error("{0}")]
    NotResolvable(String),
    #[error(transparent)]
    Store(LedgerError),
}

impl From<LedgerError> for ResolveError {
    fn from(e: LedgerError) -> ResolveError {
        match e.kind() {
            ErrorKind::NotFound => ResolveError::NotFound(e),
            ErrorKind::Conflict => ResolveError::NotResolvable(e.to_string()),
            _ => ResolveError::Store(e),
        }
    }
}

/// Operator resolution of an open order (`vipd orders resolve`), recorded
/// with who and why. The event is recorded here; a running daemon also
/// hands it to its plugins.
pub async fn resolve(
    store: &dyn Store,
    key_prefix: &str,
    paid: bool,
    who: Operator<'_>,
    now: i64,
) -> Result<(Order, Event), ResolveError> {
    let Operator { by, why } = who.checked()?;
    let order = store.find(key_prefix).await?;
    if order.state == OrderState::Succeeded
        && matches!(order.verification, Verification::Unverified { .. })
    {
        if paid {
            return Err(ResolveError::NotResolvable(format!(
                "order {} is already succeeded (paid; its renewal never showed)",
                order.key
            )));
        }
        let refuted = store
            .refute_unverified(
                &order.key,
                now,
                &format!("paid but never delivered, said {by}: {why}; refunded to the budget, may be retried"),
            )
            .await?;
        store.durable().await?;
        super::check::log_transition(&refuted);
        let event = Event::new(
            EventKind::OrderSettled,
            now,
            format!("failed by {by} (unverified renewal): {why}"),
        )
        .order(&refuted)
        .said_by(by, why);
        record(store, &event).await;
        return Ok((refuted, event));
    }
    if order.state == OrderState::AwaitingApproval {
        return Err(ResolveError::NotResolvable(format!(
            "order {} awaits approval and was never sent: approve or decline it (`vipd orders approve|decline`)",
            order.key
        )));
    }
    if !order.state.is_open()
        || order.state == OrderState::Planned
        || order.state == OrderState::Sent
    {
        return Err(ResolveError::NotResolvable(format!(
            "order {} is {}; only pending and unknown orders (and unverified paid ones, as failed) can be resolved",
            order.key, order.state
        )));
    }
    let settlement = if paid {
        Settlement::Paid {
            price: None,
            verify_deadline: now + 3600,
            why: format!("resolved as succeeded (paid) by {by}: {why}"),
        }
    } else {
        Settlement::NotPaid {
            retry_at: Some(now),
            why: format!("resolved as failed (not paid) by {by}: {why}; may be retried"),
        }
    };
    let settled = store
        .settle(&order.key, now, settlement)
        .await?
        .ok_or_else(|| {
            ResolveError::NotResolvable(format!("order {} was settled meanwhile", order.key))
        })?;
    store.durable().await?;
    super::check::log_transition(&settled);
    let event = Event::new(
        EventKind::OrderSettled,
        now,
        format!("{} by {by}: {why}", settled.state),
    )
    .order(&settled)
    .said_by(by, why);
    record(store, &event).await;
    Ok((settled, event))
}

impl Engine {
    /// `status` of this running engine.
    pub async fn status(&self) -> Result<Status, LedgerError> {
        let rt = self.runtime();
        let now = self.clock.unix();
        let paused = rt
            .sellers
            .iter()
            .filter_map(|(name, s)| match s.gate.peek(now) {
                super::decide::Admission::Closed { why } => Some((name.clone(), why)),
                _ => None,
            })
            .collect();
        let mut s = status(
            &rt.config,
            &*self.store,
            rt.generation,
            self.dry_run,
            paused,
            now,
        )
        .await?;
        s.last_reload = self.last_reload();
        let counts = rt.hooks.counts();
        s.plugins = rt
            .hooks
            .names()
            .into_iter()
            .map(|n| {
                let c = counts.get(&n).copied().unwrap_or_default();
                (n, c)
            })
            .collect();
        Ok(s)
    }

    /// What the daemon would do for each (rule, account) at `at` (default
    /// now), reading memberships live. Writes nothing.
    pub async fn plan(
        &self,
        account: Option<&str>,
        at: Option<i64>,
    ) -> Result<Vec<PlanLine>, String> {
        let rt = self.runtime();
        let now = at.unwrap_or_else(|| self.clock.unix());
        let mut lines = Vec::new();
        for rule in &rt.config.rules {
            for acct in rt.config.accounts_of(rule) {
                if account.is_some_and(|a| a != acct.name) {
                    continue;
                }
                let product = &*rule.product;
                let (end, decision) = match self.read(&rt, acct).await {
                    Ok(info) => {
                        let end = info.end(rule.membership);
                        let d = self
                            .decide_now(&rt, &Terms::of(rule), acct, product, end, now, None)
                            .await
                            .map_err(|e| e.to_string())?;
                        (end, d)
                    }
                    Err(e) => (
                        None,
                        Decision::GaveUp {
                            why: format!("cannot read memberships: {e}"),
                        },
                    ),
                };
                lines.push(PlanLine {
                    rule: rule.name.to_string(),
                    account: acct.name.clone(),
                    membership: rule.membership,
                    end,
                    due: matches!(decision, Decision::Renew { .. }),
                    decision: decision.describe(),
                });
            }
        }
        if let Some(a) = account {
            if lines.is_empty() && rt.config.account(a).is_none() {
                return Err(format!("no account named {a}"));
            }
        }
        Ok(lines)
    }
}
