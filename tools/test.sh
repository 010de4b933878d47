#!/usr/bin/env bash
# The project's test command: set-up, build every crate (plugins included, so the
# end-to-end tests find the real libraries next to the binary), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(tools/fetch_onnxruntime.sh)}"
cargo build --release --workspace
cargo test --release --workspace
tools/check_new_plugin.sh
