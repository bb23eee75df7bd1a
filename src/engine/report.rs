//! What the daemon can say about itself: `status`, `plan`, and the two
//! operator actions, a manual recharge and resolving an order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::decide::Decision;
use super::events::{Event, EventKind, record};
use super::terms::Terms;
use super::{Engine, period, spread};
use crate::config::{Check, Config};
use crate::ledger::{
    EventRecord, Ledger, LedgerError, Order, OrderState, Settlement, Verification,
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
pub fn status(
    config: &Config,
    ledger: &Ledger,
    generation: u64,
    dry_run: bool,
    paused: BTreeMap<String, String>,
    now: i64,
) -> Result<Status, LedgerError> {
    let tz = config.daemon.timezone;
    let orders = ledger
        .count_by_state()?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect();
    let mut checks = Vec::new();
    let mut attention = BTreeMap::new();
    for rule in &config.rules {
        for name in &rule.accounts {
            let c = ledger.check_state(&rule.name, name)?;
            let last_order = ledger
                .orders_of(name)?
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
        if let Some(err) = ledger.account_state(&a.name)?.last_error {
            attention.insert(a.name.clone(), err);
        }
        let latest = ledger
            .orders_of(&a.name)?
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
            used_day: ledger.spend(&rule.name, &day)?.used(),
            per_day: rule.budget.per_day,
            used_month: ledger.spend(&rule.name, &month)?.used(),
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
        events: ledger.events(20)?,
        last_reload: None,
        plugins: BTreeMap::new(),
        manual,
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

/// Operator resolution of an open order (`vipd orders resolve`). The
/// event is recorded here; a running daemon also hands it to its plugins.
pub async fn resolve(
    ledger: &Ledger,
    key_prefix: &str,
    paid: bool,
    now: i64,
) -> Result<(Order, Event), String> {
    let order = ledger.find(key_prefix).map_err(|e| e.to_string())?;
    if order.state == OrderState::Succeeded
        && matches!(order.verification, Verification::Unverified { .. })
    {
        if paid {
            return Err(format!(
                "order {} is already succeeded (paid; its renewal never showed)",
                order.key
            ));
        }
        let refuted = ledger
            .refute_unverified(
                &order.key,
                now,
                "operator: paid but never delivered; refunded to the budget, may be retried",
            )
            .map_err(|e| e.to_string())?;
        ledger.durable().await.map_err(|e| e.to_string())?;
        super::check::log_transition(&refuted);
        let event = Event::new(
            EventKind::OrderSettled,
            now,
            "failed by operator (unverified renewal)",
        )
        .order(&refuted);
        record(ledger, &event);
        return Ok((refuted, event));
    }
    if !order.state.is_open()
        || order.state == OrderState::Planned
        || order.state == OrderState::Sent
    {
        return Err(format!(
            "order {} is {}; only pending and unknown orders (and unverified paid ones, as failed) can be resolved",
            order.key, order.state
        ));
    }
    let settlement = if paid {
        Settlement::Paid {
            price: None,
            verify_deadline: now + 3600,
            why: "operator: resolved as succeeded (paid)".into(),
        }
    } else {
        Settlement::NotPaid {
            retry_at: Some(now),
            why: "operator: resolved as failed (not paid); may be retried".into(),
        }
    };
    let settled = ledger
        .settle(&order.key, now, settlement)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("order {} was settled meanwhile", order.key))?;
    ledger.durable().await.map_err(|e| e.to_string())?;
    super::check::log_transition(&settled);
    let event = Event::new(
        EventKind::OrderSettled,
        now,
        format!("{} by operator", settled.state),
    )
    .order(&settled);
    record(ledger, &event);
    Ok((settled, event))
}

impl Engine {
    /// `status` of this running engine.
    pub fn status(&self) -> Result<Status, LedgerError> {
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
            &self.ledger,
            rt.generation,
            self.dry_run,
            paused,
            now,
        )?;
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
            for name in &rule.accounts {
                if account.is_some_and(|a| a != &**name) {
                    continue;
                }
                let acct = rt.config.account(name).expect("validated");
                let product = rt.config.products.get(&rule.product).expect("validated");
                let (end, decision) = match self.read(&rt, acct).await {
                    Ok(info) => {
                        let end = info.end(rule.membership);
                        let d = self
                            .decide_now(&rt, &Terms::of(rule), acct, product, end, now)
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
                    account: name.to_string(),
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

    /// One manual renewal (`vipd recharge`) under the rule name `manual`:
    /// the same ledger key rules, provider gate and guards as the daemon,
    /// without a budget (an operator is spending on purpose).
    pub async fn manual_recharge(
        self: &Arc<Self>,
        account: &str,
        product: &str,
        dry_run: bool,
    ) -> Result<String, String> {
        let rt = self.runtime();
        let acct = rt
            .config
            .account(account)
            .ok_or_else(|| format!("no account named {account}"))?;
        let prod = rt
            .config
            .products
            .get(product)
            .ok_or_else(|| format!("no product named {product}"))?;
        let terms = Terms::manual(&rt.config, prod);
        let end = self
            .read(&rt, acct)
            .await
            .map_err(|e| format!("cannot read memberships: {e}"))?
            .end(prod.extends);
        let now = self.clock.unix();
        let decision = self
            .decide_now(&rt, &terms, acct, prod, end, now)
            .map_err(|e| e.to_string())?;
        let Decision::Renew { .. } = decision else {
            return Err(format!("not renewing: {}", decision.describe()));
        };
        // The rule's own words would name its stand-in window.
        let why = match end {
            Some(end) if end > now => format!(
                "{} ends {}",
                prod.extends,
                crate::timefmt::relative(end - now)
            ),
            Some(end) => format!(
                "{} lapsed {}",
                prod.extends,
                crate::timefmt::relative(end - now)
            ),
            None => format!("no {} membership", prod.extends),
        };
        if dry_run || self.dry_run {
            return Ok(format!(
                "dry run: would renew {} for {account} with {product} ({why})",
                prod.extends
            ));
        }
        match self
            .renew(&rt, &terms, acct, prod, end, format!("manual: {why}"))
            .await
        {
            Some(o) => {
                // No rule checks manual orders: follow this one up until
                // it is settled and verified (see `check_manual`).
                self.follow_up(super::MANUAL_RULE, &acct.name, Duration::from_secs(1));
                Ok(format!("order {} {}: {}", o.key, o.state, o.last_why()))
            }
            None => Err("not paid; see the log for why".into()),
        }
    }
}

impl Engine {
    /// `GET /metrics`: the hot-path counters, and what the ledger and the
    /// configuration say now.
    pub fn render_metrics(&self) -> Result<String, LedgerError> {
        use crate::metrics::Writer;
        let rt = self.runtime();
        let now = self.clock.unix();
        let mut w = Writer::default();
        self.metrics.write(&mut w);

        let counts = self.ledger.count_by_state()?;
        w.family("vipd_orders", "gauge", "Orders in the ledger by state.");
        for state in OrderState::ALL {
            let n = counts.get(&state).copied().unwrap_or(0);
            w.sample("vipd_orders", &[("state", state.as_str())], n as f64);
        }

        let (day, month) = super::period::periods(now, rt.config.daemon.timezone);
        w.family(
            "vipd_spend_yuan",
            "gauge",
            "Spent or held per rule in the current budget day and month (daemon.timezone).",
        );
        let mut caps = Vec::new();
        for rule in &rt.config.rules {
            for (period, key, cap) in [
                ("day", &day, rule.budget.per_day),
                ("month", &month, rule.budget.per_month),
            ] {
                let used = self.ledger.spend(&rule.name, key)?.used();
                w.sample(
                    "vipd_spend_yuan",
                    &[("rule", &rule.name), ("period", period)],
                    used.as_yuan_f64(),
                );
                if let Some(cap) = cap {
                    caps.push((&*rule.name, period, cap));
                }
            }
        }
        w.family(
            "vipd_budget_cap_yuan",
            "gauge",
            "Budget caps per rule and period.",
        );
        for (rule, period, cap) in caps {
            w.sample(
                "vipd_budget_cap_yuan",
                &[("rule", rule), ("period", period)],
                cap.as_yuan_f64(),
            );
        }

        w.family(
            "vipd_membership_end_timestamp_seconds",
            "gauge",
            "When each account's membership ends, as last read (unix seconds).",
        );
        let mut ends = BTreeMap::new();
        for rule in &rt.config.rules {
            for account in &rule.accounts {
                let state = self.ledger.check_state(&rule.name, account)?;
                if let Some(end) = state.observed_end {
                    ends.insert((&**account, rule.membership.as_str()), end);
                }
            }
        }
        for ((account, membership), end) in ends {
            w.sample(
                "vipd_membership_end_timestamp_seconds",
                &[("account", account), ("membership", membership)],
                end as f64,
            );
        }

        // The window each rule renews in, per covered account: an alert
        // compares it with the end above without knowing the rules.
        w.family(
            "vipd_renew_window_seconds",
            "gauge",
            "A rule's renew_before, for each account and membership it covers.",
        );
        for rule in &rt.config.rules {
            let window = rule.renew_before.as_secs() as f64;
            for account in &rule.accounts {
                w.sample(
                    "vipd_renew_window_seconds",
                    &[
                        ("rule", &rule.name),
                        ("account", account),
                        ("membership", rule.membership.as_str()),
                    ],
                    window,
                );
            }
        }

        w.family(
            "vipd_renewals_unverified",
            "gauge",
            "Paid orders whose renewal never showed (verification: unverified).",
        );
        let unverified = self
            .ledger
            .orders(Some(OrderState::Succeeded))?
            .iter()
            .filter(|o| matches!(o.verification, Verification::Unverified { .. }))
            .count();
        w.sample("vipd_renewals_unverified", &[], unverified as f64);

        w.family(
            "vipd_provider_paused",
            "gauge",
            "1 while a recharge provider takes no orders.",
        );
        for (name, seller) in &rt.sellers {
            let paused = matches!(
                seller.gate.peek(now),
                super::decide::Admission::Closed { .. }
            );
            w.sample(
                "vipd_provider_paused",
                &[("provider", name)],
                if paused { 1.0 } else { 0.0 },
            );
        }

        let stats = self.runtime().hooks.counts();
        w.family(
            "vipd_plugin_calls_total",
            "counter",
            "Lua handler and job calls per plugin.",
        );
        for (plugin, c) in &stats {
            w.sample(
                "vipd_plugin_calls_total",
                &[("plugin", plugin)],
                c.calls as f64,
            );
        }
        w.family(
            "vipd_plugin_errors_total",
            "counter",
            "Lua handler and job calls that failed, per plugin (limit hits included).",
        );
        for (plugin, c) in &stats {
            w.sample(
                "vipd_plugin_errors_total",
                &[("plugin", plugin)],
                c.errors as f64,
            );
        }
        w.family(
            "vipd_plugin_limit_hits_total",
            "counter",
            "Lua calls stopped by a limit, per plugin and limit.",
        );
        for (plugin, c) in &stats {
            for (limit, n) in [
                ("instruction", c.instruction_limit),
                ("time", c.time_limit),
                ("memory", c.memory_limit),
            ] {
                w.sample(
                    "vipd_plugin_limit_hits_total",
                    &[("plugin", plugin), ("limit", limit)],
                    n as f64,
                );
            }
        }

        w.family(
            "vipd_config_generation",
            "gauge",
            "The configuration generation in force.",
        );
        w.sample("vipd_config_generation", &[], rt.generation as f64);
        let last = self.last_reload();
        w.family(
            "vipd_config_last_reload_success",
            "gauge",
            "1 if the last reload was applied (or none was asked for), 0 if it was refused.",
        );
        let ok = last.as_ref().is_none_or(|r| r.error.is_none());
        w.sample(
            "vipd_config_last_reload_success",
            &[],
            if ok { 1.0 } else { 0.0 },
        );
        // Present from start: the first load counts, so an alert on an
        // old configuration has a value to compare before any reload.
        w.family(
            "vipd_config_last_reload_timestamp_seconds",
            "gauge",
            "When the configuration in force was last loaded or a reload was last asked for (unix seconds).",
        );
        w.sample(
            "vipd_config_last_reload_timestamp_seconds",
            &[],
            last.map_or(self.started_at as f64, |r| r.at as f64),
        );
        Ok(w.finish())
    }
}
