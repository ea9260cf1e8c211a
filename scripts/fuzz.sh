#!/usr/bin/env bash
# Runs each fault-queue fuzz target for a bounded time (not part of scripts/test.sh).
#   scripts/fuzz.sh            # 60 s per target
#   FUZZ_SECONDS=300 scripts/fuzz.sh
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io if missing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz $target for ${seconds}s"
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
echo "== fuzzing passed"
