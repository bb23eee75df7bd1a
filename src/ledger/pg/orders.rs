//! Orders in PostgreSQL: a plan and every later transition is one
//! transaction that locks the order's row (`SELECT ... FOR UPDATE`),
//! applies the same change as sled (`ledger/change.rs`), writes the row,
//! and adds the change's budget effect to the spend rows, which it locks
//! too. Whatever node makes it, two transitions of one order never
//! interleave, and a budget is checked against rows no other node can
//! change meanwhile.

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::lease::{self, Lease};
use super::{db, from_json, pool_err};
use crate::ledger::derived::Share;
use crate::ledger::{LedgerError, Order, OrderState, PlanRequest, Refusal, Spend, change};
use crate::units::Fen;

/// The orders, budgets and vendor ids of a PostgreSQL ledger, as one node
/// writes them: every write checks the node's lease and fence first.
#[derive(Clone)]
pub struct PgOrders {
    pool: Pool,
    lease: Lease,
}

impl std::fmt::Debug for PgOrders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrders").finish_non_exhaustive()
    }
}

/// Transitions' milliseconds: the node's clock (the order's `at` seconds
/// are the engine's time, passed in).
fn unix_ms() -> i64 {
    use crate::model::Clock;
    crate::model::SystemClock.unix_ms()
}

fn decode(key: &str, record: serde_json::Value) -> Result<Order, LedgerError> {
    from_json("vipd_orders", key, record)
}

/// A rule's spend row for a period, made (at zero) if it is not there.
async fn spend_row(
    tx: &impl GenericClient,
    rule: &str,
    period: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO vipd_spend (rule, period) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&rule, &period],
    )
    .await
    .map(|_| ())
}

fn spend_of(row: &tokio_postgres::Row) -> Spend {
    Spend {
        reserved: Fen(row.get(0)),
        settled: Fen(row.get(1)),
    }
}

/// Reads an order and locks its row for the transaction.
async fn locked(tx: &impl GenericClient, key: &str) -> Result<Option<Order>, LedgerError> {
    let row = tx
        .query_opt(
            "SELECT record FROM vipd_orders WHERE key = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(db)?;
    row.map(|r| decode(key, r.get(0))).transpose()
}

/// Writes an order's row (as written by the node with `fence`; 0: none):
/// inserted when `new`, so that a second node's insert of the same key
/// fails on the primary key; else updated under its row lock.
pub(super) async fn put_order(
    tx: &impl GenericClient,
    o: &Order,
    fence: i64,
    new: bool,
) -> Result<(), tokio_postgres::Error> {
    let record = serde_json::to_value(o).expect("orders always serialize");
    let sql = if new {
        "INSERT INTO vipd_orders (key, account, membership, rule, state, unsettled, record, fence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    } else {
        "UPDATE vipd_orders SET state = $5, unsettled = $6, record = $7, fence = $8, updated_at = now()
         WHERE key = $1 AND account = $2 AND membership = $3 AND rule = $4"
    };
    tx.execute(
        sql,
        &[
            &o.key,
            &o.account,
            &o.membership.as_str(),
            &o.rule,
            &o.state.as_str(),
            &change::unsettled(o),
            &record,
            &fence,
        ],
    )
    .await
    .map(|_| ())
}

/// Writes an order and what follows from it: its spend changes and the
/// vendor ids it newly names.
async fn write(
    tx: &impl GenericClient,
    fence: i64,
    was: Option<&Share>,
    o: &Order,
) -> Result<(), tokio_postgres::Error> {
    let now = Share::of(o);
    put_order(tx, o, fence, was.is_none()).await?;
    for (id, n) in Share::new_vendor_ids(was, &now) {
        let n = n.map(|n| n as i32);
        tx.execute(
            "INSERT INTO vipd_vendor_orders (provider, vendor_orderid, key, attempt) VALUES ($1, $2, $3, $4)
             ON CONFLICT (provider, vendor_orderid) DO UPDATE SET key = $3, attempt = $4",
            &[&o.provider, id, &o.key, &n],
        )
        .await?;
    }
    // Appended, never updated: no other order's transition waits on it.
    for (period, reserved, settled) in Share::spend_changes(was, &now) {
        tx.execute(
            "INSERT INTO vipd_spend_changes (rule, period, reserved, settled) VALUES ($1, $2, $3, $4)",
            &[&o.rule, &period, &reserved.0, &settled.0],
        )
        .await?;
    }
    Ok(())
}

/// The folded row's spend plus the changes not folded yet.
const SPEND: &str = "SELECT (coalesce((SELECT reserved FROM vipd_spend WHERE rule = $1 AND period = $2), 0)
                        + coalesce(sum(c.reserved), 0))::bigint,
                       (coalesce((SELECT settled FROM vipd_spend WHERE rule = $1 AND period = $2), 0)
                        + coalesce(sum(c.settled), 0))::bigint
                FROM vipd_spend_changes c WHERE c.rule = $1 AND c.period = $2";

/// A rule's spend in a period, its folded row locked for the transaction
/// (a plan under a cap).
async fn spend_locked(
    tx: &impl GenericClient,
    rule: &str,
    period: &str,
) -> Result<Spend, LedgerError> {
    spend_row(tx, rule, period).await.map_err(db)?;
    tx.execute(
        "SELECT 1 FROM vipd_spend WHERE rule = $1 AND period = $2 FOR UPDATE",
        &[&rule, &period],
    )
    .await
    .map_err(db)?;
    let row = tx.query_one(SPEND, &[&rule, &period]).await.map_err(db)?;
    Ok(spend_of(&row))
}

impl PgOrders {
    /// Orders written by the node holding `lease`.
    pub fn new(pool: Pool, lease: Lease) -> PgOrders {
        PgOrders { pool, lease }
    }

    /// [`Ledger::plan`](crate::ledger::Ledger::plan) across nodes: the
    /// key's row and the two spend rows are locked, and the database's
    /// unique index refuses a second unsettled order for the account and
    /// membership whatever node plans it.
    pub async fn plan(
        &self,
        req: &PlanRequest,
        now: i64,
    ) -> Result<Result<Order, Refusal>, LedgerError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let raw: &mut tokio_postgres::Client = &mut client;
        let tx = raw.transaction().await.map_err(db)?;
        lease::check(&tx, &self.lease).await?;
        let hold = tx
            .query_opt("SELECT record FROM vipd_hold", &[])
            .await
            .map_err(db)?;
        if let Some(row) = hold {
            let hold: crate::ledger::Hold = from_json("vipd_hold", "hold", row.get(0))?;
            if let Some(why) = hold.of(&req.account) {
                return Ok(Err(Refusal::Held { why }));
            }
        }
        let existing = locked(&tx, &req.key).await?;
        if let Some(refusal) = existing
            .as_ref()
            .and_then(|o| change::refuses_retry(o, req, now))
        {
            return Ok(Err(refusal));
        }
        // One period, one payment, across rules: named here; the unique
        // index refuses it too when two nodes plan at the same moment.
        let other = tx
            .query_opt(
                "SELECT key, rule, state FROM vipd_orders
                 WHERE account = $1 AND membership = $2 AND unsettled AND key <> $3 LIMIT 1",
                &[&req.account, &req.membership.as_str(), &req.key],
            )
            .await
            .map_err(db)?;
        if let Some(row) = other {
            let (key, rule, state): (&str, &str, &str) = (row.get(0), row.get(1), row.get(2));
            return Ok(Err(Refusal::Exists {
                state: state.parse().unwrap_or(OrderState::Unknown),
                why: format!(
                    "order {key} (rule {rule}) for {} {} is not settled and shown yet",
                    req.account, req.membership
                ),
            }));
        }
        // A capped period's spend row is locked until the plan commits: no
        // other node's plan can use the same room meanwhile. An uncapped
        // one is not read: every plan of the rule would wait on its row.
        let day = match req.budget.per_day {
            Some(_) => spend_locked(&tx, &req.rule, &req.day).await?,
            None => Spend::default(),
        };
        let month = match req.budget.per_month {
            Some(_) => spend_locked(&tx, &req.rule, &req.month).await?,
            None => Spend::default(),
        };
        if let Some(refusal) = change::over_budget(req, day, month) {
            return Ok(Err(refusal));
        }
        let was = existing.as_ref().map(Share::of);
        let (mut order, added) = change::next_attempt(existing, req, now);
        order.stamp_from(added, unix_ms());
        if let Err(e) = write(&tx, self.lease.fence, was.as_ref(), &order).await {
            let why = if violates(&e, "vipd_orders_one_unsettled") {
                format!(
                    "another order for {} {} is not settled and shown yet",
                    req.account, req.membership
                )
            } else if violates(&e, "vipd_orders_pkey") {
                "another node planned it at the same moment".to_owned()
            } else {
                return Err(db(e));
            };
            return Ok(Err(Refusal::Exists {
                state: OrderState::Planned,
                why,
            }));
        }
        tx.commit().await.map_err(db)?;
        Ok(Ok(order))
    }

    /// One transition of one order, in one transaction under its row lock.
    pub async fn modify<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut Order) -> Result<R, LedgerError>,
    ) -> Result<(Order, R), LedgerError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let raw: &mut tokio_postgres::Client = &mut client;
        let tx = raw.transaction().await.map_err(db)?;
        lease::check(&tx, &self.lease).await?;
        let mut order = locked(&tx, key)
            .await?
            .ok_or_else(|| LedgerError::NotFound(key.to_owned()))?;
        let was = Share::of(&order);
        let r = change::apply(&mut order, unix_ms(), f)?;
        write(&tx, self.lease.fence, Some(&was), &order)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((order, r))
    }

    /// Takes over what dead nodes left in flight: orders `planned` or
    /// `sent` whose last writer's lease ran out (or whose name a newer
    /// start took) are recovered as after a crash ([`change::recover`]):
    /// `sent` may have left, so it becomes `unknown`, never re-sent;
    /// `planned` never left, so it becomes `failed`, retryable at once.
    /// Each under its row lock and this node's fence: an owner still
    /// committing is waited for, and what it committed is what is
    /// recovered. Returns the orders changed.
    pub async fn recover_orphans(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let orphans: Vec<String> = client
            .query(
                "SELECT o.key FROM vipd_orders o
                 WHERE o.state IN ('planned', 'sent')
                   AND NOT EXISTS (SELECT 1 FROM vipd_nodes n
                                   WHERE n.fence = o.fence AND n.lease_until > now())",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(client);
        let mut changed = Vec::new();
        for key in orphans {
            let (order, moved) = self
                .modify(&key, |o| {
                    let was = o.state;
                    change::recover(o, now);
                    Ok(o.state != was)
                })
                .await?;
            if moved {
                changed.push(order);
            }
        }
        Ok(changed)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Order>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt("SELECT record FROM vipd_orders WHERE key = $1", &[&key])
            .await
            .map_err(db)?;
        row.map(|r| decode(key, r.get(0))).transpose()
    }

    async fn many(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Order>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client.query(sql, params).await.map_err(db)?;
        rows.into_iter()
            .map(|r| decode(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    /// Every order, or those in `state`, oldest first (as sled lists them).
    pub async fn orders(&self, state: Option<OrderState>) -> Result<Vec<Order>, LedgerError> {
        let state = state.map(OrderState::as_str);
        self.many(
            "SELECT key, record FROM vipd_orders WHERE $1::text IS NULL OR state = $1
             ORDER BY (record->>'created_at')::bigint, key",
            &[&state],
        )
        .await
    }

    /// Every order of one account, in key order.
    pub async fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        self.many(
            "SELECT key, record FROM vipd_orders WHERE account = $1 ORDER BY key",
            &[&account],
        )
        .await
    }

    /// The order whose key starts with `prefix`, if exactly one does.
    pub async fn find(&self, prefix: &str) -> Result<Order, LedgerError> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let mut found = self
            .many(
                "SELECT key, record FROM vipd_orders WHERE key LIKE $1 ORDER BY key LIMIT 2",
                &[&pattern],
            )
            .await?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(LedgerError::NotFound(prefix.to_owned())),
            _ => Err(LedgerError::NotFound(format!(
                "{prefix} (several keys start so; give more of it)"
            ))),
        }
    }

    /// Orders by state, counted by the database (every state present).
    pub async fn count_by_state(
        &self,
    ) -> Result<std::collections::BTreeMap<OrderState, usize>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT state, count(*) FROM vipd_orders GROUP BY state",
                &[],
            )
            .await
            .map_err(db)?;
        let mut counts: std::collections::BTreeMap<OrderState, usize> =
            OrderState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let state: &str = r.get(0);
            let n: i64 = r.get(1);
            if let Ok(s) = state.parse::<OrderState>() {
                counts.insert(s, n as usize);
            }
        }
        Ok(counts)
    }

    /// Paid orders whose renewal never showed.
    pub async fn count_unverified(&self) -> Result<usize, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM vipd_orders
                 WHERE state = 'succeeded' AND record->'verification'->>'status' = 'unverified'",
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        Ok(n as usize)
    }

    pub async fn spend(&self, rule: &str, period: &str) -> Result<Spend, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one(SPEND, &[&rule, &period])
            .await
            .map_err(db)?;
        Ok(spend_of(&row))
    }

    /// Folds the spend changes appended so far into their periods' rows:
    /// each period in its own transaction under its row's lock (one lock a
    /// transaction: a plan locking a day and a month cannot deadlock with
    /// it). Returns how many changes were folded.
    pub async fn fold_spend(&self) -> Result<u64, LedgerError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let periods: Vec<(String, String)> = client
            .query("SELECT DISTINCT rule, period FROM vipd_spend_changes", &[])
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut folded = 0;
        for (rule, period) in periods {
            let raw: &mut tokio_postgres::Client = &mut client;
            let tx = raw.transaction().await.map_err(db)?;
            spend_row(&tx, &rule, &period).await.map_err(db)?;
            let row = tx
                .query_one(
                    "WITH moved AS (
                         DELETE FROM vipd_spend_changes WHERE rule = $1 AND period = $2
                         RETURNING reserved, settled),
                     total AS (
                         SELECT count(*) AS n, coalesce(sum(reserved), 0)::bigint AS r,
                                coalesce(sum(settled), 0)::bigint AS s FROM moved)
                     UPDATE vipd_spend SET reserved = reserved + total.r, settled = settled + total.s
                     FROM total WHERE rule = $1 AND period = $2
                     RETURNING total.n",
                    &[&rule, &period],
                )
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            folded += row.get::<_, i64>(0) as u64;
        }
        Ok(folded)
    }

    pub async fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<(String, Option<u32>)>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "SELECT key, attempt FROM vipd_vendor_orders WHERE provider = $1 AND vendor_orderid = $2",
                &[&provider, &vendor_orderid],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| (r.get(0), r.get::<_, Option<i32>>(1).map(|n| n as u32))))
    }
}

/// Whether a write failed on the unique `constraint`: the primary key
/// (another node inserted the key first) or the index that allows one
/// unsettled order per account and membership.
fn violates(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some(constraint)
}

#[cfg(test)]
mod tests {
    use super::super::throwaway::TestDb;
    use super::*;
    use crate::ledger::conformance::{NOW, request};
    use crate::ledger::{AttemptResult, Budget};
    use crate::model::OutcomeClass;
    use std::time::Duration;

    /// A node `name`: its own pool on the shared database and a lease.
    async fn named(db: &TestDb, name: &str, ttl: Duration) -> (PgOrders, Lease) {
        let pool = db.pool(4);
        let lease = lease::acquire(&**pool.get().await.unwrap(), name, ttl)
            .await
            .unwrap();
        (PgOrders::new(pool, lease.clone()), lease)
    }

    async fn node(db: &TestDb) -> PgOrders {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        named(db, &format!("node-{n}"), Duration::from_secs(60))
            .await
            .0
    }

    #[tokio::test]
    async fn a_plan_sent_and_paid_counts_its_price_and_names_its_vendor_id() {
        let db = TestDb::migrated().await;
        let n = node(&db).await;
        n.plan(&request("k1"), NOW).await.unwrap().unwrap();
        assert_eq!(
            n.spend("keep", "2026-11-21").await.unwrap().reserved,
            Fen(2000)
        );
        n.modify("k1", |o| change::mark_sent(o, NOW)).await.unwrap();
        let (o, conflict) = n
            .modify("k1", |o| {
                change::record_reply(
                    o,
                    NOW,
                    OutcomeClass::Accepted,
                    "codeid 10000",
                    AttemptResult::Succeeded {
                        price: Some(Fen(1500)),
                        vendor_orderid: Some("V1".into()),
                        verify_deadline: NOW + 60,
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!((o.state, conflict), (OrderState::Succeeded, None));
        let spend = n.spend("keep", "2026-11-21").await.unwrap();
        assert_eq!((spend.reserved, spend.settled), (Fen::ZERO, Fen(1500)));
        assert_eq!(n.spend("keep", "2026-11").await.unwrap().settled, Fen(1500));
        assert_eq!(
            n.attempt_of_vendor_order("wapi", "V1").await.unwrap(),
            Some(("k1".into(), Some(1)))
        );
        assert!(matches!(
            n.plan(&request("k1"), NOW).await.unwrap(),
            Err(Refusal::Exists { .. })
        ));
        assert_eq!(
            n.get("k1").await.unwrap().unwrap().state,
            OrderState::Succeeded
        );
    }

    /// Two nodes planning at once: one key is planned once; two keys for
    /// one account and membership (two rules) pay once; a cap holds
    /// across nodes.
    #[tokio::test]
    async fn nodes_planning_at_once_never_pay_twice_or_pass_a_cap() {
        let db = TestDb::migrated().await;
        let (a, b) = (node(&db).await, node(&db).await);
        for round in 0..10 {
            let key = format!("same-{round}");
            let req = PlanRequest {
                budget: Budget::default(),
                ..request(&key)
            };
            let (ra, rb) = tokio::join!(a.plan(&req, NOW), b.plan(&req, NOW));
            let planned = [ra.unwrap(), rb.unwrap()]
                .iter()
                .filter(|r| r.is_ok())
                .count();
            assert_eq!(planned, 1, "{key}: planned by one node");
        }
        for round in 0..10 {
            let mut ka = request(&format!("rule-a-{round}"));
            let mut kb = request(&format!("rule-b-{round}"));
            ka.account = format!("shared-{round}");
            kb.account = ka.account.clone();
            ka.budget = Budget::default();
            kb.budget = Budget::default();
            let (ra, rb) = tokio::join!(a.plan(&ka, NOW), b.plan(&kb, NOW));
            let planned = [ra.unwrap(), rb.unwrap()]
                .iter()
                .filter(|r| r.is_ok())
                .count();
            assert_eq!(planned, 1, "{}: one period, one order", ka.account);
        }
        // The suite's cap is 5000 a day and each plan holds 2000: six
        // plans from two nodes on a fresh day, two fit.
        let day = |key: &str| {
            let mut r = request(key);
            r.day = "2026-12-01".into();
            r
        };
        let plans: Vec<_> = (0..6)
            .map(|i| {
                let n = if i % 2 == 0 { a.clone() } else { b.clone() };
                let r = day(&format!("cap-{i}"));
                tokio::spawn(async move { n.plan(&r, NOW).await.unwrap().is_ok() })
            })
            .collect();
        let mut fitted = 0;
        for p in plans {
            fitted += usize::from(p.await.unwrap());
        }
        assert_eq!(fitted, 2, "4000 of a 5000 cap held; a third would pass it");
        assert_eq!(
            a.spend("keep", "2026-12-01").await.unwrap().reserved,
            Fen(4000)
        );
        // Folding the changes into their rows, from both nodes at once and
        // while plans run, changes no spend and keeps the cap.
        let before = a.spend("keep", "2026-11-21").await.unwrap();
        let racing = {
            let b = b.clone();
            tokio::spawn(async move { b.plan(&day("cap-late"), NOW).await.unwrap().is_ok() })
        };
        let (fa, fb) = tokio::join!(a.fold_spend(), b.fold_spend());
        assert!(fa.unwrap() + fb.unwrap() > 0, "changes were folded");
        assert!(!racing.await.unwrap(), "the cap holds across a fold");
        assert_eq!(a.fold_spend().await.unwrap(), 0, "each change folded once");
        assert_eq!(a.spend("keep", "2026-11-21").await.unwrap(), before);
        assert_eq!(
            b.spend("keep", "2026-12-01").await.unwrap().reserved,
            Fen(4000)
        );
    }

    /// A node whose lease ran out, or whose name a newer start took over,
    /// writes nothing: no plan, no transition; the newer holder does.
    #[tokio::test]
    async fn a_node_without_its_lease_writes_nothing() {
        let db = TestDb::migrated().await;
        let (old, lease) = named(&db, "east", Duration::from_secs(60)).await;
        old.plan(&request("k1"), NOW).await.unwrap().unwrap();
        // A second start under the name (the first one hung, say).
        let (new, _) = named(&db, "east", Duration::from_secs(60)).await;
        let fenced = old.modify("k1", |o| change::mark_sent(o, NOW)).await;
        assert!(matches!(fenced, Err(LedgerError::Fenced(_))), "{fenced:?}");
        assert!(matches!(
            old.plan(&request("k2"), NOW).await,
            Err(LedgerError::Fenced(_))
        ));
        let client = db.connect().await;
        assert!(
            !lease::renew(&client, &lease, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(
            new.get("k1").await.unwrap().unwrap().state,
            OrderState::Planned
        );
        new.modify("k1", |o| change::mark_sent(o, NOW))
            .await
            .unwrap();
        // A lease that runs out (on the database's clock) fences too, and
        // cannot be renewed after the fact.
        let (brief, brief_lease) = named(&db, "west", Duration::from_millis(300)).await;
        assert!(
            lease::renew(&client, &brief_lease, Duration::from_millis(300))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(matches!(
            brief.plan(&request("k3"), NOW).await,
            Err(LedgerError::Fenced(_))
        ));
        assert!(
            !lease::renew(&client, &brief_lease, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(new.get("k3").await.unwrap(), None, "nothing was written");
    }

    /// A node that dies mid-payment: another node finds what it left in
    /// flight once its lease has run out; its `sent` order becomes
    /// `unknown` (never re-sent) with its money still held, its `planned`
    /// order `failed` and retryable with its hold released. Live nodes'
    /// orders are left alone, and a second takeover changes nothing.
    #[tokio::test]
    async fn a_dead_nodes_orders_in_flight_are_taken_over_never_resent() {
        let db = TestDb::migrated().await;
        let unbudgeted = |key: &str| PlanRequest {
            budget: Budget::default(),
            ..request(key)
        };
        let (dead, _) = named(&db, "east", Duration::from_millis(400)).await;
        let live = node(&db).await;
        dead.plan(&unbudgeted("sent"), NOW).await.unwrap().unwrap();
        dead.modify("sent", |o| change::mark_sent(o, NOW))
            .await
            .unwrap();
        dead.plan(&unbudgeted("planned"), NOW)
            .await
            .unwrap()
            .unwrap();
        live.plan(&unbudgeted("mine"), NOW).await.unwrap().unwrap();
        assert!(
            live.recover_orphans(NOW).await.unwrap().is_empty(),
            "east's lease still runs"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut changed: Vec<(String, OrderState)> = live
            .recover_orphans(NOW + 5)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.state))
            .collect();
        changed.sort();
        assert_eq!(
            changed,
            [
                ("planned".to_owned(), OrderState::Failed),
                ("sent".to_owned(), OrderState::Unknown),
            ]
        );
        let retry = live.get("planned").await.unwrap().unwrap();
        assert!(retry.may_retry(NOW + 5, 3), "{retry:?}");
        assert_eq!(
            live.get("mine").await.unwrap().unwrap().state,
            OrderState::Planned
        );
        // The unknown one keeps its 2000 held; the failed one let go.
        assert_eq!(
            live.spend("keep", "2026-11-21").await.unwrap().reserved,
            Fen(4000)
        );
        assert!(live.recover_orphans(NOW + 6).await.unwrap().is_empty());
        assert!(matches!(
            dead.modify("sent", |o| change::mark_sent(o, NOW)).await,
            Err(LedgerError::Fenced(_))
        ));
    }

    /// Lists, finds and counts read the shared table: every node sees
    /// every node's orders.
    #[tokio::test]
    async fn every_node_lists_finds_and_counts_all_orders() {
        let db = TestDb::migrated().await;
        let (a, b) = (node(&db).await, node(&db).await);
        let unbudgeted = |key: &str, at: i64| {
            let mut r = PlanRequest {
                budget: Budget::default(),
                ..request(key)
            };
            r.why = format!("at {at}");
            r
        };
        a.plan(&unbudgeted("abc1", NOW), NOW)
            .await
            .unwrap()
            .unwrap();
        b.plan(&unbudgeted("abd2", NOW - 10), NOW - 10)
            .await
            .unwrap()
            .unwrap();
        b.plan(&unbudgeted("x_9", NOW + 10), NOW + 10)
            .await
            .unwrap()
            .unwrap();
        a.modify("abc1", |o| change::mark_sent(o, NOW))
            .await
            .unwrap();
        let keys = |os: Vec<Order>| os.into_iter().map(|o| o.key).collect::<Vec<_>>();
        assert_eq!(keys(b.orders(None).await.unwrap()), ["abd2", "abc1", "x_9"]);
        assert_eq!(
            keys(b.orders(Some(OrderState::Sent)).await.unwrap()),
            ["abc1"]
        );
        assert_eq!(keys(a.orders_of("acct-x_9").await.unwrap()), ["x_9"]);
        assert_eq!(b.find("abc").await.unwrap().key, "abc1");
        assert!(
            b.find("ab")
                .await
                .unwrap_err()
                .to_string()
                .contains("several")
        );
        assert!(matches!(b.find("zz").await, Err(LedgerError::NotFound(_))));
        // `_` and `%` are the key's own characters, not patterns.
        assert!(matches!(b.find("x%").await, Err(LedgerError::NotFound(_))));
        assert_eq!(b.find("x_").await.unwrap().key, "x_9");
        let counts = a.count_by_state().await.unwrap();
        assert_eq!(
            (
                counts[&OrderState::Planned],
                counts[&OrderState::Sent],
                counts[&OrderState::Failed]
            ),
            (2, 1, 0)
        );
        assert_eq!(a.count_unverified().await.unwrap(), 0);
        a.modify("abc1", |o| {
            change::record_reply(
                o,
                NOW,
                OutcomeClass::Accepted,
                "codeid 10000",
                AttemptResult::Succeeded {
                    price: None,
                    vendor_orderid: None,
                    verify_deadline: NOW,
                },
            )
        })
        .await
        .unwrap();
        b.modify("abc1", |o| {
            o.verification = crate::ledger::Verification::Unverified { at: NOW + 1 };
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(a.count_unverified().await.unwrap(), 1);
    }
}
