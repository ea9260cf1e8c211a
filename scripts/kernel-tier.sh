#!/usr/bin/env bash
# The kernel test tier: iopf's iommufd backend against a real Linux 6.12 kernel in QEMU.
#
#   1. install Debian's linux-source-6.12, qemu-system-x86 and the kernel build dependencies;
#   2. build a minimal x86_64 kernel (tinyconfig + scripts/kernel/test-kernel.config, with
#      scripts/kernel/iommufd-test-select-iopf.patch applied), cached under target/kernel/<key>/
#      where <key> hashes the config, the patch, the source package version and this recipe, so a
#      second run does not rebuild;
#   3. build the in-guest tests (crates/iopf-kernel-tests, a publish = false crate on
#      iopf-iommufd's selftest feature) as a static binary and pack it as the initramfs /init;
#   4. boot qemu-system-x86_64 -no-reboot -nographic with a time limit (TCG; KVM on request)
#      and read the results from the serial console;
#   5. fail on any failed test, a missing or short result, a kernel panic or a timeout.
#
# Usage: scripts/kernel-tier.sh [all|kernel|guest|boot]   (default: all)
# Environment: IOPF_KERNEL_TIMEOUT (seconds for the boot, default 300), IOPF_KEEP_KERNEL_TREE=1
# keeps the kernel build tree, IOPF_KERNEL_JOBS (make -j, default nproc), IOPF_KERNEL_KVM=1 tries
# KVM before TCG.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
step=${1:-all}
started=$(date +%s)

kdir="$root/target/kernel"
src_tar=/usr/src/linux-source-6.12.tar.xz
config_fragment="$root/scripts/kernel/test-kernel.config"
kconfig_patch="$root/scripts/kernel/iommufd-test-select-iopf.patch"
# Bump when the build recipe below changes in a way that changes the kernel.
recipe_version=1
guest_target=x86_64-unknown-linux-gnu
guest_bin=iopf-kernel-tests

log() { echo "[kernel-tier $(($(date +%s) - started))s] $*"; }
die() { echo "[kernel-tier] FAILED: $*" >&2; exit 1; }

install_deps() {
    local need=(linux-source-6.12 qemu-system-x86 build-essential flex bison bc libelf-dev
        libssl-dev cpio xz-utils patch kmod python3 libc6-dev file)
    local missing=() p
    for p in "${need[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing: ${missing[*]}"
        local sudo=()
        [ "$(id -u)" = 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"
    fi
    [ -f "$src_tar" ] || die "$src_tar missing after installing linux-source-6.12"
}

cache_key() {
    {
        echo "recipe $recipe_version"
        dpkg-query -W -f='${Version}\n' linux-source-6.12
        cat "$config_fragment" "$kconfig_patch"
    } | sha256sum | cut -c1-16
}

# Options the tests cannot run without: checked in the final .config, so a Kconfig dependency
# that silently drops one fails the build here rather than as a puzzling guest failure.
required_options=(64BIT SERIAL_8250_CONSOLE BLK_DEV_INITRD DEVTMPFS BINFMT_ELF PROC_FS EPOLL
    IOMMU_SUPPORT IOMMUFD IOMMUFD_TEST IOMMU_IOPF IOMMUFD_DRIVER)

build_kernel() {
    local key out tree jobs opt
    key=$(cache_key)
    out="$kdir/$key"
    if [ -f "$out/bzImage" ] && [ -x "$out/gen_init_cpio" ]; then
        log "kernel cached: $out/bzImage"
        return
    fi
    mkdir -p "$kdir"
    tree="$kdir/build-$key"
    # One builder at a time: a second run waits for the first and then finds the cache.
    exec 9>"$kdir/.lock-$key"
    flock 9
    if [ -f "$out/bzImage" ] && [ -x "$out/gen_init_cpio" ]; then
        log "kernel cached: $out/bzImage"
        exec 9>&-
        return
    fi
    rm -rf "$tree"
    mkdir -p "$tree"
    log "extracting $src_tar"
    tar -xJf "$src_tar" -C "$tree" --strip-components=1
    log "patching Kconfig: $(basename "$kconfig_patch")"
    patch -d "$tree" -p1 --forward < "$kconfig_patch"
    log "configuring: tinyconfig + $(basename "$config_fragment")"
    make -C "$tree" -s tinyconfig
    "$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$config_fragment" >/dev/null
    make -C "$tree" -s olddefconfig
    for opt in "${required_options[@]}"; do
        grep -q "^CONFIG_$opt=y$" "$tree/.config" || die "CONFIG_$opt is not =y in the test kernel's .config"
    done
    jobs=${IOPF_KERNEL_JOBS:-$(nproc)}
    log "building bzImage with -j$jobs"
    make -C "$tree" -s -j"$jobs" bzImage
    [ -x "$tree/usr/gen_init_cpio" ] || die "usr/gen_init_cpio was not built (BLK_DEV_INITRD off?)"
    mkdir -p "$out.tmp"
    cp "$tree/arch/x86/boot/bzImage" "$tree/usr/gen_init_cpio" "$tree/.config" "$out.tmp/"
    rm -rf "$out"
    mv "$out.tmp" "$out"
    [ "${IOPF_KEEP_KERNEL_TREE:-0}" = 1 ] || rm -rf "$tree"
    exec 9>&-
    log "kernel built: $out/bzImage"
}

build_guest() {
    log "building the in-guest tests (static $guest_bin)"
    # A separate --target keeps these RUSTFLAGS from invalidating the host build.
    RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release \
        -p iopf-kernel-tests --bin "$guest_bin" --target "$guest_target"
    local bin="$root/target/$guest_target/release/$guest_bin"
    [ -x "$bin" ] || die "guest binary $bin missing"
    if file "$bin" 2>/dev/null | grep -q 'dynamically linked'; then
        die "$bin is dynamically linked; the initramfs has no loader"
    fi
}

make_initramfs() {
    local key out bin spec
    key=$(cache_key)
    out="$kdir/$key"
    bin="$root/target/$guest_target/release/$guest_bin"
    spec="$kdir/initramfs.list"
    # gen_init_cpio writes device nodes without needing root.
    cat > "$spec" <<EOF
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
dir /proc 0755 0 0
dir /sys 0755 0 0
dir /tmp 1777 0 0
file /init $bin 0755 0 0
EOF
    "$out/gen_init_cpio" "$spec" > "$kdir/initramfs.cpio"
}

run_qemu() {
    local accel=$1 serial=$2 timeout_s=$3 cpu=()
    # KVM with QEMU's default CPU model: `-cpu max`/`host` can fail under nested KVM (MSRs the
    # outer hypervisor refuses); TCG takes the richest model.
    [ "$accel" = tcg ] && cpu=(-cpu max)
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -machine accel="$accel" "${cpu[@]}" \
        -m 512M -smp 1 -no-reboot -nographic -monitor none \
        -kernel "$kdir/$(cache_key)/bzImage" -initrd "$kdir/initramfs.cpio" \
        -append "console=ttyS0 rdinit=/init panic=-1 oops=panic loglevel=4" \
        < /dev/null > "$serial" 2>&1
}

boot() {
    local serial accel timeout_s rc=0
    serial="$kdir/serial.log"
    timeout_s=${IOPF_KERNEL_TIMEOUT:-300}
    # TCG by default: the guest's work takes seconds even emulated, and a /dev/kvm that exists
    # is not one that works (under nested virtualisation KVM guests can hang until the time
    # limit). IOPF_KERNEL_KVM=1 tries KVM first, falling back to TCG if it cannot start.
    accel=tcg
    if [ "${IOPF_KERNEL_KVM:-0}" = 1 ]; then
        if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
            accel=kvm
        else
            log "IOPF_KERNEL_KVM=1 but /dev/kvm is not usable; using TCG"
        fi
    fi
    log "booting with $accel (limit ${timeout_s}s), serial console in $serial"
    run_qemu "$accel" "$serial" "$timeout_s" || rc=$?
    if [ "$accel" = kvm ] && [ "$rc" != 0 ] && ! grep -a -q '^IOPF-PLAN' "$serial"; then
        log "KVM did not start the guest (status $rc: $(head -c 300 "$serial" | tr '\n' ' ')); retrying with TCG"
        accel=tcg
        rc=0
        run_qemu "$accel" "$serial" "$timeout_s" || rc=$?
    fi
    # The guest's own lines, so a CI log shows what ran.
    grep -a -E '^IOPF' "$serial" | tr -d '\r' || true
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        die "QEMU ($accel) did not finish within ${timeout_s}s (see $serial)"
    fi
    [ "$rc" = 0 ] || die "QEMU ($accel) exited with status $rc (see $serial)"
    parse_results "$serial"
    log "guest ran under $accel"
}

# The guest prints `IOPF-PLAN <n>`, one `IOPF-TEST ok|FAIL <name> ...` line per test, and
# `IOPF-RESULT passed=<p> failed=<f>` last. Every one of them must be present and agree.
parse_results() {
    local serial=$1 plan ok fail result
    if grep -a -q -E 'Kernel panic|BUG:|Oops|WARNING:.*(iommu|iopf)' "$serial"; then
        grep -a -E -A20 'Kernel panic|BUG:|Oops|WARNING:' "$serial" | head -60 >&2
        die "the guest kernel reported a panic, BUG, Oops or iommu WARNING"
    fi
    plan=$(grep -a -o -E '^IOPF-PLAN [0-9]+' "$serial" | awk '{print $2}' | tail -1)
    result=$(grep -a -o -E '^IOPF-RESULT passed=[0-9]+ failed=[0-9]+' "$serial" | tail -1)
    ok=$(grep -a -c -E '^IOPF-TEST ok ' "$serial" || true)
    fail=$(grep -a -c -E '^IOPF-TEST FAIL ' "$serial" || true)
    [ -n "$plan" ] || { tail -40 "$serial" >&2; die "no IOPF-PLAN line on the serial console"; }
    [ -n "$result" ] || { tail -40 "$serial" >&2; die "no IOPF-RESULT line: the guest tests did not finish"; }
    [ "$fail" = 0 ] || die "$fail guest test(s) failed"
    [ "$result" = "IOPF-RESULT passed=$plan failed=0" ] || die "result '$result' does not match plan $plan"
    [ "$ok" = "$plan" ] || die "$ok tests passed but $plan were planned"
    log "all $plan guest tests passed"
}

case "$step" in
    kernel) install_deps; build_kernel ;;
    guest) build_guest ;;
    boot) make_initramfs; boot ;;
    all) install_deps; build_kernel; build_guest; make_initramfs; boot ;;
    *) die "unknown step '$step' (all|kernel|guest|boot)" ;;
esac
log "done in $(($(date +%s) - started))s"
