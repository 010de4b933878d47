#!/usr/bin/env bash
# Checks that `anoflow new plugin` creates a crate that builds, passes its own test, and
# loads into the host. Uses the release build next to this script's project.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/release/anoflow new plugin score-scaler --dir "$tmp" >/dev/null
# Build in the workspace's target dir to reuse its compiled dependencies, then load the
# library from a directory of its own (and remove it from the shared output).
export CARGO_TARGET_DIR="$root/target"
cargo test --release --quiet --manifest-path "$tmp/score-scaler/Cargo.toml" 2>&1 | tail -3
cargo build --release --quiet --manifest-path "$tmp/score-scaler/Cargo.toml"
mkdir -p "$tmp/plugins"
mv target/release/libanoflow_plugin_score_scaler.so "$tmp/plugins/"
out=$(target/release/anoflow plugins inspect score-scaler --plugins "$tmp/plugins")
echo "$out" | grep -q "score-scaler (map stage)" || { echo "new plugin did not load: $out" >&2; exit 1; }
echo "new-plugin: 1 passed, 0 failed"
