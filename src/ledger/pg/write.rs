//! How an order is written to `vipd_orders`: its row's values, and the
//! one statement that writes the row with what follows from it (spend
//! changes, vendor ids), as a new order or as a compare-and-set on its
//! version under the writer's lease.

use deadpool_postgres::GenericClient;

use super::Prepared;
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
/// vendor ids it newly names) in one statement: inserted when `was` is
/// none, else updated if its version is still the one read with `was`
/// and `lease` holds. Whether it wrote.
pub(super) async fn write(
    c: &impl GenericClient,
    lease: &Lease,
    was: Option<(&Share, i64)>,
    o: &Order,
) -> Result<bool, tokio_postgres::Error> {
    let now = Share::of(o);
    let before = was.map(|(share, _)| share);
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
    let version = was.map(|(_, v)| v);
    let sql = match &version {
        None => INSERT_WITH_EFFECTS,
        Some(v) => {
            params.push(v);
            params.push(&lease.node);
            UPDATE_WITH_EFFECTS
        }
    };
    let written: i64 = c.one(sql, &params).await?.get(0);
    Ok(written == 1)
}
