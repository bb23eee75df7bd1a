//! `/metrics`: the hot-path counters, and what is read from the ledger
//! and the runtime at scrape time, in the Prometheus text format.

use std::collections::BTreeMap;

use super::*;
use crate::ledger::{LedgerError, OrderState};

impl Engine {
    /// `GET /metrics`: the hot-path counters, and what the ledger and the
    /// configuration say now.
    pub(crate) async fn render_metrics(&self) -> Result<String, LedgerError> {
        use crate::metrics::Writer;
        let rt = self.runtime();
        let now = self.clock.unix();
        let mut w = Writer::default();
        self.metrics.write(&mut w);

        let counts = self.store.count_by_state().await?;
        w.family("vipd_orders", "gauge", "Orders in the ledger by state.");
        for state in OrderState::ALL {
            let n = counts.get(&state).copied().unwrap_or(0);
            w.sample("vipd_orders", &[("state", state.as_str())], n as f64);
        }

        let commits = self.store.commits();
        w.family(
            "vipd_store_durable_waits_total",
            "counter",
            "Times a write waited to be durable (before a request leaves, after a reply).",
        );
        w.sample("vipd_store_durable_waits_total", &[], commits.waits as f64);
        w.family(
            "vipd_store_commits_total",
            "counter",
            "Commits that made writes durable; each answers every wait queued before it.",
        );
        w.sample("vipd_store_commits_total", &[], commits.commits as f64);

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
                let used = self.store.spend(&rule.name, key).await?.used();
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

        // What the current day and month would need: spent, held, and
        // what the known ends bring before they are over (blocked or not),
        // to compare with the caps above (`VipdBudgetRunsOut`).
        // Each pair's check state, read once for the forecast and the ends.
        let seen = self.check_states().await?;
        let forecast = self.forecast_seen(32, &seen).await?;
        w.family(
            "vipd_forecast_spend",
            "gauge",
            "Yuan the current day and month would need per rule (budget): spent, held, and the renewals the known ends bring in them.",
        );
        for b in &forecast.budgets {
            for (window, demand) in [("day", b.demand_day), ("month", b.demand_month)] {
                w.sample(
                    "vipd_forecast_spend",
                    &[("budget", &b.rule), ("window", window)],
                    demand.as_yuan_f64(),
                );
            }
        }

        w.family(
            "vipd_membership_end_timestamp_seconds",
            "gauge",
            "When each account's membership ends, as last read (unix seconds).",
        );
        let mut ends = BTreeMap::new();
        for rule in &rt.config.rules {
            for account in &rule.accounts {
                let state = &seen[&(rule.name.to_string(), account.to_string())];
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
        let unverified = self.store.count_unverified().await?;
        w.sample("vipd_renewals_unverified", &[], unverified as f64);

        // On a shared store: every node, its lease and its pairs.
        let nodes = self.store.nodes().await?;
        if !nodes.is_empty() {
            w.family(
                "vipd_node_lease_seconds",
                "gauge",
                "Seconds left on each node's lease on the shared store (negative: it ran out).",
            );
            for n in &nodes {
                w.sample(
                    "vipd_node_lease_seconds",
                    &[("node", &n.name)],
                    n.lease_left,
                );
            }
            w.family(
                "vipd_node_pairs",
                "gauge",
                "The (rule, account) pairs each node checks.",
            );
            for n in &nodes {
                w.sample("vipd_node_pairs", &[("node", &n.name)], n.claims as f64);
            }
        }

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
