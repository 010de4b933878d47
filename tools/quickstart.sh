#!/usr/bin/env bash
# The main job on the shipped default: set-up, build, then run pipelines/quickstart.yaml
# (synthetic data, MobileNetV2 features, PatchCore, THR and TTT4AS side by side) and
# print the comparison table. Extra arguments go to `anoflow run`.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(tools/fetch_onnxruntime.sh)}"
cargo build --release --workspace
target/release/anoflow run pipelines/quickstart.yaml "$@"
