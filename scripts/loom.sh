#!/usr/bin/env bash
# The fault queue's ring protocol, model-checked with loom (crates/iopf-queue/src/model_check.rs;
# scripts/test.sh runs this): the crate is built with `--cfg iopf_loom`, which puts the region's
# words, fences and doorbells on loom's atomics and condition variables, and the model checks
# run the ends' own code under loom's scheduler.
#
#   bash scripts/loom.sh                          the suite's run
#   LOOM_MAX_PREEMPTIONS=3 bash scripts/loom.sh   deeper search for the whole-queue models
#                                                 (every model takes the bound then)
#
# Its own target directory (target/loom): the cfg changes every build of the crate.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} --cfg iopf_loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
echo "== clippy with --cfg iopf_loom"
# The library and its unit tests (the model checks); the integration tests play a peer that
# writes the region's raw words, which under loom are not one mapping.
cargo clippy --quiet -p iopf-queue --lib --profile test -- -D warnings
echo "== loom model checks"
# Release: loom runs each model tens of thousands of times.
start=$(date +%s)
cargo test --quiet --release -p iopf-queue --lib model_check:: -- --nocapture --test-threads=1 --format pretty 2>&1 \
    | grep -v -e '^stack backtrace:' -e '^ *[0-9]*: ' -e '^note: Some details' \
    | sed 's/^/   /'
status=${PIPESTATUS[0]}
echo "   model checks took $(( $(date +%s) - start )) s"
exit "$status"
