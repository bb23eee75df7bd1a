//! `vipd forecast` (README "Forecast"): the renewals the known ends bring
//! within a horizon, and what they cost per day, week and budget, against
//! each rule's caps and its provider's gate.
//!
//! Each covered membership whose end a check has seen is renewed when it
//! comes within its rule's `renew_before` (at once if it already has),
//! and every period after that: the renewal extends the end by the
//! product's `adds`. A period that already has an order (open, or paid)
//! is counted as paid. Renewals are then weighed in time order against
//! each cap, starting from what the ledger has spent and held in the
//! current day and month: one that would pass a cap is *blocked* (named,
//! with when), as the daemon would refuse it; so is every renewal through
//! a provider that is paused for its balance or its configuration. The
//! price is the product's `max_price`, what a plan holds (a vendor may
//! bill less); renewals above `approve_above` are marked as needing
//! approval.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::period;
use crate::model::Membership;
use crate::units::Fen;

/// One covered membership, as the forecast starts from it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub rule: String,
    pub account: String,
    pub membership: Membership,
    pub product: String,
    /// The end last seen (`None`: no membership, renewed at once unless
    /// the rule skips lapsed ones).
    pub end: Option<i64>,
    /// The period of that end has an order already (open or paid).
    pub ordered: bool,
    pub renew_before: i64,
    pub adds: i64,
    pub price: Fen,
    /// The rule renews a lapsed membership.
    pub renews_lapsed: bool,
    /// Why its provider takes no orders now, if it does not.
    pub provider_closed: Option<String>,
}

/// A rule's budget, as the forecast weighs it.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub per_day: Option<Fen>,
    pub per_month: Option<Fen>,
    pub approve_above: Option<Fen>,
    /// Spent or held in the current day and month.
    pub used_day: Fen,
    pub used_month: Fen,
}

/// One renewal expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Unix seconds.
    pub at: i64,
    pub rule: String,
    pub account: String,
    pub membership: Membership,
    pub product: String,
    pub price: Fen,
    /// Why it would not be paid then (a cap, a paused provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// It would wait for a person's approval first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_approval: bool,
}

/// Renewals and spend of one day or week.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// `2027-01-15`, or the week's Monday `2027-01-11`.
    pub from: String,
    pub renewals: usize,
    pub spend: Fen,
    /// Renewals a cap or a paused provider would block.
    pub blocked: usize,
}

/// One rule's budget over the horizon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub rule: String,
    pub per_day: Option<Fen>,
    pub per_month: Option<Fen>,
    pub renewals: usize,
    pub spend: Fen,
    pub blocked: usize,
    /// The first renewal blocked: when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_blocked: Option<(i64, String)>,
    /// Spent and held today, and what today's renewals would add (blocked
    /// or not): what the day's cap is measured against.
    pub demand_day: Fen,
    /// The same for the current month.
    pub demand_month: Fen,
}

/// The whole forecast.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    /// Unix seconds it starts at.
    pub from: i64,
    pub days: u32,
    pub renewals: Vec<Expected>,
    pub by_day: Vec<Period>,
    pub by_week: Vec<Period>,
    pub budgets: Vec<Budget>,
    /// Paid renewals and their spend over the horizon.
    pub total_renewals: usize,
    pub total_spend: Fen,
}

/// The renewals `pairs` bring from `now` for `days`, weighed against
/// `caps` (by rule) in `tz`.
pub fn forecast(
    pairs: &[Pair],
    caps: &BTreeMap<String, Caps>,
    now: i64,
    days: u32,
    tz: chrono_tz::Tz,
) -> Forecast {
    let until = now + i64::from(days) * 86_400;
    let mut renewals = Vec::new();
    for p in pairs {
        let mut end = match p.end {
            Some(end) => end,
            None if p.renews_lapsed => now,
            None => continue,
        };
        if p.ordered || (end <= now && !p.renews_lapsed && p.end.is_some()) {
            if !p.ordered {
                // Lapsed and left alone: nothing to renew.
                continue;
            }
            end = end.max(now) + p.adds;
        }
        loop {
            let at = (end - p.renew_before).max(now);
            if at >= until || p.adds <= 0 {
                break;
            }
            renewals.push(Expected {
                at,
                rule: p.rule.clone(),
                account: p.account.clone(),
                membership: p.membership,
                product: p.product.clone(),
                price: p.price,
                blocked: p
                    .provider_closed
                    .clone()
                    .map(|why| format!("provider paused: {why}")),
                needs_approval: false,
            });
            end = end.max(at) + p.adds;
        }
    }
    // In time order; at the same moment, in the pairs' own order.
    renewals.sort_by_key(|r| r.at);
    let at: Vec<Local> = renewals.iter().map(|r| Local::of(r.at, tz)).collect();
    let today = Local::of(now, tz);
    weigh(&mut renewals, &at, caps, today);
    summarize(renewals, &at, caps, (now, today), days)
}

/// A moment's budget day and month in the daemon's timezone, as numbers
/// (days since the common era; months since year 0): renewals are
/// weighed and summed by these, and only the periods shown are written
/// out as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Local {
    day: i32,
    month: i32,
}

impl Local {
    fn of(at: i64, tz: chrono_tz::Tz) -> Local {
        use chrono::{Datelike, TimeZone};
        let date = tz
            .timestamp_opt(at, 0)
            .single()
            .unwrap_or_else(|| tz.timestamp_opt(0, 0).unwrap())
            .date_naive();
        Local {
            day: date.num_days_from_ce(),
            month: date.year() * 12 + date.month0() as i32,
        }
    }

    /// The Monday of its week, as a day.
    fn monday(self) -> i32 {
        use chrono::Datelike;
        let weekday = chrono::NaiveDate::from_num_days_from_ce_opt(self.day)
            .map_or(0, |d| d.weekday().num_days_from_monday() as i32);
        self.day - weekday
    }
}

/// A day (days since the common era) as `2027-01-15`.
fn day_text(day: i32) -> String {
    chrono::NaiveDate::from_num_days_from_ce_opt(day)
        .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string())
}

/// A month (months since year 0) as `2027-01`.
fn month_text(month: i32) -> String {
    format!("{}-{:02}", month.div_euclid(12), month.rem_euclid(12) + 1)
}

/// Marks the renewals each cap would block, in time order, from what the
/// current day and month have used; and those that need approval.
fn weigh(renewals: &mut [Expected], at: &[Local], caps: &BTreeMap<String, Caps>, now: Local) {
    // (rule, day or month) → used; days and months kept apart by sign.
    let mut used: HashMap<(&str, i64), Fen> = HashMap::new();
    let day_key = |d: i32| i64::from(d);
    let month_key = |m: i32| -1 - i64::from(m);
    for (rule, c) in caps {
        used.insert((rule, day_key(now.day)), c.used_day);
        used.insert((rule, month_key(now.month)), c.used_month);
    }
    for (r, local) in renewals.iter_mut().zip(at) {
        let Some((rule, c)) = caps.get_key_value(&r.rule) else {
            continue;
        };
        r.needs_approval = c.approve_above.is_some_and(|above| r.price > above);
        if r.blocked.is_some() {
            continue;
        }
        let keys = [
            ("day", day_key(local.day), c.per_day),
            ("month", month_key(local.month), c.per_month),
        ];
        let over = keys.iter().find_map(|&(name, key, cap)| {
            let cap = cap?;
            let u = used
                .get(&(rule.as_str(), key))
                .copied()
                .unwrap_or(Fen::ZERO);
            (u.0 + r.price.0 > cap.0).then(|| {
                let period = if name == "day" {
                    day_text(local.day)
                } else {
                    month_text(local.month)
                };
                format!("the {name}'s cap of {cap} ({period}: {u} used)")
            })
        });
        match over {
            Some(why) => r.blocked = Some(why),
            None => {
                for (_, key, _) in keys {
                    used.entry((rule.as_str(), key)).or_insert(Fen::ZERO).0 += r.price.0;
                }
            }
        }
    }
}

fn summarize(
    renewals: Vec<Expected>,
    at: &[Local],
    caps: &BTreeMap<String, Caps>,
    (from, now): (i64, Local),
    days: u32,
) -> Forecast {
    let mut by_day: BTreeMap<i32, Period> = BTreeMap::new();
    let mut by_week: BTreeMap<i32, Period> = BTreeMap::new();
    let mut budgets: BTreeMap<String, Budget> = caps
        .iter()
        .map(|(rule, c)| {
            let b = Budget {
                rule: rule.clone(),
                per_day: c.per_day,
                per_month: c.per_month,
                demand_day: c.used_day,
                demand_month: c.used_month,
                ..Budget::default()
            };
            (rule.clone(), b)
        })
        .collect();
    let (mut total_renewals, mut total_spend) = (0, Fen::ZERO);
    for (r, local) in renewals.iter().zip(at) {
        if !budgets.contains_key(&r.rule) {
            let b = Budget {
                rule: r.rule.clone(),
                ..Budget::default()
            };
            budgets.insert(r.rule.clone(), b);
        }
        let b = budgets.get_mut(&r.rule).expect("inserted above");
        if local.day == now.day {
            b.demand_day.0 += r.price.0;
        }
        if local.month == now.month {
            b.demand_month.0 += r.price.0;
        }
        for (map, key) in [(&mut by_day, local.day), (&mut by_week, local.monday())] {
            let p = map.entry(key).or_default();
            if r.blocked.is_some() {
                p.blocked += 1;
            } else {
                p.renewals += 1;
                p.spend.0 += r.price.0;
            }
        }
        match &r.blocked {
            Some(why) => {
                b.blocked += 1;
                b.first_blocked.get_or_insert((r.at, why.clone()));
            }
            None => {
                b.renewals += 1;
                b.spend.0 += r.price.0;
                total_renewals += 1;
                total_spend.0 += r.price.0;
            }
        }
    }
    let dated = |map: BTreeMap<i32, Period>| -> Vec<Period> {
        map.into_iter()
            .map(|(day, p)| Period {
                from: day_text(day),
                ..p
            })
            .collect()
    };
    Forecast {
        from,
        days,
        renewals,
        by_day: dated(by_day),
        by_week: dated(by_week),
        budgets: budgets.into_values().collect(),
        total_renewals,
        total_spend,
    }
}

impl super::Engine {
    /// The forecast for `days` from now, from what the checks have seen:
    /// each pair's end (pairs never checked are left out), whether its
    /// period has an order, its provider's gate, and each rule's spend in
    /// the current day and month.
    pub async fn forecast(&self, days: u32) -> Result<Forecast, crate::ledger::LedgerError> {
        let seen = self.check_states().await?;
        self.forecast_seen(days, &seen).await
    }

    /// Every covered pair's check state, by (rule, account).
    pub(super) async fn check_states(
        &self,
    ) -> Result<BTreeMap<(String, String), crate::ledger::CheckState>, crate::ledger::LedgerError>
    {
        let rt = self.runtime();
        let mut seen = BTreeMap::new();
        for rule in &rt.config.rules {
            for account in &rule.accounts {
                let state = self.store.check_state(&rule.name, account).await?;
                seen.insert((rule.name.to_string(), account.to_string()), state);
            }
        }
        Ok(seen)
    }

    /// [`Engine::forecast`] from check states already read, by (rule,
    /// account): `/metrics` reads them once for its own gauges too.
    pub(super) async fn forecast_seen(
        &self,
        days: u32,
        seen: &BTreeMap<(String, String), crate::ledger::CheckState>,
    ) -> Result<Forecast, crate::ledger::LedgerError> {
        use crate::config::WhenLapsed;
        use crate::ledger::{OrderState, decision_key};
        let rt = self.runtime();
        let now = self.clock.unix();
        let tz = rt.config.daemon.timezone;
        let (day, month) = period::periods(now, tz);
        let mut pairs = Vec::new();
        let mut caps = BTreeMap::new();
        for rule in &rt.config.rules {
            let product = &*rule.product;
            let closed = match rt.seller_of(product).gate.peek(now) {
                super::decide::Admission::Closed { why } => Some(why),
                _ => None,
            };
            for account in rt.config.accounts_of(rule) {
                let Some(seen) = seen
                    .get(&(rule.name.to_string(), account.name.clone()))
                    .filter(|s| s.checked_at.is_some())
                else {
                    continue;
                };
                let key = decision_key(
                    &rule.name,
                    &account.name,
                    rule.membership,
                    seen.observed_end,
                );
                let ordered = self
                    .store
                    .get(&key)
                    .await?
                    .is_some_and(|o| o.state != OrderState::Failed);
                pairs.push(Pair {
                    rule: rule.name.to_string(),
                    account: account.name.clone(),
                    membership: rule.membership,
                    product: product.name.clone(),
                    end: seen.observed_end,
                    ordered,
                    renew_before: rule.renew_before.as_secs() as i64,
                    adds: product.adds.as_secs() as i64,
                    price: product.max_price,
                    renews_lapsed: rule.when_lapsed == WhenLapsed::Renew,
                    provider_closed: closed.clone(),
                });
            }
            let b = &rule.budget;
            caps.insert(
                rule.name.to_string(),
                Caps {
                    per_day: b.per_day,
                    per_month: b.per_month,
                    approve_above: b.approve_above,
                    used_day: self.store.spend(&rule.name, &day).await?.used(),
                    used_month: self.store.spend(&rule.name, &month).await?.used(),
                },
            );
        }
        Ok(forecast(&pairs, &caps, now, days, tz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z, a Friday
    const DAY: i64 = 86_400;

    fn pair(account: &str, end: Option<i64>) -> Pair {
        Pair {
            rule: "keep".into(),
            account: account.into(),
            membership: Membership::QqVip,
            product: "month".into(),
            end,
            ordered: false,
            renew_before: 3 * DAY,
            adds: 30 * DAY,
            price: Fen(2000),
            renews_lapsed: true,
            provider_closed: None,
        }
    }

    fn caps(per_day: Option<Fen>, per_month: Option<Fen>) -> BTreeMap<String, Caps> {
        BTreeMap::from([(
            "keep".to_owned(),
            Caps {
                per_day,
                per_month,
                ..Caps::default()
            },
        )])
    }

    #[test]
    fn each_period_is_renewed_in_its_window_and_every_period_after() {
        let pairs = [
            pair("alice", Some(NOW + 2 * DAY)),
            pair("bob", Some(NOW + 40 * DAY)),
        ];
        let f = forecast(&pairs, &caps(None, None), NOW, 90, chrono_tz::UTC);
        let at: Vec<(&str, i64)> = f
            .renewals
            .iter()
            .map(|r| (r.account.as_str(), (r.at - NOW) / DAY))
            .collect();
        // alice: due now (2 days left), then at 29, 59 and 89 days; bob
        // at 37 and 67 days.
        assert_eq!(
            at,
            [
                ("alice", 0),
                ("alice", 29),
                ("bob", 37),
                ("alice", 59),
                ("bob", 67),
                ("alice", 89)
            ]
        );
        assert_eq!((f.total_renewals, f.total_spend), (6, Fen(12_000)));
        assert_eq!(f.by_day.len(), 6);
        assert_eq!(f.by_week[0].from, "2027-01-11", "weeks start on Monday");
    }

    #[test]
    fn an_ordered_period_is_paid_already_and_a_skipped_lapse_is_never_renewed() {
        let mut ordered = pair("alice", Some(NOW + 2 * DAY));
        ordered.ordered = true;
        let mut left = pair("carol", Some(NOW - DAY));
        left.renews_lapsed = false;
        let f = forecast(&[ordered, left], &caps(None, None), NOW, 40, chrono_tz::UTC);
        let at: Vec<i64> = f.renewals.iter().map(|r| (r.at - NOW) / DAY).collect();
        assert_eq!(at, [29], "only alice's next period");
    }

    #[test]
    fn a_cap_blocks_what_would_pass_it_and_says_when() {
        let pairs = [
            pair("a", Some(NOW + DAY)),
            pair("b", Some(NOW + DAY)),
            pair("c", Some(NOW + DAY)),
        ];
        let mut c = caps(Some(Fen(5000)), None);
        c.get_mut("keep").unwrap().used_day = Fen(1500);
        let f = forecast(&pairs, &c, NOW, 10, chrono_tz::UTC);
        let b = &f.budgets[0];
        assert_eq!((b.renewals, b.blocked), (1, 2), "{f:#?}");
        let (when, why) = b.first_blocked.clone().unwrap();
        assert_eq!(when, NOW);
        assert!(
            why.contains("the day's cap of 50.00 (2027-01-15: 35.00 used)"),
            "{why}"
        );
        assert_eq!(b.demand_day, Fen(1500 + 6000), "what today would need");
    }

    #[test]
    fn a_paused_provider_blocks_and_approvals_are_marked() {
        let mut p = pair("a", Some(NOW + DAY));
        p.provider_closed = Some("balance exhausted".into());
        let mut c = caps(None, None);
        c.get_mut("keep").unwrap().approve_above = Some(Fen(1000));
        let f = forecast(&[p], &c, NOW, 5, chrono_tz::UTC);
        assert_eq!(
            f.renewals[0].blocked.as_deref(),
            Some("provider paused: balance exhausted")
        );
        assert!(f.renewals[0].needs_approval);
        assert_eq!(f.total_renewals, 0);
    }
}
