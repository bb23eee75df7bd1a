//! Every key of the store, built in one place. The tree's layout is in the
//! module documentation of [`crate::ledger`]; nothing else spells a prefix.

/// The ledger id (16 bytes).
pub const ID: &[u8] = b"m/id";
/// The change counter (u64, big-endian).
pub(crate) const SEQ: &[u8] = b"m/seq";
/// The [`Hold`](super::Hold), when there is one.
pub(crate) const HOLD: &[u8] = b"m/hold";
/// Written and read back by the health probe.
pub(crate) const PROBE: &[u8] = b"m/probe";
/// Metadata: not backed up or restored as records.
pub(crate) const META: &str = "m/";
/// Where records that did not decode are set aside.
pub(crate) const QUARANTINE: &str = "q/";
/// Orders.
pub(crate) const ORDERS: &str = "o/";
/// Stores written before spend was derived from orders: spend per rule
/// and period, `b/{rule}/{period}` ([`Spend`](super::Spend)). Read at
/// open, never written.
pub(crate) const LEGACY_SPEND: &str = "b/";
/// Stores written before indexes were derived: `x/{provider}/{vendor
/// order id}` → the order's key (`key#attempt`). Read at open, never
/// written.
pub(crate) const LEGACY_VENDOR: &str = "x/";
/// The event log, in time order.
pub(crate) const EVENTS: &str = "e/";

/// An order.
pub fn order(key: &str) -> String {
    format!("{ORDERS}{key}")
}

/// An event at unix second `at`, `seq` breaking ties: keys sort by time.
pub fn event(at: i64, seq: u64) -> String {
    format!("{EVENTS}{:016x}{seq:016x}", at.max(0))
}

/// The first event key at or after unix second `at`.
pub(crate) fn events_from(at: i64) -> String {
    format!("{EVENTS}{:016x}", at.max(0))
}

/// What the last check of a rule and account saw and decided.
pub fn check(rule: &str, account: &str) -> String {
    format!("c/{rule}/{account}")
}

/// An account's latest rotated token pair.
pub fn token(account: &str) -> String {
    format!("t/{account}")
}

/// An account's state that outlives a check.
pub fn account_state(account: &str) -> String {
    format!("u/{account}")
}

/// A plugin's `vipd.kv` value.
pub fn kv(plugin: &str, key: &str) -> Vec<u8> {
    format!("k/{plugin}\0{key}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_time_then_sequence() {
        let mut keys = [event(20, 1), event(3, 9), event(20, 0), event(-5, 0)];
        keys.sort();
        assert_eq!(keys, [event(0, 0), event(3, 9), event(20, 0), event(20, 1)]);
        assert!(events_from(20) <= event(20, 0) && events_from(21) > event(20, u64::MAX));
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        assert_eq!(order("k"), "o/k");
        assert_eq!(check("keep", "alice"), "c/keep/alice");
        assert_eq!(token("alice"), "t/alice");
        assert_eq!(account_state("alice"), "u/alice");
        assert_eq!(kv("p", "k"), b"k/p\0k");
    }
}
