-- vipd schema 5: a version on each order, for transitions written as one
-- compare-and-set statement.
--
-- Every write of an order adds one to its version. A transition reads the
-- order (or takes it from what its node last wrote), applies its change,
-- and writes it only where the version is still the one it read and the
-- node's lease holds: a write by anyone else in between (another node's
-- callback, a take-over) makes it read again, never overwrite.
ALTER TABLE vipd_orders ADD COLUMN version bigint NOT NULL DEFAULT 0;
