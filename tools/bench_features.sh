#!/usr/bin/env bash
# Benchmarks the default backbone (MobileNetV2 at 224x224, outputs features.7.expand +
# features.14.expand) through the Rust onnx-features path and through Python's onnxruntime,
# one after the other on the same machine, with the same intra-op thread count.
# Needs: cargo, python3 with `pip install numpy onnx onnxruntime`.
# Usage: tools/bench_features.sh [threads] [seconds per measurement]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
threads="${1:-2}"
seconds="${2:-5}"

tools/fetch_onnxruntime.sh >/dev/null
python3 tools/prepare_default_model.py >/dev/null
echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench -q -p anoflow-plugin-onnx --bench features -- --threads "$threads" --seconds "$seconds"
python3 tools/bench_onnx_reference.py --threads "$threads" --seconds "$seconds"
