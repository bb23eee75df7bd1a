#!/usr/bin/env bash
# The sandbox's own ceiling: replies/s of `vipd sandbox` (sync mode, no
# latency) to wrk, for both APIs: get_vip_rich_info (GET) and a signed
# recharge (POST, billed every time). What vipd reaches is a fraction of
# these (BENCHMARKS.md).
#
#   bash bench/ceiling.sh [seconds] [connections]    # needs wrk (apt install wrk)
set -euo pipefail
secs=${1:-10}
conns=${2:-64}
here=$(cd "$(dirname "$0")/.." && pwd)
vipd=${VIPD:-$here/target/release/vipd}
command -v wrk >/dev/null || { echo "wrk is not installed (apt install wrk)" >&2; exit 2; }
[ -x "$vipd" ] || { echo "build first: cargo build --release" >&2; exit 2; }
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
secret=0123456789abcdef0123456789abcdef
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/rules.yaml" <<YAML
daemon: { state_dir: ./state }
providers:
  qq: { kind: qq_connect, base_url: "http://127.0.0.1:$port", oauth_consumer_key: "101234567" }
  wapi: { kind: recharge, base_url: "http://127.0.0.1:$port", appid: "1", secret: "$secret" }
products:
  qq_vip_month: { provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }
accounts:
  - { name: a0, qq_number: "100000", openid: O0, access_token: t0 }
sandbox:
  mode: sync
  prices: { qq_vip_month: 15.00 }
  memberships:
    a0: { qq_vip: 1d }
YAML
"$vipd" sandbox --config "$dir/rules.yaml" --listen "127.0.0.1:$port" >"$dir/sandbox.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/_sandbox/stats" >/dev/null 2>&1 && break
  sleep 0.1
done
body=$(python3 - "$secret" <<'PY'
import hashlib, sys, time, urllib.parse
p = {"appid": "1", "qq_number": "100000", "format": "json", "time": str(int(time.time()))}
text = "".join(k + v for k, v in sorted(p.items()))
p["sign"] = hashlib.md5((text + sys.argv[1]).encode()).hexdigest()
print(urllib.parse.urlencode(p))
PY
)
cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = "$body"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded;charset=utf-8"
LUA
echo "check: $(curl -s "http://127.0.0.1:$port/user/get_vip_rich_info?access_token=t0&oauth_consumer_key=101234567&openid=O0&format=json" | head -c 80)"
echo "check: $(curl -s -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data "$body" "http://127.0.0.1:$port/api/164/310" | head -c 80)"
echo "== get_vip_rich_info, $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$port/user/get_vip_rich_info?access_token=t0&oauth_consumer_key=101234567&openid=O0&format=json" | grep -E "Requests/sec|Non-2xx|Latency"
echo "== recharge (signed POST, billed each time), $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" -s "$dir/post.lua" "http://127.0.0.1:$port/api/164/310" | grep -E "Requests/sec|Non-2xx|Latency"
echo "sandbox saw: $(curl -s "http://127.0.0.1:$port/_sandbox/stats")"
