#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time, one after another, on one core.
#
#   fuzz/run.sh [seconds-per-target] [target...]      # default: 600 s, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz needs nightly compiler
# features; this script gets them from the stable toolchain with RUSTC_BOOTSTRAP=1.
# New inputs go into fuzz/corpus/<target>/, crashes into fuzz/artifacts/<target>/, logs into
# fuzz/logs/. Prints one line per target with its exec count, and exits non-zero if any target
# crashed, leaked or timed out.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace; a target dir shared with the main crate would mix flags.
unset CARGO_TARGET_DIR

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build
mkdir -p fuzz/logs
failed=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/logs/$target.log"
    echo "==> fuzzing $target for ${seconds}s (log: $log)"
    status=0
    cargo fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        verdict="ok"
    else
        verdict="FAILED (exit $status, see $log and fuzz/artifacts/$target/)"
        failed=1
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 || true
    fi
    line="fuzz: $target: ${execs:-?} execs, ${done_line:-no final stats}, corpus $corpus files, $verdict"
    echo "$line"
    summary+=("$line")
done

echo
echo "==> summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
