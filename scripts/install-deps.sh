#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine; quick when all is there.
# Each part of the project lists its Debian packages here.
set -euo pipefail
# linux-source-6.12: the viommu layout test (crates/iopf-viommu/tests/layout_linux_vtd.rs) reads
# drivers/iommu/intel/prq.c and iommu.h from it.
# gcc, make, valgrind: the C API's tests (crates/iopf-capi/tests/c_api.rs compiles C programs
# and runs them under memcheck) and the C VMM example (make -C examples/c run).
need=(gcc make valgrind linux-libc-dev linux-source-6.12)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
# A target without std: scripts/package-check.sh builds iopf-abi for it to prove the crate no_std.
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none \
    || rustup target add x86_64-unknown-none
