-- vipd schema 1: the orders, their budgets and their vendor ids.
--
-- An order is one row under its key: the key is the primary key, so a
-- second order for one key cannot exist. `record` is the order as the sled
-- store keeps it (JSON); the columns beside it are what the database must
-- see to refuse, index and fence. Records are `json`, not `jsonb`: a
-- vendor's reply may hold a NUL (`\u0000`), which `jsonb` refuses, and a
-- record must never be lost to what a vendor sent.
CREATE TABLE vipd_orders (
    key         text PRIMARY KEY,
    account     text NOT NULL,
    membership  text NOT NULL,
    rule        text NOT NULL,
    state       text NOT NULL,
    -- Open, or paid and not shown yet (change::unsettled): while one is,
    -- no other key may pay for the same account and membership.
    unsettled   boolean NOT NULL,
    -- The fence of the node that wrote it last (0: none).
    fence       bigint NOT NULL DEFAULT 0,
    record      json NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- One period, one payment, across rules and nodes: the database itself
-- refuses a second unsettled order for an account and membership.
CREATE UNIQUE INDEX vipd_orders_one_unsettled
    ON vipd_orders (account, membership) WHERE unsettled;
CREATE INDEX vipd_orders_by_state ON vipd_orders (state);
-- An account's orders: read by every check.
CREATE INDEX vipd_orders_by_account ON vipd_orders (account);

-- What a rule holds and spent per budget period, as folded from
-- vipd_spend_changes; what it holds now is this plus the changes not yet
-- folded. A plan under a cap locks the period's row: plans of one rule
-- and period take turns, and see every change committed before.
CREATE TABLE vipd_spend (
    rule      text NOT NULL,
    period    text NOT NULL,
    reserved  bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    settled   bigint NOT NULL DEFAULT 0 CHECK (settled >= 0),
    PRIMARY KEY (rule, period)
);

-- A vendor's order id → the order and attempt it names.
CREATE TABLE vipd_vendor_orders (
    provider        text NOT NULL,
    vendor_orderid  text NOT NULL,
    key             text NOT NULL REFERENCES vipd_orders (key),
    attempt         integer,
    PRIMARY KEY (provider, vendor_orderid)
);

-- Each order transition's change to its rule's spend, appended in the
-- transition's own transaction and never updated: transitions of many
-- orders never wait on each other (one row that every order of a rule
-- updated held each of them through the others' commits). Folded into
-- vipd_spend from time to time, one period at a time, under its lock.
CREATE TABLE vipd_spend_changes (
    seq       bigserial PRIMARY KEY,
    rule      text NOT NULL,
    period    text NOT NULL,
    reserved  bigint NOT NULL,
    settled   bigint NOT NULL
);
CREATE INDEX vipd_spend_changes_by_period ON vipd_spend_changes (rule, period);
