//! What a node keeps of the shared ledger so as not to ask the database
//! again at every check:
//!
//! - **Its claims.** A claim stays the node's while its lease holds (a
//!   claim moves only when its holder's lease has run out), so a pair it
//!   holds is not asked for again.
//! - **Its pairs' check states.** Only a pair's claim holder checks it and
//!   writes its check state, so while the node holds the claim, the state
//!   it last wrote or read is the stored one. A pair claimed anew (it may
//!   have been another node's meanwhile) starts from the state the claim
//!   read in its own statement.
//! - **The unsettled orders it wrote** ([`Kept`]), with their versions: a
//!   transition starts from there instead of reading the order; and a
//!   pair whose payment by this node is not settled stays this node's.
//! - **An account's state, read with its token, for a second.** A check
//!   reads the account's token before it asks the vendor and its state
//!   after; both are one row, read once. The state moves no money (it
//!   says whether the account's reads fail).
//! - **An account's orders, read with its token, for a second** ([`Read`]):
//!   the evidence step after the vendor's answer starts from them, unless
//!   this node wrote one of them since.
//! - **The hold, for a second.** A check asks whether its account is held
//!   only to say so; the plan that would pay reads the hold in its own
//!   statement, so a hold set on another node stops this node's payments
//!   at once and shows in its checks within [`HOLD_FRESH`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ledger::{AccountState, CheckState, Hold, Order, change};

/// How long a node answers a check's "is it held?" from the hold it last
/// read.
pub(super) const HOLD_FRESH: Duration = Duration::from_secs(1);

type Pair = (String, String);

/// A node's memory of the shared ledger.
#[derive(Debug, Default)]
pub(super) struct Seen {
    claimed: Mutex<HashSet<Pair>>,
    checks: Mutex<HashMap<Pair, CheckState>>,
    hold: Mutex<Option<(Instant, Option<Hold>)>>,
    accounts: Mutex<HashMap<String, (Instant, AccountState)>>,
}

/// The most account states kept at once (each is taken by the check that
/// read it); past it, they are read again.
const ACCOUNTS_MAX: usize = 10_000;

/// The mutex's guard; a panic elsewhere while it was held leaves nothing
/// half-written here, so a poisoned lock is used as it is.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pair(rule: &str, account: &str) -> Pair {
    (rule.to_owned(), account.to_owned())
}

impl Seen {
    /// Whether the node holds the pair's claim, as it last learned.
    pub(super) fn holds(&self, rule: &str, account: &str) -> bool {
        lock(&self.claimed).contains(&pair(rule, account))
    }

    /// What the database answered for the pair's claim: `None` when it is
    /// not this node's, else with the check state it read (`None` when
    /// that did not decode: the check's own read will say why). A pair
    /// taken anew starts from that state; one not held forgets it.
    pub(super) fn claimed(&self, rule: &str, account: &str, got: Option<Option<CheckState>>) {
        let p = pair(rule, account);
        let mut claimed = lock(&self.claimed);
        let mut checks = lock(&self.checks);
        match got {
            Some(state) => {
                if claimed.insert(p.clone()) {
                    match state {
                        Some(state) => checks.insert(p, state),
                        None => checks.remove(&p),
                    };
                }
            }
            None => {
                claimed.remove(&p);
                checks.remove(&p);
            }
        }
    }

    /// The pair's check state, when the node holds its claim and knows it.
    pub(super) fn check(&self, rule: &str, account: &str) -> Option<CheckState> {
        if !self.holds(rule, account) {
            return None;
        }
        lock(&self.checks).get(&pair(rule, account)).cloned()
    }

    /// Keeps the pair's check state as stored, when the node holds its
    /// claim.
    pub(super) fn keep_check(&self, rule: &str, account: &str, state: &CheckState) {
        if self.holds(rule, account) {
            lock(&self.checks).insert(pair(rule, account), state.clone());
        }
    }

    /// The hold as read less than [`HOLD_FRESH`] ago.
    pub(super) fn hold(&self) -> Option<Option<Hold>> {
        match &*lock(&self.hold) {
            Some((at, hold)) if at.elapsed() < HOLD_FRESH => Some(hold.clone()),
            _ => None,
        }
    }

    /// The hold as just read.
    pub(super) fn keep_hold(&self, hold: Option<Hold>) {
        *lock(&self.hold) = Some((Instant::now(), hold));
    }

    /// An account's state as read with its token.
    pub(super) fn keep_account(&self, account: &str, state: AccountState) {
        let mut accounts = lock(&self.accounts);
        if accounts.len() >= ACCOUNTS_MAX {
            accounts.clear();
        }
        accounts.insert(account.to_owned(), (Instant::now(), state));
    }

    /// The account's state read with its token less than [`HOLD_FRESH`]
    /// ago, taken: the next ask reads it again.
    pub(super) fn take_account(&self, account: &str) -> Option<AccountState> {
        match lock(&self.accounts).remove(account) {
            Some((at, state)) if at.elapsed() < HOLD_FRESH => Some(state),
            _ => None,
        }
    }

    /// The hold changed on this node: read it again.
    pub(super) fn forget_hold(&self) {
        *lock(&self.hold) = None;
    }
}

/// The most orders [`Kept`] keeps; past it, it starts again.
const KEPT_MAX: usize = 100_000;

/// The unsettled orders a node wrote last, with their versions, and how
/// many of them each (rule, account) pair has.
#[derive(Debug, Default)]
pub(super) struct Kept(Mutex<KeptOrders>);

#[derive(Debug, Default)]
struct KeptOrders {
    orders: HashMap<String, (Order, i64)>,
    pairs: HashMap<Pair, usize>,
}

impl KeptOrders {
    fn remove(&mut self, key: &str) -> Option<(Order, i64)> {
        let (order, version) = self.orders.remove(key)?;
        let p = pair(&order.rule, &order.account);
        if let Some(n) = self.pairs.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.pairs.remove(&p);
            }
        }
        Some((order, version))
    }
}

impl Kept {
    /// Keeps `order` at `version` as written, while unsettled.
    pub(super) fn remember(&self, order: &Order, version: i64) {
        let mut kept = lock(&self.0);
        kept.remove(&order.key);
        if change::unsettled(order) {
            if kept.orders.len() >= KEPT_MAX {
                *kept = KeptOrders::default();
            }
            *kept
                .pairs
                .entry(pair(&order.rule, &order.account))
                .or_default() += 1;
            kept.orders
                .insert(order.key.clone(), (order.clone(), version));
        }
    }

    /// Whether the order under `key` is kept.
    pub(super) fn has(&self, key: &str) -> bool {
        lock(&self.0).orders.contains_key(key)
    }

    /// The order under `key` as kept, no longer kept (its transition
    /// keeps what it writes).
    pub(super) fn take(&self, key: &str) -> Option<(Order, i64)> {
        lock(&self.0).remove(key)
    }

    /// Whether (rule, account) has an unsettled order kept.
    pub(super) fn in_flight(&self, rule: &str, account: &str) -> bool {
        lock(&self.0).pairs.contains_key(&pair(rule, account))
    }
}

/// An account's orders as a check read them with its token, before it
/// asked the vendor, for the evidence step that follows (within
/// [`HOLD_FRESH`], taken once). Never older than this node's own writes:
/// a write of one of the account's orders drops what was kept of it, and
/// a read that started before such a write ended is not kept. Another
/// node's write since is not seen; every write is a compare-and-set on
/// the order as stored, and the database itself refuses a second
/// unsettled order, so a decision on such a reading pays nothing twice.
#[derive(Debug, Default)]
pub(super) struct Read(Mutex<ReadOrders>);

/// The most accounts' orders kept at once. Each is taken by the check
/// that read it, a moment later, so only the checks in flight have one;
/// an account's orders grow with its history, so the bound is kept low.
const READ_MAX: usize = 1024;

#[derive(Debug, Default)]
struct ReadOrders {
    /// This node's writes of orders so far (each counted as it starts
    /// and as it ends).
    writes: u64,
    /// The accounts written, with `writes` as of their last write.
    written: HashMap<String, u64>,
    /// Reads that started before this are not kept (`written` was
    /// emptied then).
    floor: u64,
    kept: HashMap<String, (Instant, Vec<Order>)>,
}

impl Read {
    /// As a read starts: what [`keep`](Self::keep) is told.
    pub(super) fn started(&self) -> u64 {
        lock(&self.0).writes
    }

    /// One of `account`'s orders is about to be written, or was (or may
    /// have been).
    pub(super) fn writing(&self, account: &str) {
        let mut r = lock(&self.0);
        r.writes += 1;
        if r.written.len() >= ACCOUNTS_MAX {
            r.written.clear();
            r.floor = r.writes;
        }
        let n = r.writes;
        r.written.insert(account.to_owned(), n);
        r.kept.remove(account);
    }

    /// `account`'s orders as read by a read that [`started`](Self::started)
    /// at `started`, kept unless this node wrote one since.
    pub(super) fn keep(&self, account: &str, started: u64, orders: Vec<Order>) {
        let mut r = lock(&self.0);
        let since = started < r.floor || r.written.get(account).is_some_and(|&n| n > started);
        if since {
            return;
        }
        if r.kept.len() >= READ_MAX {
            // Reads never taken (the vendor's answer failed): past their
            // second they are of no use.
            r.kept.retain(|_, (at, _)| at.elapsed() < HOLD_FRESH);
            if r.kept.len() >= READ_MAX {
                r.kept.clear();
            }
        }
        r.kept.insert(account.to_owned(), (Instant::now(), orders));
    }

    /// `account`'s orders as kept, if read less than [`HOLD_FRESH`] ago;
    /// taken: the next ask reads them again.
    pub(super) fn take(&self, account: &str) -> Option<Vec<Order>> {
        match lock(&self.0).kept.remove(account) {
            Some((at, orders)) if at.elapsed() < HOLD_FRESH => Some(orders),
            _ => None,
        }
    }
}

/// Marks a write of one of an account's orders in [`Read`] as it starts
/// and as it ends, however it ends.
pub(super) struct Writing<'a> {
    read: &'a Read,
    account: String,
}

impl<'a> Writing<'a> {
    pub(super) fn start(read: &'a Read, account: &str) -> Writing<'a> {
        read.writing(account);
        Writing {
            read,
            account: account.to_owned(),
        }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.read.writing(&self.account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(decision: &str) -> CheckState {
        CheckState {
            decision: decision.into(),
            ..CheckState::default()
        }
    }

    /// A check state is kept only for a pair the node holds; a pair
    /// claimed anew starts from the state its claim read, or is read again.
    #[test]
    fn check_states_are_kept_only_while_the_claim_is_held() {
        let seen = Seen::default();
        seen.keep_check("keep", "a", &state("renew"));
        assert_eq!(seen.check("keep", "a"), None, "not claimed");
        seen.claimed("keep", "a", Some(Some(state("wait"))));
        assert_eq!(seen.check("keep", "a"), Some(state("wait")), "as claimed");
        seen.keep_check("keep", "a", &state("renew"));
        assert_eq!(seen.check("keep", "a"), Some(state("renew")));
        seen.claimed("keep", "a", Some(Some(state("stale"))));
        assert_eq!(seen.check("keep", "a"), Some(state("renew")), "still held");
        seen.claimed("keep", "a", None);
        assert_eq!(seen.check("keep", "a"), None, "given up");
        seen.claimed("keep", "a", Some(None));
        assert_eq!(seen.check("keep", "a"), None, "undecodable: read again");
    }

    /// A pair is in flight while one of its kept orders is unsettled.
    #[test]
    fn a_pair_is_in_flight_while_an_order_kept_is_unsettled() {
        use crate::ledger::conformance::{NOW, request};
        let kept = Kept::default();
        let (mut a, _) = change::next_attempt(None, &request("a"), NOW, None);
        let (b, _) = change::next_attempt(None, &request("b"), NOW, None);
        let (rule, account) = (a.rule.clone(), a.account.clone());
        kept.remember(&a, 0);
        kept.remember(&a, 1);
        kept.remember(&b, 0);
        assert!(kept.in_flight(&rule, &account));
        assert_eq!(kept.take("a").map(|(_, v)| v), Some(1));
        assert!(!kept.in_flight(&rule, &account), "taken");
        kept.remember(&a, 2);
        a.state = crate::ledger::OrderState::Failed;
        kept.remember(&a, 3);
        assert!(!kept.in_flight(&rule, &account), "settled");
        assert!(!kept.has("a") && kept.has("b"));
    }

    #[test]
    fn an_account_state_read_with_its_token_is_taken_once() {
        let seen = Seen::default();
        let failing = AccountState {
            auth_failing: true,
            last_error: None,
        };
        seen.keep_account("a", failing.clone());
        assert_eq!(seen.take_account("b"), None);
        assert_eq!(seen.take_account("a"), Some(failing));
        assert_eq!(seen.take_account("a"), None, "taken");
    }

    #[test]
    fn a_hold_is_answered_from_memory_for_a_second() {
        let seen = Seen::default();
        assert_eq!(seen.hold(), None);
        seen.keep_hold(None);
        assert_eq!(seen.hold(), Some(None));
        seen.forget_hold();
        assert_eq!(seen.hold(), None);
    }

    /// A read of an account's orders is kept only if no write of one of
    /// them by this node started or ended while it ran, or since.
    #[test]
    fn orders_read_while_this_node_wrote_one_are_not_kept() {
        let read = Read::default();
        let started = read.started();
        read.keep("a", started, Vec::new());
        assert_eq!(read.take("a"), Some(Vec::new()));
        assert_eq!(read.take("a"), None, "taken");

        let started = read.started();
        let writing = Writing::start(&read, "a");
        read.keep("a", started, Vec::new());
        assert_eq!(read.take("a"), None, "a write started during the read");
        let started = read.started();
        drop(writing);
        read.keep("a", started, Vec::new());
        assert_eq!(read.take("a"), None, "a write ended during the read");

        let started = read.started();
        read.keep("a", started, Vec::new());
        read.keep("b", started, Vec::new());
        drop(Writing::start(&read, "a"));
        assert_eq!(read.take("a"), None, "written since");
        assert_eq!(read.take("b"), Some(Vec::new()), "another account");
    }

    #[test]
    fn orders_kept_are_bounded() {
        let read = Read::default();
        for i in 0..READ_MAX + 10 {
            read.keep(&format!("a{i}"), read.started(), Vec::new());
        }
        assert!(lock(&read.0).kept.len() <= READ_MAX);
        let last = format!("a{}", READ_MAX + 9);
        assert_eq!(read.take(&last), Some(Vec::new()), "the latest kept");
    }
}
