#!/usr/bin/env bash
# PatchCore benchmark: anoflow's Rust scorer and the NumPy reference, same sizes, same run.
# Usage: tools/bench_scorers.sh            (BENCH_QUICK=1 for a smaller run)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
echo
echo "## anoflow (cargo bench -p anoflow-plugin-scorers --bench patchcore)"
cargo bench -q -p anoflow-plugin-scorers --bench patchcore
echo
echo "## numpy reference (tools/bench_patchcore_reference.py)"
python3 tools/bench_patchcore_reference.py
