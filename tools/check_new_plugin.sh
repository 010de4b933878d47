#!/usr/bin/env bash
# Checks the out-of-tree plugin path with nothing but a released anoflow: the binary and its
# standard plugin libraries are copied alone to an empty directory (no checkout reachable
# from there), and the commands of the plugin guide's walk-through (docs/plugin-guide.md,
# between the guide-test markers) run there as written: `anoflow new plugin` creates a
# crate (its SDK vendored by the binary), which passes its own tests, builds, loads, and runs
# its demo pipeline twice; the metrics table must have a column for the new stage's mask.
# First, `cargo package` and `cargo doc` of the SDK.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "new-plugin: $*" >&2; exit 1; }

# The SDK is ready to publish: it packages and builds alone from its package, and its docs
# build, both offline (cold: a few minutes for the dependencies; then seconds).
cargo package -p anoflow-sdk --offline --allow-dirty --quiet >"$tmp/package.txt" 2>&1 \
    || fail "cargo package -p anoflow-sdk failed: $(tail -20 "$tmp/package.txt")"
RUSTDOCFLAGS="-D warnings" cargo doc -p anoflow-sdk --no-deps --offline --quiet >"$tmp/doc.txt" 2>&1 \
    || fail "the SDK's docs do not build: $(tail -20 "$tmp/doc.txt")"

# The "release": the binary and the standard libraries, nothing else, first on PATH.
mkdir -p "$tmp/anoflow" "$tmp/work"
cp target/release/anoflow target/release/libanoflow_plugin_*.so "$tmp/anoflow/"
export PATH="$tmp/anoflow:$PATH"

# The guide's commands, as written.
sed -n '/<!-- guide-test:begin -->/,/<!-- guide-test:end -->/p' docs/plugin-guide.md \
    | sed -n '/^```sh$/,/^```$/p' | grep -v '^```' >"$tmp/guide.sh"
[ "$(grep -c '^anoflow\|^cargo' "$tmp/guide.sh")" -ge 6 ] || fail "the guide's walk-through is missing: $(cat "$tmp/guide.sh")"

# One target directory for every run of this check, so dependencies compile once.
export CARGO_TARGET_DIR="$root/target/new-plugin-check"
rm -f "$CARGO_TARGET_DIR"/release/libanoflow_plugin_*.so
(cd "$tmp/work" && bash -euo pipefail "$tmp/guide.sh") >"$tmp/out.txt" 2>&1 \
    || fail "the guide's walk-through failed: $(tail -40 "$tmp/out.txt")"

crate="$tmp/work/my-stage"
[ -f "$crate/vendor/anoflow-sdk/src/abi.rs" ] || fail "the SDK was not vendored"
! grep -rq "$root" "$crate/Cargo.toml" "$crate/src" "$crate/vendor" || fail "the crate refers to the checkout $root"
grep -q "cargo build --release  " "$tmp/out.txt" || fail "\`new plugin\` gave no release-build hint"
grep -q "test result: ok. 2 passed" "$tmp/out.txt" || fail "the crate's own tests did not run: $(cat "$tmp/out.txt")"
grep -q "my-stage (map stage)" "$tmp/out.txt" || fail "the new stage did not load: $(cat "$tmp/out.txt")"
grep -q "^| category | baseline | candidate |" "$tmp/out.txt" \
    || fail "no metrics column for the new stage: $(cat "$tmp/out.txt")"
grep -q "^| metric | A | B | B - A |" "$tmp/out.txt" || fail "compare printed no table: $(cat "$tmp/out.txt")"
echo "new-plugin: 1 passed, 0 failed"
