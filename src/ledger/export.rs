//! Everything a sled store holds, decoded, for `vipd store copy` (to a
//! PostgreSQL ledger, `pg/import.rs`): orders and what is derived from
//! them as the store counts it (spend with older stores' floors, vendor
//! ids with older stores' index rows), events, check and account records,
//! tokens, plugins' values and the hold.

use super::*;

/// A store's records, read under its write lock.
#[derive(Debug, Default)]
pub struct Export {
    pub orders: Vec<Order>,
    pub events: Vec<EventRecord>,
    /// (rule, account, state)
    pub checks: Vec<(String, String, CheckState)>,
    pub tokens: Vec<(String, StoredToken)>,
    pub account_states: Vec<(String, AccountState)>,
    /// (plugin, key, entry as stored, its expiry)
    pub kv: Vec<(String, String, Vec<u8>, Option<i64>)>,
    pub hold: Option<Hold>,
    /// (rule, period, spend)
    pub spend: Vec<(String, String, Spend)>,
    /// (provider, vendor order id, order key, attempt)
    pub vendor: Vec<(String, String, String, Option<u32>)>,
}

impl Ledger {
    /// Every record, decoded; a record that does not decode stops the
    /// export with its key (a copy must not drop what it cannot read).
    pub fn export(&self) -> Result<Export, LedgerError> {
        let _guard = self.lock();
        let mut e = Export {
            orders: self.scan(keys::ORDERS)?,
            events: self.scan(keys::EVENTS)?,
            hold: self.hold()?,
            ..Export::default()
        };
        let text = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        for item in self.db.scan_prefix("c/") {
            let (k, v) = item?;
            let key = text(&k);
            let Some((rule, account)) = key["c/".len()..].split_once('/') else {
                continue;
            };
            e.checks
                .push((rule.to_owned(), account.to_owned(), decode(&k, &v)?));
        }
        for item in self.db.scan_prefix("t/") {
            let (k, v) = item?;
            e.tokens
                .push((text(&k)["t/".len()..].to_owned(), decode(&k, &v)?));
        }
        for item in self.db.scan_prefix("u/") {
            let (k, v) = item?;
            e.account_states
                .push((text(&k)["u/".len()..].to_owned(), decode(&k, &v)?));
        }
        for item in self.db.scan_prefix("k/") {
            let (k, v) = item?;
            let key = text(&k);
            let Some((plugin, name)) = key["k/".len()..].split_once('\0') else {
                continue;
            };
            let entry: kv::Entry = decode(&k, &v)?;
            e.kv.push((plugin.to_owned(), name.to_owned(), v.to_vec(), entry.exp));
        }
        e.spend = self.derived.all_spend();
        e.vendor = self.derived.all_vendor();
        Ok(e)
    }
}
