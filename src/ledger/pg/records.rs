//! Events, check states, account states and rotated tokens in PostgreSQL:
//! one JSON record a row, under the keys they are found by. Plain writes:
//! none of them moves money, so none takes a lease (an event from a node
//! whose lease just ran out still tells what happened). Events, check
//! states and account states are written in batches (`batch.rs`): many
//! renewals' rows in one statement and one commit.

use deadpool_postgres::Pool;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::batch::{Batch, Batcher, last_of_each};
use super::{Prepared, db, from_json, pool_err};
use crate::ledger::{AccountState, CheckState, EventRecord, Hold, LedgerError, StoredToken};

/// What a check reads of an account before it asks the vendor.
#[derive(Debug)]
pub(crate) struct AccountRead {
    pub token: Option<StoredToken>,
    pub state: Option<AccountState>,
    /// Its orders' keys and records, in key order.
    pub orders: Vec<(String, serde_json::Value)>,
}

/// The other records of a PostgreSQL ledger.
#[derive(Clone)]
pub struct PgRecords {
    pool: Pool,
    events: Batcher<Events>,
    /// Check and account states are written on connections whose commits
    /// do not wait for the WAL flush (`synchronous_commit = off`): they
    /// move no money, and what a database crash loses of them (its last
    /// fraction of a second) the next check writes again.
    checks: Batcher<Checks>,
    states: Batcher<AccountStates>,
}

/// Events appended, in the order asked.
struct Events;

impl Batch for Events {
    type Row = (i64, serde_json::Value);
    type Out = ();
    async fn write(
        &self,
        c: &deadpool_postgres::Client,
        rows: &[Self::Row],
    ) -> Result<Vec<()>, tokio_postgres::Error> {
        let at: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let records: Vec<&serde_json::Value> = rows.iter().map(|r| &r.1).collect();
        c.run(
            "INSERT INTO vipd_events (at, record)
             SELECT at, record FROM unnest($1::bigint[], $2::json[]) WITH ORDINALITY AS t(at, record, i)
             ORDER BY i",
            &[&at, &records],
        )
        .await?;
        Ok(vec![(); rows.len()])
    }
}

/// Check states by (rule, account): the last asked of each stands.
struct Checks;

impl Batch for Checks {
    type Row = (String, String, serde_json::Value);
    type Out = ();
    async fn write(
        &self,
        c: &deadpool_postgres::Client,
        rows: &[Self::Row],
    ) -> Result<Vec<()>, tokio_postgres::Error> {
        let last = last_of_each(rows, |r| (&r.0, &r.1));
        let rules: Vec<&str> = last.iter().map(|r| r.0.as_str()).collect();
        let accounts: Vec<&str> = last.iter().map(|r| r.1.as_str()).collect();
        let records: Vec<&serde_json::Value> = last.iter().map(|r| &r.2).collect();
        c.run(
            "INSERT INTO vipd_checks (rule, account, record)
             SELECT * FROM unnest($1::text[], $2::text[], $3::json[])
             ON CONFLICT (rule, account) DO UPDATE SET record = EXCLUDED.record",
            &[&rules, &accounts, &records],
        )
        .await?;
        Ok(vec![(); rows.len()])
    }
}

/// Account states by account: the last asked of each stands.
struct AccountStates;

impl Batch for AccountStates {
    type Row = (String, serde_json::Value);
    type Out = ();
    async fn write(
        &self,
        c: &deadpool_postgres::Client,
        rows: &[Self::Row],
    ) -> Result<Vec<()>, tokio_postgres::Error> {
        let last = last_of_each(rows, |r| &r.0);
        let accounts: Vec<&str> = last.iter().map(|r| r.0.as_str()).collect();
        let states: Vec<&serde_json::Value> = last.iter().map(|r| &r.1).collect();
        c.run(
            "INSERT INTO vipd_accounts (account, state)
             SELECT * FROM unnest($1::text[], $2::json[])
             ON CONFLICT (account) DO UPDATE SET state = EXCLUDED.state",
            &[&accounts, &states],
        )
        .await?;
        Ok(vec![(); rows.len()])
    }
}

impl std::fmt::Debug for PgRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRecords").finish_non_exhaustive()
    }
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("ledger records always serialize")
}

impl PgRecords {
    /// Records written through `pool`, check and account states through
    /// `relaxed`; starts their writers (on the current runtime).
    pub fn new(pool: Pool, relaxed: Pool) -> PgRecords {
        PgRecords {
            events: Batcher::start(pool.clone(), Events),
            checks: Batcher::start(relaxed.clone(), Checks),
            states: Batcher::start(relaxed, AccountStates),
            pool,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, LedgerError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Appends to the event log.
    pub async fn record_event(&self, ev: &EventRecord) -> Result<(), LedgerError> {
        self.events.write((ev.at, to_json(ev))).await
    }

    /// Drops the events recorded before `before` (unix seconds).
    pub async fn prune_events(&self, before: i64) -> Result<usize, LedgerError> {
        let n = self
            .client()
            .await?
            .run("DELETE FROM vipd_events WHERE at < $1", &[&before])
            .await
            .map_err(db)?;
        Ok(n as usize)
    }

    /// The latest `limit` events, oldest first.
    pub async fn events(&self, limit: usize) -> Result<Vec<EventRecord>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .all(
                "SELECT seq, record FROM
                   (SELECT seq, at, record FROM vipd_events ORDER BY at DESC, seq DESC LIMIT $1) latest
                 ORDER BY at, seq",
                &[&limit],
            )
            .await
            .map_err(db)?;
        rows.into_iter()
            .map(|r| from_json("vipd_events", &r.get::<_, i64>(0).to_string(), r.get(1)))
            .collect()
    }

    /// The hold on new orders, if there is one.
    pub async fn hold(&self) -> Result<Option<Hold>, LedgerError> {
        let row = self
            .client()
            .await?
            .opt("SELECT record FROM vipd_hold", &[])
            .await
            .map_err(db)?;
        row.map(|r| from_json("vipd_hold", "hold", r.get(0)))
            .transpose()
    }

    /// Holds every new order, for `reason`: a new hold replaces the old
    /// one, and accounts released from it are held again.
    pub async fn hold_all(&self, now: i64, reason: &str) -> Result<(), LedgerError> {
        let hold = Hold {
            since: now,
            reason: reason.to_owned(),
            released: Default::default(),
        };
        self.client()
            .await?
            .run(
                "INSERT INTO vipd_hold (record) VALUES ($1)
                 ON CONFLICT (one) DO UPDATE SET record = EXCLUDED.record",
                &[&to_json(&hold)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Releases the hold for one account, or (`None`) entirely; what is
    /// still held afterwards. One transaction under the hold's row lock.
    pub async fn release(&self, account: Option<&str>) -> Result<Option<Hold>, LedgerError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .opt("SELECT record FROM vipd_hold FOR UPDATE", &[])
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut hold: Hold = from_json("vipd_hold", "hold", row.get(0))?;
        let left = match account {
            None => {
                tx.run("DELETE FROM vipd_hold", &[]).await.map_err(db)?;
                None
            }
            Some(a) => {
                hold.released.insert(a.to_owned());
                tx.run("UPDATE vipd_hold SET record = $1", &[&to_json(&hold)])
                    .await
                    .map_err(db)?;
                Some(hold)
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(left)
    }

    /// What the last check of (rule, account) saw.
    pub async fn check_state(&self, rule: &str, account: &str) -> Result<CheckState, LedgerError> {
        let row = self
            .client()
            .await?
            .opt(
                "SELECT record FROM vipd_checks WHERE rule = $1 AND account = $2",
                &[&rule, &account],
            )
            .await
            .map_err(db)?;
        match row {
            Some(r) => from_json("vipd_checks", &format!("{rule}/{account}"), r.get(0)),
            None => Ok(CheckState::default()),
        }
    }

    /// Records what a check saw and decided.
    pub async fn put_check_state(
        &self,
        rule: &str,
        account: &str,
        state: &CheckState,
    ) -> Result<(), LedgerError> {
        self.checks
            .write((rule.to_owned(), account.to_owned(), to_json(state)))
            .await
    }

    async fn account_column<T: DeserializeOwned>(
        &self,
        column: &str,
        account: &str,
    ) -> Result<Option<T>, LedgerError> {
        let row = self
            .client()
            .await?
            .opt(
                &format!("SELECT {column} FROM vipd_accounts WHERE account = $1"),
                &[&account],
            )
            .await
            .map_err(db)?;
        match row.and_then(|r| r.get::<_, Option<serde_json::Value>>(0)) {
            Some(v) => from_json("vipd_accounts", &format!("{account}/{column}"), v).map(Some),
            None => Ok(None),
        }
    }

    /// The account's stored token pair (if it was ever rotated), its
    /// credential state (`None` when the state does not decode: its own
    /// read says why) and its orders' records in key order, in one
    /// statement.
    pub(crate) async fn account_read(&self, account: &str) -> Result<AccountRead, LedgerError> {
        let row = self
            .client()
            .await?
            .one(
                "SELECT a.token, a.state, o.keys, o.records
                   FROM (SELECT 1) AS one
                   LEFT JOIN vipd_accounts a ON a.account = $1
                  CROSS JOIN LATERAL (SELECT array_agg(key ORDER BY key) AS keys,
                                             array_agg(record ORDER BY key) AS records
                                        FROM vipd_orders WHERE account = $1) AS o",
                &[&account],
            )
            .await
            .map_err(db)?;
        let token = row
            .get::<_, Option<serde_json::Value>>(0)
            .map(|v| from_json("vipd_accounts", &format!("{account}/token"), v))
            .transpose()?;
        let state = match row.get::<_, Option<serde_json::Value>>(1) {
            Some(v) => serde_json::from_value(v).ok(),
            None => Some(AccountState::default()),
        };
        let keys: Vec<String> = row.get::<_, Option<_>>(2).unwrap_or_default();
        let records: Vec<serde_json::Value> = row.get::<_, Option<_>>(3).unwrap_or_default();
        Ok(AccountRead {
            token,
            state,
            orders: keys.into_iter().zip(records).collect(),
        })
    }

    /// Stores a rotated token pair (durable once this returns: committed).
    pub async fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), LedgerError> {
        self.client()
            .await?
            .run(
                "INSERT INTO vipd_accounts (account, token) VALUES ($1, $2)
                 ON CONFLICT (account) DO UPDATE SET token = $2",
                &[&account, &to_json(token)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// An account's credential state.
    pub async fn account_state(&self, account: &str) -> Result<AccountState, LedgerError> {
        Ok(self
            .account_column("state", account)
            .await?
            .unwrap_or_default())
    }

    /// Records an account's credential state.
    pub async fn put_account_state(
        &self,
        account: &str,
        state: &AccountState,
    ) -> Result<(), LedgerError> {
        self.states
            .write((account.to_owned(), to_json(state)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::throwaway::TestDb;
    use super::*;
    use crate::ledger::conformance::event;

    async fn records() -> (TestDb, PgRecords) {
        let db = TestDb::migrated().await;
        let records = PgRecords::new(db.pool(2), db.pool(2));
        (db, records)
    }

    /// Events come back in time order (ties in the order written), the
    /// latest `limit` of them; pruning drops only the older ones; a record
    /// that does not decode names its table and row.
    #[tokio::test]
    async fn events_keep_their_order_and_prune_by_time() {
        let (db, r) = records().await;
        for (at, kind) in [(20, "b"), (30, "d"), (10, "a"), (20, "c")] {
            r.record_event(&event(at, kind)).await.unwrap();
        }
        let kinds = |evs: Vec<EventRecord>| evs.into_iter().map(|e| e.kind).collect::<Vec<_>>();
        assert_eq!(kinds(r.events(10).await.unwrap()), ["a", "b", "c", "d"]);
        assert_eq!(kinds(r.events(2).await.unwrap()), ["c", "d"]);
        assert_eq!(r.prune_events(20).await.unwrap(), 1);
        assert_eq!(kinds(r.events(10).await.unwrap()), ["b", "c", "d"]);
        db.connect()
            .await
            .execute(
                "INSERT INTO vipd_events (at, record) VALUES (40, '{\"at\": \"x\"}')",
                &[],
            )
            .await
            .unwrap();
        let e = r.events(10).await.unwrap_err();
        assert!(e.to_string().contains("vipd_events/"), "{e}");
    }

    /// An event writes one index entry: the log is read and pruned by
    /// time, and its time order is its primary key.
    #[tokio::test]
    async fn an_event_writes_one_index_entry() {
        let (db, _r) = records().await;
        let indexes: Vec<String> = db
            .connect()
            .await
            .query(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'vipd_events'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(indexes.len(), 1, "{indexes:?}");
        assert!(indexes[0].contains("(at, seq)"), "{indexes:?}");
    }

    /// Check, account and token records read back as written, and as their
    /// defaults when never written.
    #[tokio::test]
    async fn check_account_and_token_records_read_back() {
        let (_db, r) = records().await;
        assert_eq!(
            r.check_state("keep", "alice").await.unwrap(),
            CheckState::default()
        );
        let check = CheckState {
            checked_at: Some(100),
            observed_end: Some(200),
            decision: "renew".into(),
            ..CheckState::default()
        };
        r.put_check_state("keep", "alice", &check).await.unwrap();
        assert_eq!(r.check_state("keep", "alice").await.unwrap(), check);
        assert_eq!(
            r.check_state("keep", "bob").await.unwrap(),
            CheckState::default()
        );
        assert_eq!(r.account_read("alice").await.unwrap().token, None);
        let state = AccountState {
            auth_failing: true,
            last_error: Some("token expired".into()),
        };
        r.put_account_state("alice", &state).await.unwrap();
        assert_eq!(
            r.account_read("alice").await.unwrap().token,
            None,
            "a state, no token"
        );
        let token = StoredToken {
            access_token: "a2".into(),
            refresh_token: Some("r2".into()),
            expires_at: Some(900),
            lifetime: Some(7776000),
            rotated_at: 100,
            grant: "g".into(),
        };
        r.put_token("alice", &token).await.unwrap();
        assert_eq!(r.account_read("alice").await.unwrap().token, Some(token));
        assert_eq!(
            r.account_state("alice").await.unwrap(),
            state,
            "kept beside the token"
        );
        assert_eq!(
            r.account_state("bob").await.unwrap(),
            AccountState::default()
        );
    }
}
