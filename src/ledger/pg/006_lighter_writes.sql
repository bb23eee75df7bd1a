-- vipd schema 6: an order's writes touch fewer index entries.
--
-- A vendor order id's row no longer references its order. The reference
-- cost every new order a lookup and a row lock on the order it had just
-- inserted, and guarded nothing the writes do not: a vendor id is written
-- only in the statement that writes its order, and only when that order's
-- row is written; orders are never deleted. A callback whose vendor id
-- names no order is answered "unknown order".
ALTER TABLE vipd_vendor_orders DROP CONSTRAINT IF EXISTS vipd_vendor_orders_key_fkey;

-- No index on an order's state. Its transitions (planned, sent, paid and
-- waiting to be shown) change the state and little else: with no index
-- on it, PostgreSQL writes each as a heap-only update on the same page,
-- with no new entry in any index. What looked orders up by state reads
-- the unsettled ones (the partial unique index) or every order.
DROP INDEX IF EXISTS vipd_orders_by_state;

-- Room on each page for those updates (new pages only: pages written
-- before keep theirs).
ALTER TABLE vipd_orders SET (fillfactor = 70);
