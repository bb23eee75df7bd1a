-- vipd schema 3: what else the ledger remembers, as JSON records beside
-- the keys they are found by.

-- The event log, in time order (`seq` breaks ties, as sled's keys do).
CREATE TABLE vipd_events (
    seq     bigserial PRIMARY KEY,
    at      bigint NOT NULL,
    record  json NOT NULL
);
CREATE INDEX vipd_events_by_time ON vipd_events (at, seq);

-- What the last check of a (rule, account) saw and decided.
CREATE TABLE vipd_checks (
    rule     text NOT NULL,
    account  text NOT NULL,
    record   json NOT NULL,
    PRIMARY KEY (rule, account)
);

-- An account's credential trouble, and its latest rotated token pair.
CREATE TABLE vipd_accounts (
    account  text PRIMARY KEY,
    state    json,
    token    json
);
