//! What the ledger derives from its orders instead of storing beside them:
//! orders by state (and how many paid ones never showed), each account's
//! orders, vendor order ids, and each rule's spend per budget period.
//!
//! The order record is the only thing a transition writes. Everything here
//! is computed from every order when the store opens, then kept as each
//! order is written (under the write lock): the order's old share is taken
//! out and its new share put in. So a transition is one insert and can
//! never be half written, and sled never needs a batch on the renewal path
//! (it writes its log buffer out before and after every batch, a write and
//! a `sync_file_range` each; see `transitions.rs`).
//!
//! Stores written before this kept the indexes and spends as rows (`a/`,
//! `x/`, `b/`). They are read once at open and never written again: a
//! vendor id the orders do not name is still found, and a spend row above
//! what the orders add up to stays a floor, so budgets never loosen.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{Order, OrderState, Spend, Verification};
use crate::units::Fen;

/// name → value, for the maps below (rule → period, provider → id).
type By<T> = HashMap<Box<str>, T>;

/// The tallies, behind one lock (held for microseconds: no I/O under it).
#[derive(Debug, Default)]
pub(crate) struct Derived(Mutex<Tallies>);

#[derive(Debug, Default)]
struct Tallies {
    /// Orders by state, indexed as [`OrderState::ALL`].
    states: [usize; OrderState::ALL.len()],
    /// Paid orders whose renewal never showed.
    unverified: usize,
    /// account → its order keys, sorted (most accounts have one or two).
    accounts: By<Vec<Box<str>>>,
    /// provider → vendor order id → (order key, attempt; `None` for orders
    /// written before attempts were recorded: their current attempt).
    vendor: By<By<(Box<str>, Option<u32>)>>,
    /// rule → period → spend.
    spend: By<By<Spend>>,
    /// rule → period → what an older store's spend row said (a floor).
    floor: By<By<Fen>>,
}

/// What one order adds to the tallies.
#[derive(Debug)]
pub(crate) struct Share {
    state: OrderState,
    unverified: bool,
    rule: String,
    provider: String,
    /// (period, reserved, settled).
    spend: Vec<(String, Fen, Fen)>,
    /// (vendor order id, attempt).
    vendor: Vec<(String, Option<u32>)>,
}

impl Share {
    pub(crate) fn of(o: &Order) -> Share {
        let mut spend: Vec<(String, Fen, Fen)> = Vec::new();
        let mut add = |period: &str, reserved: Fen, settled: Fen| {
            if period.is_empty() || (reserved == Fen::ZERO && settled == Fen::ZERO) {
                return;
            }
            match spend.iter_mut().find(|(p, ..)| p == period) {
                Some((_, r, s)) => {
                    r.0 += reserved.0;
                    s.0 += settled.0;
                }
                None => spend.push((period.to_owned(), reserved, settled)),
            }
        };
        if let Some(h) = &o.hold {
            add(&h.day, h.amount, Fen::ZERO);
            add(&h.month, h.amount, Fen::ZERO);
        }
        // An order written before attempts were recorded: its attempts as
        // every transition makes them up (see `Order::attempt_mut`).
        let filled;
        let attempts = if o.attempts > 0 && o.attempt_log.len() < o.attempts as usize {
            filled = {
                let mut o = o.clone();
                o.attempt_mut(o.attempts);
                o.attempt_log
            };
            &filled
        } else {
            &o.attempt_log
        };
        for a in attempts {
            add(&a.periods.day, Fen::ZERO, a.spent);
            add(&a.periods.month, Fen::ZERO, a.spent);
        }
        let mut vendor: Vec<(String, Option<u32>)> = o
            .attempt_log
            .iter()
            .filter_map(|a| Some((a.vendor_orderid.clone()?, Some(a.n))))
            .collect();
        if o.attempt_log.is_empty() {
            vendor.extend(o.vendor_orderid.clone().map(|id| (id, None)));
        }
        vendor.retain(|(id, _)| !id.is_empty());
        Share {
            state: o.state,
            unverified: o.state == OrderState::Succeeded
                && matches!(o.verification, Verification::Unverified { .. }),
            rule: o.rule.clone(),
            provider: o.provider.clone(),
            spend,
            vendor,
        }
    }
}

impl Share {
    /// How writing an order changes its rule's spend: (period, reserved,
    /// settled) differences from its share `was` (none when new) to
    /// `now`, zeros left out. What a database store adds to its spend rows
    /// in the order's transaction.
    pub(crate) fn spend_changes(was: Option<&Share>, now: &Share) -> Vec<(String, Fen, Fen)> {
        let mut out: Vec<(String, Fen, Fen)> = now.spend.clone();
        for (period, reserved, settled) in was.map_or(&[][..], |w| &w.spend[..]) {
            match out.iter_mut().find(|(p, ..)| p == period) {
                Some((_, r, s)) => {
                    r.0 -= reserved.0;
                    s.0 -= settled.0;
                }
                None => out.push((period.clone(), Fen(-reserved.0), Fen(-settled.0))),
            }
        }
        out.retain(|(_, r, s)| *r != Fen::ZERO || *s != Fen::ZERO);
        out
    }

    /// The vendor order ids it names that `was` did not (a database store
    /// inserts these; a later order naming an id takes it over).
    pub(crate) fn new_vendor_ids<'a>(
        was: Option<&Share>,
        now: &'a Share,
    ) -> impl Iterator<Item = &'a (String, Option<u32>)> {
        let before: Vec<String> = was
            .map(|w| w.vendor.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        now.vendor
            .iter()
            .filter(move |(id, _)| !before.contains(id))
    }
}

fn slot(s: OrderState) -> usize {
    OrderState::ALL
        .iter()
        .position(|x| *x == s)
        .expect("every state is in ALL")
}

impl Tallies {
    fn take(&mut self, share: &Share) {
        let n = &mut self.states[slot(share.state)];
        *n = n.saturating_sub(1);
        if share.unverified {
            self.unverified = self.unverified.saturating_sub(1);
        }
    }

    /// The order's spend changes (the same differences a database store
    /// adds to its rows).
    fn spend(&mut self, was: Option<&Share>, now: &Share) {
        let changes = Share::spend_changes(was, now);
        if changes.is_empty() {
            return;
        }
        let periods = self.spend.entry(now.rule.as_str().into()).or_default();
        for (period, reserved, settled) in changes {
            let s = periods.entry(period.into()).or_default();
            s.reserved.0 = (s.reserved.0 + reserved.0).max(0);
            s.settled.0 = (s.settled.0 + settled.0).max(0);
        }
    }

    /// A vendor id the order newly names is its own (a later order naming
    /// an id takes it over); one it still names stays with whoever has it;
    /// one it no longer names is let go if it is still its own.
    fn vendor(&mut self, key: &str, was: Option<&Share>, now: &Share) {
        let named =
            |s: Option<&Share>, id: &str| s.is_some_and(|s| s.vendor.iter().any(|(i, _)| i == id));
        if let Some(was) = was {
            if let Some(ids) = self.vendor.get_mut(was.provider.as_str()) {
                for (id, _) in &was.vendor {
                    let mine = ids.get(id.as_str()).is_some_and(|(k, _)| &**k == key);
                    if mine && !named(Some(now), id) {
                        ids.remove(id.as_str());
                    }
                }
            }
        }
        if now.vendor.is_empty() {
            return;
        }
        let ids = self.vendor.entry(now.provider.as_str().into()).or_default();
        for (id, n) in &now.vendor {
            if !named(was, id) || !ids.contains_key(id.as_str()) {
                if let Some((other, _)) = ids.get(id.as_str()).filter(|(k, _)| &**k != key) {
                    tracing::warn!(provider = %now.provider, vendor_order = %id, "two orders name this vendor order id: {other} and {key}; a callback naming it settles {key}");
                }
                ids.insert(id.as_str().into(), (key.into(), *n));
            } else if let Some(entry) = ids.get_mut(id.as_str()).filter(|(k, _)| &**k == key) {
                entry.1 = *n;
            }
        }
    }

    fn put(&mut self, key: &str, account: &str, share: &Share) {
        self.states[slot(share.state)] += 1;
        self.unverified += usize::from(share.unverified);
        match self.accounts.get_mut(account) {
            Some(keys) => {
                if let Err(at) = keys.binary_search_by(|k| (**k).cmp(key)) {
                    keys.insert(at, key.into());
                }
            }
            None => {
                self.accounts.insert(account.into(), vec![key.into()]);
            }
        }
    }
}

impl Derived {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tallies> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An order written: `was` is its share before (none when new).
    pub(crate) fn written(&self, was: Option<&Share>, now: &Order) {
        let share = Share::of(now);
        let mut t = self.lock();
        if let Some(was) = was {
            t.take(was);
        }
        t.put(&now.key, &now.account, &share);
        t.spend(was, &share);
        t.vendor(&now.key, was, &share);
    }

    /// One order read at open.
    pub(crate) fn opened(&self, o: &Order) {
        self.written(None, o);
    }

    /// An older store's index row: vendor id → `key` or `key#attempt`.
    /// Used only when no order names that id.
    pub(crate) fn legacy_vendor(&self, provider: &str, id: &str, value: &str) {
        let (key, n) = match value
            .rsplit_once('#')
            .and_then(|(k, n)| Some((k, n.parse().ok()?)))
        {
            Some((k, n)) => (k, Some(n)),
            None => (value, None),
        };
        let mut t = self.lock();
        let ids = t.vendor.entry(provider.into()).or_default();
        if !ids.contains_key(id) {
            ids.insert(id.into(), (key.into(), n));
        }
    }

    /// An older store's spend row: what it counted stays a floor.
    pub(crate) fn legacy_spend(&self, rule: &str, period: &str, spend: Spend) {
        let mut t = self.lock();
        let floor = t
            .floor
            .entry(rule.into())
            .or_default()
            .entry(period.into())
            .or_default();
        *floor = (*floor).max(spend.used());
    }

    pub(crate) fn unverified(&self) -> usize {
        self.lock().unverified
    }

    pub(crate) fn states(&self) -> BTreeMap<OrderState, usize> {
        let t = self.lock();
        OrderState::ALL.iter().copied().zip(t.states).collect()
    }

    /// The keys of an account's orders, in key order.
    pub(crate) fn keys_of(&self, account: &str) -> Vec<String> {
        let t = self.lock();
        t.accounts
            .get(account)
            .map(|keys| keys.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn vendor_order(&self, provider: &str, id: &str) -> Option<super::VendorOrder> {
        let t = self.lock();
        t.vendor
            .get(provider)?
            .get(id)
            .map(|(k, n)| super::VendorOrder {
                key: k.to_string(),
                attempt: *n,
            })
    }

    /// What `rule` has held and spent in `period`. Where an older store's
    /// row counted more than the orders add up to, the difference counts
    /// as spent.
    pub(crate) fn spend(&self, rule: &str, period: &str) -> Spend {
        let t = self.lock();
        let mut s = t
            .spend
            .get(rule)
            .and_then(|p| p.get(period))
            .copied()
            .unwrap_or_default();
        if let Some(floor) = t.floor.get(rule).and_then(|p| p.get(period)) {
            let more = floor.0 - s.used().0;
            if more > 0 {
                s.settled.0 += more;
            }
        }
        s
    }

    /// Every rule's spend in every period, as [`Derived::spend`] counts it.
    pub(crate) fn all_spend(&self) -> Vec<(String, String, Spend)> {
        let periods: Vec<(String, String)> = {
            let t = self.lock();
            let mut all: std::collections::BTreeSet<(String, String)> = Default::default();
            for (r, p) in &t.spend {
                all.extend(p.keys().map(|p| (r.to_string(), p.to_string())));
            }
            for (r, p) in &t.floor {
                all.extend(p.keys().map(|p| (r.to_string(), p.to_string())));
            }
            all.into_iter().collect()
        };
        periods
            .into_iter()
            .map(|(r, p)| {
                let s = self.spend(&r, &p);
                (r, p, s)
            })
            .collect()
    }

    /// Every vendor order id: (provider, id, order key, attempt).
    pub(crate) fn all_vendor(&self) -> Vec<(String, String, String, Option<u32>)> {
        let t = self.lock();
        let mut out = Vec::new();
        for (provider, ids) in &t.vendor {
            for (id, (key, n)) in ids {
                out.push((provider.to_string(), id.to_string(), key.to_string(), *n));
            }
        }
        out.sort();
        out
    }
}
