-- vipd schema 2: the nodes and their leases.
--
-- A node holds a lease on its name until `lease_until` (the database's
-- clock, never a node's) and renews it while it works. Each start takes
-- the name over with the next `fence`; every write a node makes checks,
-- in its own transaction, that its fence is the name's and its lease has
-- not run out. A node cut off past its lease, or replaced by a newer start
-- under its name, writes nothing more: it cannot pay.
-- Fences are unique across names, so an order's `fence` names the one
-- start of one node that wrote it last.
CREATE SEQUENCE vipd_fences;
CREATE TABLE vipd_nodes (
    name         text PRIMARY KEY,
    fence        bigint NOT NULL,
    lease_until  timestamptz NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now()
);

-- Who checks a (rule, account): one node at a time, for as long as its
-- lease holds. A claim is taken when free, when its holder's lease ran
-- out (the node died or was cut off), or when it is the node's own
-- already, and only by a node whose lease holds: a dead node's pairs go
-- to the next node that checks them, within one lease period.
CREATE TABLE vipd_claims (
    rule     text NOT NULL,
    account  text NOT NULL,
    fence    bigint NOT NULL,
    PRIMARY KEY (rule, account)
);
