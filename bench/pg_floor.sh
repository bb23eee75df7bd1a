#!/usr/bin/env bash
# The floor of one statement on this machine's PostgreSQL: a prepared
# single-row read by primary key, a prepared single-row insert (a commit
# that waits for the WAL flush) and one of ten rows the size of an order,
# one client, one statement at a time, with
# pgbench. Prints, for each, statements/s and the CPU a statement of the
# server (its backend) and of the client.
#
#   bash bench/pg_floor.sh            # 5 s each
#   SECONDS_EACH=20 bash bench/pg_floor.sh
#
# Runs a throwaway server (fsync on, pg_stat_statements loaded, as the
# cluster bench runs it) as the `postgres` user in a temporary folder.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
each=${SECONDS_EACH:-5}
dir=$(mktemp -d /tmp/vipd-pgfloor.XXXXXX)
chown postgres "$dir"
port=$((20000 + RANDOM % 20000))
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start -o \
  "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=on -c shared_preload_libraries=pg_stat_statements" >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
psql() { "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt "$@"; }
psql -c "CREATE TABLE t (key text PRIMARY KEY, record json NOT NULL)"
psql -c "INSERT INTO t SELECT 'k' || i, json_build_object('n', i, 'pad', repeat('x', 900)) FROM generate_series(1, 10000) i"
psql -c "CREATE TABLE w (seq bigserial PRIMARY KEY, record json NOT NULL)"
echo "\\set k random(1, 10000)
SELECT record FROM t WHERE key = 'k' || :k;" > "$dir/read.sql"
echo "INSERT INTO w (record) VALUES ('{\"a\": 1}');" > "$dir/write.sql"
echo "INSERT INTO w (record) SELECT json_build_object('n', i, 'pad', repeat('x', 900)) FROM generate_series(1, 10) i;" > "$dir/write10.sql"
pg_ticks() { # the server's CPU so far: the postmaster, its children alive and gone
  local pm; pm=$(head -1 "$dir/data/postmaster.pid")
  local t; t=$(awk '{print $14+$15+$16+$17}' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)
echo "| statement | statements/s | server µs a statement | client µs a statement |"
echo "|---|---|---|---|"
for what in read write write10; do
  before=$(pg_ticks)
  out=$( { /usr/bin/time -f "CPU %U %S" "$bin/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c 1 -T "$each" -f "$dir/$what.sql" postgres; } 2>&1 )
  sleep 1
  after=$(pg_ticks)
  n=$(echo "$out" | awk '/number of transactions actually processed/ {print $NF}' | cut -d/ -f1)
  cpu=$(echo "$out" | awk '/^CPU/ {print $2 + $3}')
  awk -v w="$what" -v n="$n" -v s="$each" -v pg=$((after - before)) -v hz="$hz" -v c="$cpu" 'BEGIN {
    printf "| %s | %.0f | %.1f | %.1f |\n", (w == "read" ? "read one row by key (prepared)" : w == "write" ? "insert one row, commit waits for the flush" : "insert ten rows of 1 kB in one statement and commit"), n / s, pg / hz / n * 1e6, c / n * 1e6 }'
done
