#!/usr/bin/env bash
# Exact nearest-neighbour search, anoflow against OpenBLAS sgemm, numpy GEMM + min and FAISS
# IndexFlatL2 (k = 1), same shapes, same run; one table with GFLOP/s and time ratios. Uniform
# random features, then real MobileNetV2 patch features of one photo-demo category (bank10: the
# 10 % coreset, bankall: every fit row), on which FAISS's nearest indices are also checked
# against anoflow's.
# Usage: tools/bench_nn.sh        (NN_BENCH_RUNS=<n> timed runs per cell, default 5;
#                                  NN_REAL_ROOT=<MVTec-layout root>, default data/photo-demo;
#                                  NN_REAL_CATEGORY=<category>, default brick)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
tsv="$(mktemp)"
trap 'rm -f "$tsv"' EXIT

root="${NN_REAL_ROOT:-data/photo-demo}"
category="${NN_REAL_CATEGORY:-brick}"
model=models/mobilenet_v2.onnx
real="$PWD/target/bench-nn-real/$category"
real_args=()
if [ -d "$root/$category/train/good" ] && [ -f "$model" ]; then
  # Up to date: newer than the model and the extraction code, and from the same root.
  if [ "$real/features.json" -nt "$model" ] && [ "$real/features.json" -nt tools/bench_nn_reference.py ] \
    && grep -q "\"root\": \"$root\"" "$real/features.json"; then
    echo "real features: $real (up to date)"
  else
    echo "real features: extracting $root/$category into $real"
    python3 tools/bench_nn_reference.py --extract-real "$real" --root "$root" --category "$category" --model "$model"
  fi
  # Stale results must not be checked against this run's FAISS indices.
  rm -f "$real"/anoflow-nn-*.bin
  real_args=(--real "$real")
else
  echo "real features: skipped ($root/$category or $model missing; make the photo demo set with" \
    "\`python3 tools/make_photo_demo.py --out data/photo-demo\`, the model with tools/setup.sh)"
fi
echo
echo "## anoflow (cargo bench -p anoflow-plugin-scorers --bench nn)"
if [ ${#real_args[@]} -gt 0 ]; then
  NN_BENCH_REAL="$real" NN_BENCH_TSV="$tsv" cargo bench -q -p anoflow-plugin-scorers --bench nn
else
  NN_BENCH_TSV="$tsv" cargo bench -q -p anoflow-plugin-scorers --bench nn
fi
echo
echo "## against OpenBLAS and FAISS (tools/bench_nn_reference.py)"
python3 tools/bench_nn_reference.py --compare "$tsv" "${real_args[@]}"
