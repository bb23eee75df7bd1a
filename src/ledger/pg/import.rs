//! `vipd store copy --from sled --to postgres`: a single node's history
//! moved into an empty shared ledger, in one transaction.
//!
//! Orders keep their records and are written with fence 0 (no node): the
//! first node to start recovers what was in flight as after a crash
//! (`sent` becomes `unknown`, `planned` retryable). Spend rows are what
//! the sled store counted (older stores' floors included), so no budget
//! loosens in the move.

use super::{PgError, db};
use crate::ledger::{Export, LedgerError};

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub orders: usize,
    pub events: usize,
    pub records: usize,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} orders, {} events and {} other records",
            self.orders, self.events, self.records
        )
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("ledger records always serialize")
}

/// Copies `e` into the database (migrated first). Refuses a database that
/// already holds orders or events, or on which a node holds a lease: a
/// copy never mixes two histories.
pub async fn import(
    client: &mut tokio_postgres::Client,
    e: &Export,
) -> Result<Copied, LedgerError> {
    super::migrate(client).await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    // Nodes starting meanwhile wait for the copy at their migration.
    tx.batch_execute("LOCK TABLE vipd_schema IN ACCESS EXCLUSIVE MODE")
        .await
        .map_err(db)?;
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM vipd_orders), EXISTS (SELECT 1 FROM vipd_events),
                    EXISTS (SELECT 1 FROM vipd_nodes WHERE lease_until > now())",
            &[],
        )
        .await
        .map_err(db)?;
    let (orders, events, nodes): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if orders || events || nodes {
        return Err(LedgerError::NotDurable(format!(
            "the PostgreSQL ledger is not empty ({}): a copy goes into a new database only",
            if nodes {
                "a node holds a lease on it"
            } else {
                "it has orders or events"
            }
        )));
    }
    for o in &e.orders {
        let row = super::write::OrderRow::of(o, 0);
        tx.execute(super::write::INSERT_ORDER, &row.params())
            .await
            .map_err(|err| copy_error("order", &o.key, err))?;
    }
    let mut records = 0;
    for (rule, period, s) in &e.spend {
        tx.execute(
            "INSERT INTO vipd_spend (rule, period, reserved, settled) VALUES ($1, $2, $3, $4)",
            &[rule, period, &s.reserved.0, &s.settled.0],
        )
        .await
        .map_err(|err| copy_error("spend", &format!("{rule}/{period}"), err))?;
        records += 1;
    }
    for (provider, id, key, n) in &e.vendor {
        let n = n.map(|n| n as i32);
        tx.execute(
            "INSERT INTO vipd_vendor_orders (provider, vendor_orderid, key, attempt) VALUES ($1, $2, $3, $4)",
            &[provider, id, key, &n],
        )
        .await
        .map_err(|err| copy_error("vendor order id", id, err))?;
        records += 1;
    }
    let event_sql = tx
        .prepare("INSERT INTO vipd_events (at, record) VALUES ($1, $2)")
        .await
        .map_err(db)?;
    for ev in &e.events {
        tx.execute(&event_sql, &[&ev.at, &json(ev)])
            .await
            .map_err(|err| copy_error("event", &ev.kind, err))?;
    }
    for (rule, account, c) in &e.checks {
        tx.execute(
            "INSERT INTO vipd_checks (rule, account, record) VALUES ($1, $2, $3)",
            &[rule, account, &json(c)],
        )
        .await
        .map_err(|err| copy_error("check", &format!("{rule}/{account}"), err))?;
        records += 1;
    }
    for (account, state) in &e.account_states {
        tx.execute(
            "INSERT INTO vipd_accounts (account, state) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET state = $2",
            &[account, &json(state)],
        )
        .await
        .map_err(|err| copy_error("account", account, err))?;
        records += 1;
    }
    for (account, token) in &e.tokens {
        tx.execute(
            "INSERT INTO vipd_accounts (account, token) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET token = $2",
            &[account, &json(token)],
        )
        .await
        .map_err(|err| copy_error("token of", account, err))?;
        records += 1;
    }
    for (plugin, key, entry, exp) in &e.kv {
        let size = (key.len() + entry.len()) as i64;
        tx.execute(
            "INSERT INTO vipd_kv (plugin, key, entry, exp, size) VALUES ($1, $2, $3, $4, $5)",
            &[plugin, &key.as_bytes(), entry, exp, &size],
        )
        .await
        .map_err(|err| copy_error("plugin value", &format!("{plugin}/{key}"), err))?;
        records += 1;
    }
    if let Some(hold) = &e.hold {
        tx.execute("INSERT INTO vipd_hold (record) VALUES ($1)", &[&json(hold)])
            .await
            .map_err(db)?;
        records += 1;
    }
    tx.commit().await.map_err(db)?;
    Ok(Copied {
        orders: e.orders.len(),
        events: e.events.len(),
        records,
    })
}

/// A row the database refused, named.
fn copy_error(what: &str, name: &str, e: tokio_postgres::Error) -> LedgerError {
    LedgerError::NotDurable(format!("copying {what} {name}: {}", PgError::from(e)))
}

#[cfg(test)]
mod tests {
    use super::super::throwaway::database;
    use super::super::{PgConfig, PgStore};
    use super::*;
    use crate::ledger::conformance::{NOW, event, paid_reply, pending, request};
    use crate::ledger::kv::KvQuota;
    use crate::ledger::store::{OrderStore, Store};
    use crate::ledger::{AccountState, CheckState, Ledger, OrderState, StoredToken};
    use crate::units::Fen;

    /// What a store says about everything a copy moves.
    async fn view(l: &dyn Store) -> String {
        let mut orders = l.orders(None).await.unwrap();
        orders.sort_by(|a, b| a.key.cmp(&b.key));
        format!(
            "{orders:?}\n{:?}\n{:?} {:?}\n{:?}\n{:?} {:?} {:?}\n{:?} {:?}\n{:?}\n{:?} {:?}",
            l.count_by_state().await.unwrap(),
            l.spend("keep", "2026-11-21").await.unwrap(),
            l.spend("keep", "2026-11").await.unwrap(),
            l.events(100).await.unwrap(),
            l.check_state("keep", "a0").await.unwrap(),
            l.account_state("a0").await.unwrap(),
            l.stored_token("a0").await.unwrap(),
            l.kv_get("p", "k\0x", NOW).await.unwrap(),
            l.kv_ttl("p", "k\0x", NOW).await.unwrap(),
            l.held("acct-z").await.unwrap(),
            l.attempt_of_vendor_order("wapi", "V-a").await.unwrap(),
            l.attempt_of_vendor_order("wapi", "V-b").await.unwrap(),
        )
    }

    /// A sled store's orders (paid, pending, sent), spend, vendor ids,
    /// events, records, plugin values and hold read back the same from
    /// PostgreSQL after a copy; a second copy into it is refused; and the
    /// first node's start-up recovery turns the order left `sent` into
    /// `unknown`, as sled's would.
    #[tokio::test]
    async fn a_sled_store_reads_back_the_same_after_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let sled = Ledger::open(dir.path()).unwrap();
        let s: &dyn Store = &sled;
        s.plan(&request("a"), NOW).await.unwrap().unwrap();
        s.mark_sent("a", NOW).await.unwrap();
        paid_reply(&sled, "a", NOW, Some(Fen(1500)), Some("V-a"), NOW + 60).await;
        pending(&sled, "b", None, Some("V-b".into())).await;
        let mut c = request("c");
        c.budget = Default::default();
        s.plan(&c, NOW).await.unwrap().unwrap();
        s.mark_sent("c", NOW).await.unwrap();
        s.record_event(&event(NOW, "first")).await.unwrap();
        s.record_event(&event(NOW + 1, "second")).await.unwrap();
        let check = CheckState {
            checked_at: Some(NOW),
            decision: "renew".into(),
            ..CheckState::default()
        };
        s.put_check_state("keep", "a0", &check).await.unwrap();
        let failing = AccountState {
            auth_failing: true,
            last_error: Some("token expired".into()),
        };
        s.put_account_state("a0", &failing).await.unwrap();
        let token = StoredToken {
            access_token: "AT2".into(),
            refresh_token: None,
            expires_at: None,
            lifetime: None,
            rotated_at: NOW,
            grant: "g1".into(),
        };
        s.put_token("a0", &token).await.unwrap();
        let room = KvQuota::of_bytes(1 << 20);
        s.kv_set("p", "k\0x", 7.into(), Some(60), NOW, room)
            .await
            .unwrap();
        s.hold_all(NOW, "restored from a backup").await.unwrap();
        let before = view(s).await;

        let db = database().await;
        let copied = import(&mut db.connect().await, &sled.export().unwrap())
            .await
            .unwrap();
        assert_eq!((copied.orders, copied.events), (3, 2));
        let cfg = PgConfig {
            url: db.url().to_owned(),
            node: "n1".into(),
            lease: std::time::Duration::from_secs(30),
            pool_size: 4,
        };
        let pg = PgStore::open(&cfg).await.unwrap();
        assert_eq!(view(&pg).await, before);

        let again = import(&mut db.connect().await, &sled.export().unwrap()).await;
        assert!(
            matches!(&again, Err(e) if e.to_string().contains("not empty")),
            "{again:?}"
        );
        let recovered = pg.recover(NOW).await.unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(
            (recovered[0].key.as_str(), recovered[0].state),
            ("c", OrderState::Unknown)
        );
    }
}
