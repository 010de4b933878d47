#!/usr/bin/env bash
# Exact nearest-neighbour search, anoflow against OpenBLAS sgemm, numpy GEMM + min and FAISS
# IndexFlatL2 (k = 1), same shapes, same run; one table with GFLOP/s and time ratios.
# Usage: tools/bench_nn.sh        (NN_BENCH_RUNS=<n> timed runs per cell, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
tsv="$(mktemp)"
trap 'rm -f "$tsv"' EXIT
echo
echo "## anoflow (cargo bench -p anoflow-plugin-scorers --bench nn)"
NN_BENCH_TSV="$tsv" cargo bench -q -p anoflow-plugin-scorers --bench nn
echo
echo "## against OpenBLAS and FAISS (tools/bench_nn_reference.py)"
python3 tools/bench_nn_reference.py --compare "$tsv"
