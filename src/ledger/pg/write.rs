//! How orders are written to `vipd_orders`, each with what follows from
//! it (spend changes, vendor ids) in the same statement: one order, as a
//! new one or as a compare-and-set on its version under the writer's
//! lease (inside a plan's or a retried transition's transaction); or many
//! orders of one node in one statement a batch (`batch.rs`): its
//! transitions, and its plans under no cap.

use deadpool_postgres::GenericClient;

use super::Prepared;
use super::batch::Batch;
use super::flushes::Flushes;
use super::lease::Lease;
use crate::ledger::derived::Share;
use crate::ledger::{Order, change};

/// An order as a row of `vipd_orders`: the values of [`INSERT_ORDER`]
/// and of the statements that write an order, in their parameters' order.
pub(super) struct OrderRow<'a> {
    o: &'a Order,
    membership: &'static str,
    state: &'static str,
    unsettled: bool,
    record: serde_json::Value,
    fence: i64,
}

impl<'a> OrderRow<'a> {
    /// `o` as written by the node with `fence` (0: none).
    pub(super) fn of(o: &'a Order, fence: i64) -> OrderRow<'a> {
        OrderRow {
            o,
            membership: o.membership.as_str(),
            state: o.state.as_str(),
            unsettled: change::unsettled(o),
            record: serde_json::to_value(o).expect("orders always serialize"),
            fence,
        }
    }

    pub(super) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 8] {
        [
            &self.o.key,
            &self.o.account,
            &self.membership,
            &self.o.rule,
            &self.state,
            &self.unsettled,
            &self.record,
            &self.fence,
        ]
    }
}

/// The text of [`INSERT_ORDER`], for the statements built on it.
macro_rules! insert_order {
    () => {
        "INSERT INTO vipd_orders (key, account, membership, rule, state, unsettled, record, fence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    };
}

/// A new order's row: a second node's insert of the same key fails on the
/// primary key.
pub(super) const INSERT_ORDER: &str = insert_order!();

/// What follows from an order's row, in the same statement and only when
/// the row was written: its spend changes, appended (never updated: no
/// other order's transition waits on them), and the vendor ids it newly
/// names. `o` is the row's CTE; the statement returns whether it wrote.
macro_rules! with_effects {
    ($row:expr) => {
        concat!(
            "WITH o AS (",
            $row,
            " RETURNING key),
             c AS (INSERT INTO vipd_spend_changes (rule, period, reserved, settled)
                   SELECT $4, p, r, s FROM unnest($9::text[], $10::bigint[], $11::bigint[]) AS t(p, r, s)
                   WHERE EXISTS (SELECT 1 FROM o)),
             v AS (INSERT INTO vipd_vendor_orders (provider, vendor_orderid, key, attempt)
                   SELECT $12, id, $1, n FROM unnest($13::text[], $14::int[]) AS t(id, n)
                   WHERE EXISTS (SELECT 1 FROM o)
                   ON CONFLICT (provider, vendor_orderid)
                   DO UPDATE SET key = EXCLUDED.key, attempt = EXCLUDED.attempt)
             SELECT count(*) FROM o"
        )
    };
}

/// A new order with its effects.
const INSERT_WITH_EFFECTS: &str = with_effects!(insert_order!());

/// How an order is written.
#[derive(Clone, Copy)]
pub(super) enum Write<'a> {
    /// As a new order (a second insert of its key fails).
    New,
    /// Over the order as read (its share and version), if still so.
    Over(&'a Share, i64),
}

/// A changed order with its effects, written only if its version is still
/// `$15` and the writer's lease (node `$16`, fence `$8`) holds.
const UPDATE_WITH_EFFECTS: &str = with_effects!(
    "UPDATE vipd_orders SET state = $5, unsettled = $6, record = $7, fence = $8,
            updated_at = now(), version = version + 1
     WHERE key = $1 AND account = $2 AND membership = $3 AND rule = $4 AND version = $15
       AND EXISTS (SELECT 1 FROM vipd_nodes n
                   WHERE n.name = $16 AND n.fence = $8 AND n.lease_until > now())"
);

/// Writes an order and what follows from it (its spend changes and the
/// vendor ids it newly names) in one statement, as `how` says; whether it
/// wrote.
pub(super) async fn write(
    c: &impl GenericClient,
    lease: &Lease,
    how: Write<'_>,
    o: &Order,
) -> Result<bool, tokio_postgres::Error> {
    let now = Share::of(o);
    let before = match how {
        Write::Over(share, _) => Some(share),
        Write::New => None,
    };
    let row = OrderRow::of(o, lease.fence);
    let changes = Share::spend_changes(before, &now);
    let periods: Vec<&str> = changes.iter().map(|(p, _, _)| p.as_str()).collect();
    let reserved: Vec<i64> = changes.iter().map(|(_, r, _)| r.0).collect();
    let settled: Vec<i64> = changes.iter().map(|(_, _, s)| s.0).collect();
    let (ids, attempts): (Vec<&str>, Vec<Option<i32>>) = Share::new_vendor_ids(before, &now)
        .map(|(id, n)| (id.as_str(), n.map(|n| n as i32)))
        .unzip();
    let mut params = row.params().to_vec();
    params.extend::<[&(dyn tokio_postgres::types::ToSql + Sync); 6]>([
        &periods,
        &reserved,
        &settled,
        &o.provider,
        &ids,
        &attempts,
    ]);
    let sql = match &how {
        Write::New => INSERT_WITH_EFFECTS,
        Write::Over(_, version) => {
            params.push(version);
            params.push(&lease.node);
            UPDATE_WITH_EFFECTS
        }
    };
    let written: i64 = c.one(sql, &params).await?.get(0);
    Ok(written == 1)
}

/// One order to write in a batch: a new one (where nothing stands in its
/// way) or a transition as a compare-and-set on the version it was read
/// at, with what follows from it.
pub(super) struct Transition {
    key: String,
    account: String,
    membership: &'static str,
    rule: String,
    state: &'static str,
    unsettled: bool,
    record: serde_json::Value,
    version: i64,
    provider: String,
    /// (period, reserved, settled) changes to the rule's spend.
    changes: Vec<(String, i64, i64)>,
    /// Vendor ids the order newly names, with their attempt.
    ids: Vec<(String, Option<i32>)>,
}

impl Transition {
    /// `o`, changed from `was` as read at `version`, or new (`was` none).
    pub(super) fn of(was: Option<&Share>, version: i64, o: &Order) -> Transition {
        let now = Share::of(o);
        Transition {
            key: o.key.clone(),
            account: o.account.clone(),
            membership: o.membership.as_str(),
            rule: o.rule.clone(),
            state: o.state.as_str(),
            unsettled: change::unsettled(o),
            record: serde_json::to_value(o).expect("orders always serialize"),
            version,
            provider: o.provider.clone(),
            changes: Share::spend_changes(was, &now)
                .into_iter()
                .map(|(p, r, s)| (p, r.0, s.0))
                .collect(),
            ids: Share::new_vendor_ids(was, &now)
                .map(|(id, n)| (id.clone(), n.map(|n| n as i32)))
                .collect(),
        }
    }
}

/// The effects of a batch's orders, as its statement's first parameters:
/// `$1`-`$5` the spend changes (key, rule, period, reserved, settled),
/// `$6`-`$9` the vendor ids (key, provider, id, attempt). Each applies only
/// if its order's row was written (the `o` CTE, returning `key`).
macro_rules! many_with_effects {
    ($rows:expr) => {
        concat!(
            "WITH o AS (",
            $rows,
            " RETURNING vipd_orders.key),
             c AS (INSERT INTO vipd_spend_changes (rule, period, reserved, settled)
                   SELECT rule, p, r, s
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
                          AS t(key, rule, p, r, s)
                    WHERE t.key IN (SELECT key FROM o)),
             v AS (INSERT INTO vipd_vendor_orders (provider, vendor_orderid, key, attempt)
                   SELECT provider, id, key, n
                     FROM unnest($6::text[], $7::text[], $8::text[], $9::int[]) AS t(key, provider, id, n)
                    WHERE t.key IN (SELECT key FROM o)
                   ON CONFLICT (provider, vendor_orderid)
                   DO UPDATE SET key = EXCLUDED.key, attempt = EXCLUDED.attempt)
             SELECT key FROM o"
        )
    };
}

/// Transitions, written where the order's version is still the one read
/// and the node's lease (fence `$10`, node `$11`) holds: `$12`-`$16` the
/// orders (key, state, unsettled, record, version).
const UPDATE_MANY_WITH_EFFECTS: &str = many_with_effects!(
    "UPDATE vipd_orders SET state = t.state, unsettled = t.unsettled, record = t.record,
            fence = $10, updated_at = now(), version = vipd_orders.version + 1
       FROM unnest($12::text[], $13::text[], $14::bool[], $15::json[], $16::bigint[])
            AS t(key, state, unsettled, record, version)
      WHERE vipd_orders.key = t.key AND vipd_orders.version = t.version
        AND EXISTS (SELECT 1 FROM vipd_nodes n
                    WHERE n.name = $11 AND n.fence = $10 AND n.lease_until > now())"
);

/// New orders, each written only where nothing stands in its way: the
/// node's lease holds, no hold is set, no other order of the account and
/// membership is unsettled, and no order has its key (`ON CONFLICT DO
/// NOTHING`: a race with another node's plan writes nothing either). Not
/// written says only that something was in the way; the plan then finds
/// out what. `$12`-`$18` the orders (key, account, membership, rule,
/// state, unsettled, record).
const INSERT_MANY_IF_FREE_WITH_EFFECTS: &str = many_with_effects!(
    "INSERT INTO vipd_orders (key, account, membership, rule, state, unsettled, record, fence)
     SELECT t.key, t.account, t.membership, t.rule, t.state, t.unsettled, t.record, $10
       FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                   $17::bool[], $18::json[])
            AS t(key, account, membership, rule, state, unsettled, record)
      WHERE EXISTS (SELECT 1 FROM vipd_nodes n
                    WHERE n.name = $11 AND n.fence = $10 AND n.lease_until > now())
        AND NOT EXISTS (SELECT 1 FROM vipd_hold)
        AND NOT EXISTS (SELECT 1 FROM vipd_orders x
                        WHERE x.account = t.account AND x.membership = t.membership
                          AND x.unsettled)
      ORDER BY t.key
     ON CONFLICT DO NOTHING"
);

/// Writes `rows` (each key once, in key order: every node locks rows in
/// the same order) with `sql`, the batch's statement given its rows'
/// `columns`; the keys written.
async fn write_many<'a>(
    c: &deadpool_postgres::Client,
    lease: &'a Lease,
    rows: &'a [Transition],
    sql: &str,
    columns: impl FnOnce(&[&'a Transition]) -> Vec<Column<'a>>,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    // An order twice in one batch: its first row is written, the others
    // are told they were not (their caller makes them again).
    let mut seen = std::collections::HashSet::new();
    let mut first: Vec<&Transition> = rows.iter().filter(|t| seen.insert(&t.key)).collect();
    first.sort_by(|a, b| a.key.cmp(&b.key));
    let (mut ch_keys, mut ch_rules, mut periods, mut reserved, mut settled) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut id_keys, mut providers, mut ids, mut attempts) = (vec![], vec![], vec![], vec![]);
    for t in &first {
        for (p, r, s) in &t.changes {
            ch_keys.push(t.key.as_str());
            ch_rules.push(t.rule.as_str());
            periods.push(p.as_str());
            reserved.push(*r);
            settled.push(*s);
        }
        for (id, n) in &t.ids {
            id_keys.push(t.key.as_str());
            providers.push(t.provider.as_str());
            ids.push(id.as_str());
            attempts.push(*n);
        }
    }
    let rows_columns = columns(&first);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &ch_keys,
        &ch_rules,
        &periods,
        &reserved,
        &settled,
        &id_keys,
        &providers,
        &ids,
        &attempts,
        &lease.fence,
        &lease.node,
    ];
    params.extend(
        rows_columns
            .iter()
            .map(|c| -> &(dyn tokio_postgres::types::ToSql + Sync) { &**c }),
    );
    let written: std::collections::HashSet<String> = c
        .all(sql, &params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut told = std::collections::HashSet::new();
    Ok(rows
        .iter()
        .map(|t| written.contains(&t.key) && told.insert(&t.key))
        .collect())
}

/// A column of a batch's rows, as a statement parameter.
type Column<'a> = Box<dyn tokio_postgres::types::ToSql + Sync + Send + 'a>;

/// The column `f` of the batch's rows.
fn column<'a, T: tokio_postgres::types::ToSql + Sync + Send + 'a>(
    rows: &[&'a Transition],
    f: impl Fn(&'a Transition) -> T,
) -> Column<'a> {
    Box::new(rows.iter().map(|t| f(t)).collect::<Vec<T>>())
}

/// Transitions of many orders by one node, written as one statement a
/// batch: each order's row only if its version is still the one read and
/// the node's lease holds, its spend changes and vendor ids only if its
/// row was written. Each caller learns whether its own was.
/// Their commits wait for the WAL flush, and so cover the plans before
/// them ([`Flushes`]).
pub(super) struct Transitions {
    pub(super) lease: Lease,
    pub(super) flushes: std::sync::Arc<Flushes>,
}

impl Batch for Transitions {
    type Row = Transition;
    type Out = bool;
    async fn write(
        &self,
        c: &deadpool_postgres::Client,
        rows: &[Transition],
    ) -> Result<Vec<bool>, tokio_postgres::Error> {
        let covers = self.flushes.before_flushed();
        let written = write_many(c, &self.lease, rows, UPDATE_MANY_WITH_EFFECTS, |first| {
            vec![
                column(first, |t| t.key.as_str()),
                column(first, |t| t.state),
                column(first, |t| t.unsettled),
                column(first, |t| &t.record),
                column(first, |t| t.version),
            ]
        })
        .await?;
        self.flushes.flushed(covers);
        Ok(written)
    }
}

/// New orders of many plans by one node, written as one statement a batch
/// where nothing stands in their way; each caller learns whether its own
/// was (when not, its plan is made again as a transaction that names
/// what stood in the way).
///
/// Written on a connection whose commits do not wait for the WAL flush:
/// a plan is durable once a later commit that waits is ([`Flushes`]).
pub(super) struct Plans {
    pub(super) lease: Lease,
    pub(super) flushes: std::sync::Arc<Flushes>,
}

impl Batch for Plans {
    type Row = Transition;
    type Out = bool;
    async fn write(
        &self,
        c: &deadpool_postgres::Client,
        rows: &[Transition],
    ) -> Result<Vec<bool>, tokio_postgres::Error> {
        let written = write_many(
            c,
            &self.lease,
            rows,
            INSERT_MANY_IF_FREE_WITH_EFFECTS,
            |first| {
                vec![
                    column(first, |t| t.key.as_str()),
                    column(first, |t| t.account.as_str()),
                    column(first, |t| t.membership),
                    column(first, |t| t.rule.as_str()),
                    column(first, |t| t.state),
                    column(first, |t| t.unsettled),
                    column(first, |t| &t.record),
                ]
            },
        )
        .await;
        // Whether or not it is known to have committed: a statement whose
        // connection failed may have.
        self.flushes.relaxed(rows.iter().map(|t| t.key.as_str()));
        written
    }
}
