#!/usr/bin/env bash
# The long form of the fuzzing suite: each target under libFuzzer for a
# while, one after another (one core each; JOBS=2 runs two at once).
#
#   scripts/fuzz.sh                 # every target, 600 s each
#   scripts/fuzz.sh 60 pattern lua  # these two, 60 s each
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Seeds come from fuzz/seeds/, what libFuzzer finds collects in
# fuzz/corpus/ (not committed); a crash lands in fuzz/artifacts/TARGET/.
# Make each crash a regression: copy it to fuzz/regressions/TARGET/ and
# fix the code; `cargo test --test suite fuzz_corpus::` replays them all.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(callback recharge_reply vip_info config pattern lua)
jobs=${JOBS:-1}
cargo +nightly fuzz build --release
run() {
    local t=$1
    mkdir -p "corpus/$t"
    # -timeout: a single input past 10 s is a hang; -rss_limit_mb: a
    # runaway allocation is a finding, not a machine out of memory.
    local rc=0 start=$SECONDS
    cargo +nightly fuzz run --release "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"/tmp/vipd-fuzz-$t.log" 2>&1 || rc=$?
    echo "$t: exit $rc; $(grep -E '^stat::number_of_executed_units' "/tmp/vipd-fuzz-$t.log" | awk '{print $2}') runs in $((SECONDS - start)) s; corpus $(ls "corpus/$t" | wc -l) inputs (log /tmp/vipd-fuzz-$t.log)"
    return $rc
}
status=0
for t in "${targets[@]}"; do
    if [ "$jobs" -gt 1 ]; then
        run "$t" &
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || status=1; done
    else
        run "$t" || status=1
    fi
done
wait || status=1
exit $status
