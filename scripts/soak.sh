#!/usr/bin/env bash
# Soak runs (not part of scripts/test.sh: they take minutes), each printing operations,
# violations, stranded groups and memory high-water, and failing on any violation:
#
#   1. the fault core against its reference model for IOPF_SOAK_OPS operations (default 10^7;
#      crates/iopf-core/tests/model.rs, fault_core_soak);
#   2. a malicious consumer against the fault core and its queue at full load for
#      IOPF_SOAK_SECONDS (default 60; crates/iopf-queue/tests/soak.rs);
#   3. the model-based property tests with PROPTEST_CASES cases each (default 4096: the fault
#      core's model, the queue's properties and backpressure, the vIOMMU properties).
#
#   scripts/soak.sh
#   IOPF_SOAK_OPS=100000000 IOPF_SOAK_SECONDS=600 PROPTEST_CASES=20000 scripts/soak.sh
#   IOPF_SOAK_SEED=1234 scripts/soak.sh     # replays the random runs of 1 and 2
set -euo pipefail
cd "$(dirname "$0")/.."
export IOPF_SOAK_OPS="${IOPF_SOAK_OPS:-10000000}"
export IOPF_SOAK_SECONDS="${IOPF_SOAK_SECONDS:-60}"
cases="${PROPTEST_CASES:-4096}"

echo "== fault core against its model: $IOPF_SOAK_OPS operations"
cargo test --release -q -p iopf-core --test model -- --ignored fault_core_soak --nocapture \
    | grep -E "soak|test result"
echo "== malicious consumer at full load: ${IOPF_SOAK_SECONDS} s"
cargo test --release -q -p iopf-queue --test soak -- --ignored a_malicious_consumer_at_full_load \
    --nocapture | grep -E "soak|test result"
echo "== model-based property tests, $cases cases each"
PROPTEST_CASES="$cases" cargo test --release -q -p iopf-core --test model \
    fault_core_matches_the_reference_model
PROPTEST_CASES="$cases" cargo test --release -q -p iopf-queue --test properties --test backpressure
PROPTEST_CASES="$cases" cargo test --release -q -p iopf-viommu --test vtd_properties \
    --test misbehaving_guest_properties
echo "== soak passed"
