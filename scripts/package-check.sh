#!/usr/bin/env bash
# What iopf ships to users, checked as a user would get it (scripts/test.sh runs this):
#
#   1. iopf-abi is no_std: it builds for x86_64-unknown-none, a target without std
#      (scripts/install-deps.sh installs it);
#   2. the facade is light: `iopf` with default features does not pull the simulator or its
#      dependencies, and builds with no default features;
#   3. the facade's documentation is complete on its own: `cargo doc -p iopf --no-deps` (default
#      features and all features) has no rustdoc warning, has the key items' pages, and every link
#      on its pages resolves to a page (and anchor) of the facade's own docs;
#   4. every crate meant for crates.io (the workspace members without `publish = false`) has the
#      metadata crates.io shows, and passes `cargo package`: each .crate is unpacked and built
#      against the others through cargo's local-registry overlay, as crates.io would serve them.
#      Each .crate carries README.md, CHANGELOG.md, LICENSE-MIT and LICENSE-APACHE, and none the
#      in-guest kernel tests. The figures (files, size) are printed per crate.
#
# Needs python3 (to read cargo metadata and the HTML) and the crates.io index (cargo package
# resolves the crates' registry dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
fail() { echo "package-check: FAILED: $*" >&2; exit 1; }

echo "== iopf-abi without std (x86_64-unknown-none)"
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none \
    || fail "target x86_64-unknown-none is not installed (bash scripts/install-deps.sh installs it)"
cargo build --quiet -p iopf-abi --target x86_64-unknown-none
cargo build --quiet -p iopf-abi --target x86_64-unknown-none --features serde

echo "== the facade with default features pulls no simulator"
deps=$(cargo tree --quiet -p iopf -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
for heavy in iopf-sim toml hdrhistogram rand serde; do
    if grep -qx "$heavy" <<< "$deps"; then
        fail "iopf with default features depends on $heavy: $(cargo tree -q -p iopf -e normal -i "$heavy" | head -5 | tr '\n' ' ')"
    fi
done
for stage in iopf-abi iopf-core iopf-queue iopf-iommufd iopf-viommu; do
    grep -qx "$stage" <<< "$deps" || fail "iopf with default features lacks $stage"
done
cargo check --quiet -p iopf --no-default-features

# The links of every page under target/doc/iopf: each relative link must stay in the facade's
# pages (a link into another crate's docs dangles on docs.rs's page of the facade and with
# --no-deps) and name a page, and an anchor, that exists.
check_links() {
    python3 - "$root/target/doc" iopf abi core queue iommufd viommu sim <<'EOF'
import html, os, re, sys
from urllib.parse import unquote, urldefrag

doc, crate, inlined = sys.argv[1], sys.argv[2], set(sys.argv[3:])
ids = {}
def anchors(path):
    if path not in ids:
        with open(path, encoding="utf-8") as f:
            ids[path] = set(re.findall(r'\bid="([^"]+)"', f.read()))
    return ids[path]
bad, checked = [], 0
for dirpath, _, files in os.walk(os.path.join(doc, crate)):
    for name in files:
        if not name.endswith(".html"):
            continue
        page = os.path.join(dirpath, name)
        from_page = os.path.relpath(page, doc)
        with open(page, encoding="utf-8") as f:
            text = f.read()
        for m in re.finditer(r'\bhref="([^"]*)"', text):
            url = html.unescape(m.group(1))
            # same-page anchors, absolute URLs (std's docs), and rustdoc's script templates
            if not url or url.startswith("#") or "${" in url or re.match(r"^[a-z][a-z0-9+.-]*:", url):
                continue
            path, frag = urldefrag(url)
            target = os.path.normpath(os.path.join(dirpath, unquote(path)))
            rel = os.path.relpath(target, doc)
            checked += 1
            if rel in ("help.html", "settings.html") or rel.startswith("static.files/"):
                continue  # rustdoc's own pages
            if rel.startswith("src/"):
                # An inlined item's "Source" link names its defining crate's source view, which
                # `--no-deps` renders only when that crate's docs happen to be in target/doc
                # already (never on a clean clone): the source view, not the API, so not checked.
                continue
            if not (rel.startswith(crate + "/") or rel.startswith("src/" + crate + "/")):
                bad.append(f"{from_page}: {url} leaves the {crate} docs ({rel})")
                continue
            # rustdoc's sidebar on the index of a crate inlined as a module links an "All Items"
            # page beside it, which rustdoc writes only for the crate root ({crate}/all.html).
            parts = rel.split("/")
            if (len(parts) == 3 and parts[2] == "all.html" and parts[1] in inlined
                    and from_page == f"{crate}/{parts[1]}/index.html"):
                continue
            if not os.path.exists(target):
                bad.append(f"{from_page}: {url} names no page")
            elif (frag and target.endswith(".html") and not rel.startswith("src/")
                    and frag not in anchors(target)):
                bad.append(f"{from_page}: {url} names no anchor #{frag}")
print(f"   {checked} links checked, {len(bad)} broken")
for b in bad[:40]:
    print("   " + b)
sys.exit(1 if bad else 0)
EOF
}

facade_docs() {
    local what=$1 page
    shift
    echo "== cargo doc -p iopf --no-deps ($what)"
    # Fresh pages: rustdoc never removes a page, so an old one could stand in for a missing one.
    rm -rf target/doc/iopf target/doc/src/iopf
    RUSTDOCFLAGS="-D warnings" cargo doc --quiet -p iopf --no-deps "$@"
    for page in index.html abi/trait.FaultConsumer.html abi/struct.PgFault.html \
        abi/enum.AbiError.html core/struct.FaultCore.html core/trait.ResponseSink.html \
        core/struct.GroupTable.html queue/struct.Consumer.html queue/struct.Producer.html \
        queue/struct.CoreLink.html iommufd/struct.FaultQueue.html \
        iommufd/struct.CompatFaultQueue.html viommu/struct.Bridge.html viommu/vtd/index.html \
        "${pages[@]}"; do
        [ -f "target/doc/iopf/$page" ] || fail "the facade's docs ($what) have no $page"
    done
    check_links || fail "broken links in the facade's docs ($what)"
}
pages=()
facade_docs "default features"
pages=(sim/struct.Scenario.html core/testing/index.html iommufd/selftest/index.html
    viommu/virtio_iommu/index.html)
facade_docs "all features" --all-features
# Leave the default-feature pages, as a user of the facade gets them.
rm -rf target/doc/iopf target/doc/src/iopf
cargo doc --quiet -p iopf --no-deps

echo "== crate metadata"
metadata=$(mktemp)
trap 'rm -f "$metadata"' EXIT
cargo metadata --no-deps --format-version 1 > "$metadata"
publishable=$(python3 - "$metadata" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    meta = json.load(f)
bad, names = [], []
for p in sorted(meta["packages"], key=lambda p: p["name"]):
    if p["publish"] == []:
        continue  # publish = false
    name = p["name"]
    names.append(name)
    lib = any("lib" in t["kind"] for t in p["targets"])
    need = ["description", "license", "repository", "readme", "keywords", "categories"]
    need += ["documentation"] if lib else []
    bad += [f"{name}: no {field}" for field in need if not p.get(field)]
    if p.get("license") != "MIT OR Apache-2.0":
        bad.append(f"{name}: license {p.get('license')!r} is not MIT OR Apache-2.0")
    if p["version"] != meta["packages"][0]["version"]:
        bad.append(f"{name}: version {p['version']} differs from the workspace's")
for b in bad:
    print(b, file=sys.stderr)
if bad:
    sys.exit(1)
print(" ".join(names))
EOF
) || fail "crate metadata is incomplete"
version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["packages"][0]["version"])' "$metadata")
echo "   to be published: $publishable"

echo "== cargo package (each crate built from its .crate)"
pkg_args=()
for c in $publishable; do pkg_args+=(-p "$c"); done
log=$(mktemp)
trap 'rm -f "$metadata" "$log"' EXIT
# The crates are verified against each other through a local registry, and cargo treats a
# registry crate as immutable per version: it does not extract one again whose directory is in
# $CARGO_HOME/registry/src/-<hash of the registry's path>/, and it does not rebuild one whose
# build of that version is in the target directory. On a machine that ran this before (CI keeps
# both) a crate changed since, at the same version, was used as it was then, and the crates
# using its new items failed. So the verification builds go to a target directory of their own,
# and this workspace's crates' old extracts, and their builds there, are removed first (the
# crates.io dependencies' builds are kept).
pkg_target="$root/target/package-check"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
for c in $publishable; do
    rm -rf "$cargo_home"/registry/src/-*/"$c-$version"
done
rm -rf "$pkg_target/package"
for d in "$pkg_target"/*/; do
    [ -d "$d" ] || continue
    rm -rf "$d".fingerprint/iopf-* "$d"build/iopf-* "$d"deps/*iopf*
done
# --allow-dirty: this checks what would ship, whether or not the work tree is committed.
if ! CARGO_TARGET_DIR="$pkg_target" cargo package --allow-dirty "${pkg_args[@]}" > "$log" 2>&1; then
    tail -40 "$log" >&2
    fail "cargo package"
fi
# "Packaging <crate> v<version> (<path>)" is followed by "Packaged <n> files, <size> (<c> compressed)".
awk '/^ *Packaging /{name=$2" "$3} /^ *Packaged /{sub(/^ *Packaged /, ""); print "   " name ": " $0}' "$log"
for c in $publishable; do
    crate_file="$pkg_target/package/$c-$version.crate"
    [ -f "$crate_file" ] || fail "$crate_file was not written"
    files=$(tar -tzf "$crate_file")
    for f in README.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE; do
        grep -qx "$c-$version/$f" <<< "$files" || fail "$crate_file has no $f"
        # a symlink that cargo did not follow would ship as an empty or dangling file
        [ "$(tar -xzOf "$crate_file" "$c-$version/$f" | wc -c)" -ge 200 ] || fail "$crate_file: $f is empty or short"
    done
    if grep -q 'iopf-kernel-tests' <<< "$files"; then
        fail "$crate_file ships the in-guest kernel tests"
    fi
done
echo "== package check passed"
