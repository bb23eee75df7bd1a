-- vipd schema 4: the plugins' vipd.kv, shared by every node, and the hold
-- on new orders.

-- One value of one plugin. Keys are bytes (a Lua string may hold a NUL,
-- which `text` refuses); the entry is the same JSON sled keeps, as bytes,
-- so a quota counts the same bytes on either store.
CREATE TABLE vipd_kv (
    plugin  text NOT NULL,
    key     bytea NOT NULL,
    entry   bytea NOT NULL,
    -- Unix seconds after which the value is gone; NULL: never.
    exp     bigint,
    -- What it counts against the plugin's quota: key plus entry bytes.
    size    bigint NOT NULL,
    PRIMARY KEY (plugin, key)
);
CREATE INDEX vipd_kv_expiring ON vipd_kv (plugin, exp) WHERE exp IS NOT NULL;

-- A plugin's bytes kept and written this minute, across every node: its
-- row is locked by each write, so the quota holds for the whole cluster.
CREATE TABLE vipd_kv_usage (
    plugin   text PRIMARY KEY,
    stored   bigint NOT NULL,
    minute   bigint NOT NULL,
    written  bigint NOT NULL
);

-- New orders held (after a copy from a damaged store, or by an operator):
-- one row at most.
CREATE TABLE vipd_hold (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    record  json NOT NULL
);
