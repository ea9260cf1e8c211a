#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, from its seed corpus in fuzz/corpus/<target>/.
#   scripts/fuzz.sh                 # the long mode: 60 s per target
#   scripts/fuzz.sh --suite         # the test suite's mode: 15 s per target
#   FUZZ_SECONDS=300 scripts/fuzz.sh [--suite]
#   scripts/fuzz.sh [--suite] TARGET...   # only these targets
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io if missing). Fails on any
# crash (the input is left in fuzz/artifacts/<target>/); prints per target the executions and
# coverage (libFuzzer's cov: and ft:). New inputs the run finds go to a scratch directory, not
# into the kept corpus (minimise and copy them by hand: see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

suite=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --suite) suite=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) targets+=("$arg") ;;
    esac
done
if [ "$suite" = 1 ]; then
    seconds="${FUZZ_SECONDS:-15}"
else
    seconds="${FUZZ_SECONDS:-60}"
fi


if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if [ "${#targets[@]}" = 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

start=$(date +%s)
echo "== building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
failed=()
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "corpus/$target" "$scratch/$target"
    log="$scratch/$target.log"
    # The scratch directory first: new inputs go there; the kept corpus is only read.
    if cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed+=("$target")
        grep -E "ERROR|panicked|Test unit written|SUMMARY" "$log" | head -20 || true
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    line=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
    summary+=("$(printf '%-20s %-6s execs %-10s cov %-6s ft %s' "$target" "$status" "${execs:-?}" "${cov:-?}" "${ft:-?}")")
done
echo "== summary (${seconds}s per target, $(( $(date +%s) - start ))s in all)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" != 0 ]; then
    echo "== fuzzing FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "== fuzzing passed"
