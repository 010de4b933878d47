#!/usr/bin/env bash
# Checks the out-of-tree plugin path with nothing but a released anoflow: the binary and its
# standard plugin libraries are copied alone to an empty directory (no checkout reachable
# from there), `anoflow new plugin` creates a crate there, which builds (its SDK vendored by
# the binary), passes its own tests, loads, and runs in its demo pipeline beside a baseline;
# the metrics table must have a column for the new stage's mask.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "new-plugin: $*" >&2; exit 1; }

# The "release": the binary and the standard libraries, nothing else.
mkdir -p "$tmp/anoflow" "$tmp/work"
cp target/release/anoflow target/release/libanoflow_plugin_*.so "$tmp/anoflow/"
anoflow="$tmp/anoflow/anoflow"

cd "$tmp/work"
"$anoflow" new plugin score-scaler >"$tmp/new.txt"
grep -q "cargo build --release" "$tmp/new.txt" || fail "no release-build hint: $(cat "$tmp/new.txt")"
crate="$tmp/work/score-scaler"
[ -f "$crate/vendor/anoflow-sdk/src/abi.rs" ] || fail "the SDK was not vendored"
! grep -rq "$root" "$crate" || fail "the crate refers to the checkout $root"

# One target directory for every run of this check, so dependencies compile once.
export CARGO_TARGET_DIR="$root/target/new-plugin-check"
cd "$crate"
cargo test --release --quiet >"$tmp/test.txt" 2>&1 || fail "the crate's own tests failed: $(cat "$tmp/test.txt")"
grep -q "test result: ok. 2 passed" "$tmp/test.txt" || fail "the crate's own tests did not run: $(cat "$tmp/test.txt")"
cargo build --release --quiet
lib="$CARGO_TARGET_DIR/release/libanoflow_plugin_score_scaler.so"
[ -f "$lib" ] || fail "$lib was not built"
mkdir -p "$tmp/my-plugins"
cp "$lib" "$tmp/my-plugins/"

# --plugins adds to the default path: the new stage and the standard ones are both there.
out=$("$anoflow" plugins inspect score-scaler --plugins "$tmp/my-plugins")
echo "$out" | grep -q "score-scaler (map stage)" || fail "new plugin did not load: $out"
"$anoflow" validate pipeline.yaml --plugins "$tmp/my-plugins" >/dev/null || fail "demo pipeline does not validate"
"$anoflow" run pipeline.yaml --plugins "$tmp/my-plugins" --out "$tmp/run" --no-cache -q >"$tmp/run.txt" 2>&1 \
    || fail "demo pipeline failed: $(cat "$tmp/run.txt")"
grep -q "^| category | baseline | candidate |" "$tmp/run.txt" \
    || fail "no metrics column for the new stage: $(cat "$tmp/run.txt")"
echo "new-plugin: 1 passed, 0 failed"
