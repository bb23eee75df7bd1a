//! Orders in PostgreSQL. A plan is one transaction that locks the order's
//! row and, under a cap, its periods' spend rows (`spend.rs`), so a budget
//! is checked against rows no other node can change meanwhile. A later
//! transition applies the same change as sled (`ledger/change.rs`) to the
//! order as this node last wrote it (or as read) and writes it in one
//! statement only if the order's version is still the one it started
//! from and the node's lease holds; when another writer got in first it
//! is made again under the row lock. Whatever node makes it, no
//! transition is written over another.

use deadpool_postgres::GenericClient;

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::batch::Batcher;
use super::flushes::Flushes;
use super::lease::Lease;
use super::seen::{Kept, Read, Writing};
use super::write::{Plans, Transition, Transitions, Write, write};
use super::{Prepared, db, from_json, pool_err, spend};
use crate::ledger::VendorOrder;
use crate::ledger::derived::Share;
use crate::ledger::{LedgerError, Order, OrderState, PlanRequest, Refusal, Spend, change};

/// The orders, budgets and vendor ids of a PostgreSQL ledger, as one node
/// writes them: every write checks the node's lease and fence first.
#[derive(Clone)]
pub struct PgOrders {
    pool: Pool,
    lease: Lease,
    /// The unsettled orders this node wrote last, with their versions: a
    /// transition of one starts from here instead of reading it. Stale
    /// when another node wrote the order since; the compare-and-set then
    /// fails and the order is read again.
    written: Arc<Kept>,
    /// Transitions, and plans under no cap, written many to a statement
    /// and a commit.
    transitions: Batcher<Transitions>,
    plans: Batcher<Plans>,
    /// Whether the plans written without waiting for the WAL flush are
    /// durable yet.
    flushes: Arc<Flushes>,
    /// Accounts' orders as checks read them with their tokens.
    read: Arc<Read>,
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

/// Reads an order with its version, and whether `lease` still holds, in
/// one statement: under the row lock for the transaction when `lock`,
/// else without (the write that follows compares the version).
async fn versioned(
    c: &impl GenericClient,
    key: &str,
    lease: &Lease,
    lock: bool,
) -> Result<(Order, i64, bool), LedgerError> {
    macro_rules! read {
        () => {
            "SELECT o.record, o.version,
                    EXISTS (SELECT 1 FROM vipd_nodes
                            WHERE name = $2 AND fence = $3 AND lease_until > now())
             FROM vipd_orders o WHERE o.key = $1"
        };
    }
    let sql = match lock {
        true => concat!(read!(), " FOR UPDATE OF o"),
        false => read!(),
    };
    let row = c
        .opt(sql, &[&key, &lease.node, &lease.fence])
        .await
        .map_err(db)?
        .ok_or_else(|| LedgerError::NotFound(key.to_owned()))?;
    Ok((decode(key, row.get(0))?, row.get(1), row.get(2)))
}

/// Reads an order and its version, if there is one, and locks its row for
/// the transaction.
async fn locked_opt(
    tx: &impl GenericClient,
    key: &str,
) -> Result<Option<(Order, i64)>, LedgerError> {
    let row = tx
        .opt(
            "SELECT record, version FROM vipd_orders WHERE key = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(db)?;
    row.map(|r| decode(key, r.get(0)).map(|o| (o, r.get(1))))
        .transpose()
}

impl PgOrders {
    /// Orders written by the node holding `lease`; starts its writers (on
    /// the current runtime). `relaxed` is a pool whose commits do not wait
    /// for the WAL flush: the plans under no cap are written there, made
    /// durable by the flushed commit that follows ([`PgOrders::durable`]).
    pub fn new(pool: Pool, relaxed: Pool, lease: Lease) -> PgOrders {
        let flushes = Arc::new(Flushes::default());
        PgOrders {
            transitions: Batcher::start(
                pool.clone(),
                Transitions {
                    lease: lease.clone(),
                    flushes: flushes.clone(),
                },
            ),
            plans: Batcher::start(
                relaxed,
                Plans {
                    lease: lease.clone(),
                    flushes: flushes.clone(),
                },
            ),
            pool,
            lease,
            written: Default::default(),
            flushes,
            read: Default::default(),
        }
    }

    /// Waits until the node's writes are durable: of the order `key`, or
    /// of every order (`None`). Every write but a plan under no cap waits
    /// for its own flush; a plan is covered by any flushed commit that
    /// started after it (in the paying path, its sent mark's). Only when
    /// none has is a commit run here: a write of the node's own row under
    /// its fence (a commit that wrote nothing does not wait for a flush).
    pub async fn durable(&self, key: Option<&str>) -> Result<(), LedgerError> {
        let Some(covers) = self.flushes.needed(key) else {
            return Ok(());
        };
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .run(
                "UPDATE vipd_nodes SET fence = fence WHERE name = $1 AND fence = $2",
                &[&self.lease.node, &self.lease.fence],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            return Err(self.lease.lost());
        }
        self.flushes.ran(covers);
        Ok(())
    }

    /// Waits for durability asked of [`PgOrders::durable`], and the
    /// commits it ran for them.
    pub fn commits(&self) -> crate::ledger::store::Commits {
        self.flushes.commits()
    }

    /// Whether this node wrote an order of (rule, account) that is not
    /// settled yet, as far as it knows.
    pub fn in_flight(&self, rule: &str, account: &str) -> bool {
        self.written.in_flight(rule, account)
    }

    /// [`Ledger::plan`](crate::ledger::Ledger::plan) across nodes: the
    /// key's row and the two spend rows are locked, and the database's
    /// unique index refuses a second unsettled order for the account and
    /// membership whatever node plans it.
    ///
    /// A plan under no cap is first tried as one statement that inserts
    /// the order where nothing stands in its way (no other order of the
    /// account, no hold, the lease holds, the key is new); when something
    /// does, the plan is made again as one transaction that names it.
    pub async fn plan(
        &self,
        req: &PlanRequest,
        now: i64,
    ) -> Result<Result<Order, Refusal>, LedgerError> {
        let _writing = Writing::start(&self.read, &req.account);
        let uncapped = req.budget.per_day.is_none() && req.budget.per_month.is_none();
        if uncapped && !self.written.has(&req.key) {
            let free = Spend::default();
            let approval = change::needs_approval(None, req, free, free);
            let (mut order, added) = change::next_attempt(None, req, now, approval);
            order.stamp_from(added, unix_ms());
            if self.plans.write(Transition::of(None, 0, &order)).await? {
                self.written.remember(&order, 0);
                return Ok(Ok(order));
            }
        }
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let covers = self.flushes.before_flushed();
        let tx = client.transaction().await.map_err(db)?;
        // The lease, the hold and another unsettled order of the account,
        // in one statement, at the transaction's start.
        let first = tx
            .one(
                "SELECT EXISTS (SELECT 1 FROM vipd_nodes
                                WHERE name = $1 AND fence = $2 AND lease_until > now()),
                        (SELECT record FROM vipd_hold LIMIT 1),
                        o.key, o.rule, o.state
                 FROM (SELECT 1) AS one
                 LEFT JOIN LATERAL (SELECT key, rule, state FROM vipd_orders
                                    WHERE account = $3 AND membership = $4 AND unsettled
                                      AND key <> $5 LIMIT 1) o ON true",
                &[
                    &self.lease.node,
                    &self.lease.fence,
                    &req.account,
                    &req.membership.as_str(),
                    &req.key,
                ],
            )
            .await
            .map_err(db)?;
        if !first.get::<_, bool>(0) {
            return Err(self.lease.lost());
        }
        if let Some(hold) = first.get::<_, Option<serde_json::Value>>(1) {
            let hold: crate::ledger::Hold = from_json("vipd_hold", "hold", hold)?;
            if let Some(why) = hold.of(&req.account) {
                return Ok(Err(Refusal::Held { why }));
            }
        }
        let (existing, version) = match locked_opt(&tx, &req.key).await? {
            Some((o, v)) => (Some(o), Some(v)),
            None => (None, None),
        };
        if let Some(refusal) = existing
            .as_ref()
            .and_then(|o| change::refuses_retry(o, req, now))
        {
            return Ok(Err(refusal));
        }
        // One period, one payment, across rules: named here; the unique
        // index refuses it too when two nodes plan at the same moment.
        if let Some(key) = first.get::<_, Option<&str>>(2) {
            let (rule, state): (&str, &str) = (first.get(3), first.get(4));
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
        let capped: Vec<&str> = [
            (req.budget.per_day, req.day.as_str()),
            (req.budget.per_month, req.month.as_str()),
        ]
        .iter()
        .filter(|(cap, _)| cap.is_some())
        .map(|(_, period)| *period)
        .collect();
        let spent = spend::locked(&tx, &req.rule, &capped).await?;
        let of = |period: &str| {
            capped
                .iter()
                .position(|p| *p == period)
                .map_or(Spend::default(), |i| spent[i])
        };
        let own = |period: &str| change::without_own_hold(existing.as_ref(), period, of(period));
        let (day, month) = (own(&req.day), own(&req.month));
        if let Some(refusal) = change::over_budget(req, day, month) {
            return Ok(Err(refusal));
        }
        let approval = change::needs_approval(existing.as_ref(), req, day, month);
        let was = existing.as_ref().map(Share::of);
        let (mut order, added) = change::next_attempt(existing, req, now, approval);
        order.stamp_from(added, unix_ms());
        let how = match (&was, version) {
            (Some(share), Some(v)) => Write::Over(share, v),
            _ => Write::New,
        };
        if let Err(e) = write(&tx, &self.lease, how, &order).await {
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
        self.flushes.flushed(covers);
        self.written.remember(&order, version.map_or(0, |v| v + 1));
        Ok(Ok(order))
    }

    /// One transition of one order, written only if nobody wrote the order
    /// since it was read: from the order as this node last wrote it, or
    /// read (with its version) when it is not kept, and written with the
    /// other transitions waiting at the time, in one statement and one
    /// commit (`batch.rs`). When another writer got in first, the
    /// transition is made again under the order's row lock, where nobody
    /// can. `f` may run more than once, on each reading; only the written
    /// one counts.
    pub(crate) async fn modify<R>(
        &self,
        key: &str,
        f: impl Fn(&mut Order) -> Result<R, LedgerError>,
    ) -> Result<(Order, R), LedgerError> {
        let kept = self.written.take(key);
        let from_kept = kept.is_some();
        let (mut order, version) = match kept {
            Some(k) => k,
            None => {
                let client = self.pool.get().await.map_err(pool_err)?;
                match versioned(&client, key, &self.lease, false).await? {
                    (_, _, false) => return Err(self.lease.lost()),
                    (o, v, true) => (o, v),
                }
            }
        };
        let _writing = Writing::start(&self.read, &order.account);
        let was = Share::of(&order);
        match change::apply(&mut order, unix_ms(), &f) {
            Ok(r) => {
                let transition = Transition::of(Some(&was), version, &order);
                if self.transitions.write(transition).await? {
                    self.written.remember(&order, version + 1);
                    return Ok((order, r));
                }
            }
            // What this node kept may be stale: decide on a reading.
            Err(_) if from_kept => {}
            Err(e) => return Err(e),
        }
        // Another writer got in first (or the lease is gone): under the
        // row lock, nobody else can.
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let covers = self.flushes.before_flushed();
        let tx = client.transaction().await.map_err(db)?;
        let (mut order, version, held) = versioned(&tx, key, &self.lease, true).await?;
        if !held {
            return Err(self.lease.lost());
        }
        let was = Share::of(&order);
        let r = change::apply(&mut order, unix_ms(), &f)?;
        if !write(&tx, &self.lease, Write::Over(&was, version), &order)
            .await
            .map_err(db)?
        {
            return Err(self.lease.lost());
        }
        tx.commit().await.map_err(db)?;
        self.flushes.flushed(covers);
        self.written.remember(&order, version + 1);
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
    pub(crate) async fn recover_orphans(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        // Planned and sent orders are unsettled: the partial index of the
        // unsettled ones finds them without reading every order.
        let orphans: Vec<String> = client
            .all(
                "SELECT o.key FROM vipd_orders o
                 WHERE o.unsettled AND o.state IN ('planned', 'sent')
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
            .opt("SELECT record FROM vipd_orders WHERE key = $1", &[&key])
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
        let rows = client.all(sql, params).await.map_err(db)?;
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

    /// As a check's read of an account starts ([`PgOrders::keep_read`]).
    pub(crate) fn read_starts(&self) -> u64 {
        self.read.started()
    }

    /// The account's orders as read with its token by a read that started
    /// at `started` ([`Read`]): kept for the evidence step that follows,
    /// unless this node wrote one since or one does not decode (the next
    /// read reports it).
    pub(crate) fn keep_read(
        &self,
        account: &str,
        started: u64,
        rows: Vec<(String, serde_json::Value)>,
    ) {
        let orders: Result<Vec<Order>, _> = rows.into_iter().map(|(k, v)| decode(&k, v)).collect();
        if let Ok(orders) = orders {
            self.read.keep(account, started, orders);
        }
    }

    /// Every order of one account, in key order: as read with its token
    /// less than a second ago, if so, else read now.
    pub async fn orders_of(&self, account: &str) -> Result<Vec<Order>, LedgerError> {
        if let Some(orders) = self.read.take(account) {
            return Ok(orders);
        }
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
            .all(
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
            .one(
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
            .one(spend::SPEND, &[&rule, &period])
            .await
            .map_err(db)?;
        Ok(spend::spend_of(&row))
    }

    /// Folds the spend changes appended so far into their periods' rows
    /// ([`spend::fold_all`]); how many changes were folded.
    pub(crate) async fn fold_spend(&self) -> Result<u64, LedgerError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        spend::fold_all(&mut client).await
    }

    pub async fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<VendorOrder>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .opt(
                "SELECT key, attempt FROM vipd_vendor_orders WHERE provider = $1 AND vendor_orderid = $2",
                &[&provider, &vendor_orderid],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| VendorOrder {
            key: r.get(0),
            attempt: r.get::<_, Option<i32>>(1).map(|n| n as u32),
        }))
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
#[path = "orders_tests.rs"]
mod tests;
