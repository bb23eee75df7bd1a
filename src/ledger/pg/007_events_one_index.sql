-- vipd schema 7: the event log keeps one index.
--
-- Events are read in time order (`at`, then `seq`) and pruned by time;
-- nothing reads one by `seq` alone. The time order becomes the primary
-- key (`seq` comes from a sequence, so the pair is unique) and the two
-- indexes it replaces go: each event writes one index entry, not two.
-- Building it reads the log once, under the migration's lock.
ALTER TABLE vipd_events DROP CONSTRAINT IF EXISTS vipd_events_pkey;
DROP INDEX IF EXISTS vipd_events_by_time;
ALTER TABLE vipd_events ADD CONSTRAINT vipd_events_pkey PRIMARY KEY (at, seq);
