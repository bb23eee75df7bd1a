//! Expectations checked against a world: the ledger's orders and events,
//! and the vendor's side (what it billed, the memberships' ends). Beside
//! what a test asks, every check holds vipd to its first promises:
//! nothing paid twice, and no covered membership lapsed without an alert.

use std::collections::BTreeMap;

use super::file::{
    EventsExpect, Expect, HttpExpect, KvExpect, MembershipExpect, OrdersExpect, SpendExpect,
};
use super::world::World;
use crate::config::Config;
use crate::ledger::{EventRecord, Order, OrderState};
use crate::model::Membership;
use crate::units::{Fen, HumanDuration};

/// How many events a check reads (every one a test makes, in practice).
const EVENTS_READ: usize = 1_000_000;

/// How long after a covered membership's end its `membership_lapsed`
/// alert may take.
pub(crate) const LAPSE_GRACE: i64 = 3_600;

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What was expected, in words.
    pub expected: String,
    /// What was found.
    pub actual: String,
    /// The account concerned: its latest orders' traces are shown.
    pub account: Option<String>,
}

/// What a check reads of the world, once.
pub struct Seen {
    pub orders: Vec<Order>,
    pub events: Vec<EventRecord>,
    /// Requests the vendor billed and did not refund, per account.
    pub billed: BTreeMap<String, usize>,
    pub start: i64,
    pub now: i64,
    /// The plugins' kv values `e` names, by plugin and key.
    pub kv: BTreeMap<(String, String), serde_json::Value>,
    /// The plugins' `vipd.http` requests, in order.
    pub http: Vec<String>,
}

impl Seen {
    /// Reads the world for `e`, once the plugins have handled every event
    /// fired so far.
    pub async fn read(world: &World, e: &Expect) -> anyhow::Result<Seen> {
        world.plugins_settled().await;
        let mut kv = BTreeMap::new();
        for k in &e.kv {
            let value = world.store.kv_get(&k.plugin, &k.key, world.now()).await?;
            kv.insert(
                (k.plugin.clone(), k.key.clone()),
                value.unwrap_or(serde_json::Value::Null),
            );
        }
        let mut billed = BTreeMap::new();
        for o in world.sandbox.orders() {
            if o.billed {
                *billed
                    .entry(o.account.clone().unwrap_or_else(|| "?".into()))
                    .or_default() += 1;
            }
        }
        Ok(Seen {
            orders: world.store.orders(None).await?,
            events: world.store.events(EVENTS_READ).await?,
            billed,
            start: world.start,
            now: world.now(),
            kv,
            http: world.host.unsent(),
        })
    }
}

/// Every failure of `e` (and of the promises) in `seen`.
pub fn check(e: &Expect, seen: &Seen, world: &World, config: &Config) -> Vec<Failure> {
    let mut out = Vec::new();
    for o in &e.orders {
        out.extend(orders(o, seen));
    }
    for (account, want) in &e.billed {
        let got = seen.billed.get(account).copied().unwrap_or(0);
        if got != *want {
            out.push(Failure {
                expected: format!("the vendor billed {account} {want} time(s)"),
                actual: format!("{got}"),
                account: Some(account.clone()),
            });
        }
    }
    for ev in &e.events {
        out.extend(events(ev, seen));
    }
    for s in &e.spend {
        out.extend(spend(s, seen));
    }
    for m in &e.memberships {
        out.extend(membership(m, seen, world));
    }
    for k in &e.kv {
        out.extend(kv(k, seen));
    }
    for h in &e.http {
        out.extend(http(h, seen));
    }
    out.extend(paid_twice(seen));
    out.extend(silent_lapses(
        seen,
        &|a, m| world.sandbox.end_of(a, m),
        config,
    ));
    out
}

fn orders(o: &OrdersExpect, seen: &Seen) -> Vec<Failure> {
    let picked: Vec<&Order> = seen
        .orders
        .iter()
        .filter(|x| x.account == o.account)
        .filter(|x| o.rule.as_ref().is_none_or(|r| &x.rule == r))
        .filter(|x| o.state.is_none_or(|s| x.state == s))
        .collect();
    let what = format!(
        "orders of {}{}{}",
        o.account,
        o.rule
            .as_ref()
            .map(|r| format!(" under {r}"))
            .unwrap_or_default(),
        o.state
            .map(|s| format!(" in state {s}"))
            .unwrap_or_default()
    );
    let mut out = Vec::new();
    let fail = |expected: String, actual: String| Failure {
        expected,
        actual,
        account: Some(o.account.clone()),
    };
    match o.count {
        Some(n) if picked.len() != n => out.push(fail(
            format!("{n} {what}"),
            format!("{} ({})", picked.len(), states(&seen.orders, &o.account)),
        )),
        None if picked.is_empty() => out.push(fail(
            format!("at least one of the {what}"),
            format!("none ({})", states(&seen.orders, &o.account)),
        )),
        _ => {}
    }
    if let Some(price) = o.price {
        for x in picked.iter().filter(|x| x.price != Some(price)) {
            out.push(fail(
                format!("{what} at price {price}"),
                format!(
                    "order {} at {}",
                    x.key,
                    x.price.map_or("no price".into(), |p| p.to_string())
                ),
            ));
        }
    }
    out
}

/// An account's orders' states, for a failure's "actual".
fn states(orders: &[Order], account: &str) -> String {
    let list: Vec<String> = orders
        .iter()
        .filter(|o| o.account == account)
        .map(|o| format!("{}: {}", o.rule, o.state))
        .collect();
    if list.is_empty() {
        format!("{account} has no orders")
    } else {
        format!("{account} has {}", list.join(", "))
    }
}

fn events(e: &EventsExpect, seen: &Seen) -> Vec<Failure> {
    let picked: Vec<&EventRecord> = seen
        .events
        .iter()
        .filter(|x| x.kind == e.kind)
        .filter(|x| e.account.is_none() || x.account == e.account)
        .collect();
    let what = format!(
        "{} event(s){}",
        e.kind,
        e.account
            .as_ref()
            .map(|a| format!(" for {a}"))
            .unwrap_or_default()
    );
    let fail = |expected: String, actual: String| Failure {
        expected,
        actual,
        account: e.account.clone(),
    };
    let mut out = Vec::new();
    match e.count {
        Some(n) if picked.len() != n => {
            out.push(fail(format!("{n} {what}"), picked.len().to_string()));
        }
        None if picked.is_empty() => {
            out.push(fail(format!("at least one {what}"), "none".into()));
        }
        _ => {}
    }
    if let (Some(within), Some(first)) = (e.within, picked.first()) {
        let after = first.at - seen.start;
        if after > within.get().as_secs() as i64 {
            out.push(fail(
                format!("the first {what} within {within} of the start"),
                format!(
                    "after {}",
                    HumanDuration(std::time::Duration::from_secs(after.max(0) as u64))
                ),
            ));
        }
    }
    out
}

fn spend(s: &SpendExpect, seen: &Seen) -> Vec<Failure> {
    let total = Fen(seen
        .orders
        .iter()
        .filter(|o| o.rule == s.rule)
        .map(|o| o.spent.0)
        .sum());
    if total == s.total {
        return Vec::new();
    }
    vec![Failure {
        expected: format!("{} spent under {}", s.total, s.rule),
        actual: total.to_string(),
        account: None,
    }]
}

fn membership(m: &MembershipExpect, seen: &Seen, world: &World) -> Vec<Failure> {
    let Ok(offset) = HumanDuration::parse_signed_secs(&m.ends) else {
        return vec![Failure {
            expected: format!("ends: {:?} to be a duration such as 32d or -1h", m.ends),
            actual: "not a duration".into(),
            account: Some(m.account.clone()),
        }];
    };
    let tolerance = m.tolerance.map_or(3_600, |t| t.get().as_secs() as i64);
    let want = seen.start + offset;
    let got = world.sandbox.end_of(&m.account, m.membership);
    if got.is_some_and(|end| (end - want).abs() <= tolerance) {
        return Vec::new();
    }
    vec![Failure {
        expected: format!(
            "{}'s {} to end {} after the start ({}, within {})",
            m.account,
            m.membership,
            m.ends,
            crate::timefmt::utc(want),
            HumanDuration(std::time::Duration::from_secs(tolerance as u64))
        ),
        actual: got.map_or("no such membership".into(), |end| {
            format!(
                "{} ({} after the start)",
                crate::timefmt::utc(end),
                signed(end - seen.start)
            )
        }),
        account: Some(m.account.clone()),
    }]
}

fn kv(k: &KvExpect, seen: &Seen) -> Vec<Failure> {
    let got = seen
        .kv
        .get(&(k.plugin.clone(), k.key.clone()))
        .unwrap_or(&serde_json::Value::Null);
    if numbers_equal(got, &k.value) || got == &k.value {
        return Vec::new();
    }
    let show = |v: &serde_json::Value| {
        if v.is_null() {
            "not set".to_owned()
        } else {
            v.to_string()
        }
    };
    vec![Failure {
        expected: format!("{}'s kv {:?} = {}", k.plugin, k.key, show(&k.value)),
        actual: show(got),
        account: None,
    }]
}

/// `3` and `3.0` are one number (Lua keeps integers and floats apart;
/// YAML writers rarely mean to).
fn numbers_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn http(h: &HttpExpect, seen: &Seen) -> Vec<Failure> {
    let n = seen.http.iter().filter(|r| r.starts_with(&h.url)).count();
    let listed = || {
        if seen.http.is_empty() {
            "none sent".to_owned()
        } else {
            seen.http.join(", ")
        }
    };
    let expected = match h.count {
        Some(want) if want != n => format!("{want} plugin request(s) to {}", h.url),
        None if n == 0 => format!("at least one plugin request to {}", h.url),
        _ => return Vec::new(),
    };
    vec![Failure {
        expected,
        actual: format!("{n} ({})", listed()),
        account: None,
    }]
}

fn signed(secs: i64) -> String {
    let d = HumanDuration(std::time::Duration::from_secs(secs.unsigned_abs()));
    if secs < 0 {
        format!("-{d}")
    } else {
        d.to_string()
    }
}

/// Never pay twice for one period: the vendor billed an account no more
/// often than vipd holds orders for it that may have been paid (one key
/// a period; a failed order was not paid).
fn paid_twice(seen: &Seen) -> Vec<Failure> {
    let mut out = Vec::new();
    for (account, billed) in &seen.billed {
        let may_be_paid = seen
            .orders
            .iter()
            .filter(|o| &o.account == account && o.state != OrderState::Failed)
            .count();
        if *billed > may_be_paid {
            out.push(Failure {
                expected: format!(
                    "nothing paid twice: the vendor billed {account} at most once an order vipd holds as paid or possibly paid ({may_be_paid})"
                ),
                actual: format!("billed {billed} times"),
                account: Some(account.clone()),
            });
        }
    }
    out
}

/// Never let a covered membership lapse silently: a membership a rule
/// covers that ended during the run (and is still ended, at least
/// [`LAPSE_GRACE`] ago) was announced by `membership_lapsed`, or its
/// account by `account_auth_failed` (its end could not be read).
fn silent_lapses(
    seen: &Seen,
    end_of: &dyn Fn(&str, Membership) -> Option<i64>,
    config: &Config,
) -> Vec<Failure> {
    let mut out = Vec::new();
    for rule in &config.rules {
        for account in config.accounts_of(rule) {
            let Some(end) = end_of(&account.name, rule.membership) else {
                continue;
            };
            let lapsed_in_run = end > seen.start && end + LAPSE_GRACE <= seen.now;
            // The lapse itself, or that the account cannot be read (then
            // vipd never saw the end it could announce).
            let alerted = seen.events.iter().any(|e| {
                matches!(e.kind.as_str(), "membership_lapsed" | "account_auth_failed")
                    && e.account.as_deref() == Some(&*account.name)
            });
            if lapsed_in_run && !alerted {
                out.push(Failure {
                    expected: format!(
                        "no lapse without an alert: {}'s {} ended {} (rule {}); a membership_lapsed event",
                        account.name,
                        rule.membership,
                        crate::timefmt::utc(end),
                        rule.name
                    ),
                    actual: "no membership_lapsed event".into(),
                    account: Some(account.name.to_string()),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn config() -> Config {
        Config::parse(
            super::super::tests::RULES,
            std::path::Path::new("rules.yaml"),
        )
        .unwrap()
    }

    fn order(account: &str, state: OrderState) -> Order {
        serde_json::from_value(serde_json::json!({
            "key": format!("{account}-{state}"), "rule": "keep", "account": account,
            "membership": "qq_vip", "observed_end": START, "product": "month",
            "provider": "wapi", "state": state, "attempts": 1, "max_price": "20.00",
            "price": null, "vendor_orderid": null, "hold": null, "spent": "0.00",
            "charged_to": null, "retry_at": null, "last_outcome": null,
            "verification": {"status": "none"}, "created_at": START,
            "updated_at": START, "history": [],
        }))
        .unwrap()
    }

    fn seen(orders: Vec<Order>, billed: &[(&str, usize)], events: &[(&str, &str)]) -> Seen {
        Seen {
            orders,
            events: events
                .iter()
                .map(|(kind, account)| EventRecord {
                    at: START,
                    kind: (*kind).into(),
                    account: Some((*account).into()),
                    rule: None,
                    key: None,
                    detail: String::new(),
                })
                .collect(),
            billed: billed.iter().map(|(a, n)| ((*a).into(), *n)).collect(),
            kv: BTreeMap::new(),
            http: Vec::new(),
            start: START,
            now: START + 10 * DAY,
        }
    }

    /// The vendor billing an account more often than vipd holds orders
    /// that may be paid is a payment made twice; a failed order counts as
    /// not paid.
    #[test]
    fn more_bills_than_orders_that_may_be_paid_is_paying_twice() {
        let two = vec![
            order("alice", OrderState::Succeeded),
            order("alice", OrderState::Unknown),
        ];
        assert!(paid_twice(&seen(two.clone(), &[("alice", 2)], &[])).is_empty());
        let f = paid_twice(&seen(two, &[("alice", 3)], &[]));
        assert_eq!(f.len(), 1);
        assert!(f[0].expected.starts_with("nothing paid twice"), "{f:?}");
        let failed = vec![
            order("alice", OrderState::Succeeded),
            order("alice", OrderState::Failed),
        ];
        assert_eq!(paid_twice(&seen(failed, &[("alice", 2)], &[])).len(), 1);
    }

    /// A covered membership that ended during the run, long enough ago,
    /// needs its `membership_lapsed`; one that ended before the start, or
    /// within the grace, or an account no rule covers, does not.
    #[test]
    fn a_covered_membership_that_ended_in_the_run_needs_its_alert() {
        let cfg = config();
        let ended = |at: i64| move |a: &str, _: Membership| (a == "alice").then_some(at);
        let quiet = seen(vec![], &[], &[]);
        let f = silent_lapses(&quiet, &ended(START + DAY), &cfg);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].expected
                .starts_with("no lapse without an alert: alice's qq_vip"),
            "{f:?}"
        );
        let told = seen(vec![], &[], &[("membership_lapsed", "alice")]);
        assert!(silent_lapses(&told, &ended(START + DAY), &cfg).is_empty());
        let other = seen(vec![], &[], &[("membership_lapsed", "bob")]);
        assert_eq!(silent_lapses(&other, &ended(START + DAY), &cfg).len(), 1);
        assert!(silent_lapses(&quiet, &ended(START - DAY), &cfg).is_empty());
        let now = quiet.now;
        assert!(silent_lapses(&quiet, &ended(now - LAPSE_GRACE + 1), &cfg).is_empty());
        assert!(silent_lapses(&quiet, &ended(now + DAY), &cfg).is_empty());
    }
}
