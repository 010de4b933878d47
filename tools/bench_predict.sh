#!/usr/bin/env bash
# `anoflow predict` throughput on 224x224 images: a small quickstart (category pill, 224x224
# synthetic images, written out by a write-png sink) is run and exported, then its bundle
# predicts the run's test images, once one image at a time (--in-flight 1: per-image latency)
# and once in batches of 8 (throughput on a backlog). Prints each run's summary and per-stage
# times (docs/PERFORMANCE.md, "Predict").
#
# usage: tools/bench_predict.sh [TEST IMAGES, default 48]   (after cargo build --release --workspace)
# Environment: BENCH_THREADS worker threads (default: nproc).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/anoflow"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(ls "$root"/.cache/onnxruntime/libonnxruntime.so.* | head -n 1)}"
images=${1:-48}
threads=${BENCH_THREADS:-$(nproc)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"

sed 's/^nodes:$/nodes:\n  png:\n    plugin: write-png\n    inputs: { image: data.image }/' pipelines/quickstart.yaml >"$work/quickstart-png.yaml"
sets=(--set "data.categories=[pill]" --set data.size=224 --set data.train=30
      --set "data.test_good=$((images / 3))" --set "data.test_defective=$((images - images / 3))")
"$bin" run "$work/quickstart-png.yaml" "${sets[@]}" --cache "$work/cache" --out "$work/run" -q >/dev/null
"$bin" export "$work/quickstart-png.yaml" "${sets[@]}" --cache "$work/cache" --run "$work/run" --out "$work/bundle" >/dev/null
mkdir -p "$work/images"
for f in "$work"/run/png/pill/test/*/*/image.png; do
    rel=${f#"$work/run/png/"}
    cp "$f" "$work/images/$(echo "${rel%/image.png}" | tr / _).png"
done
for batch in 1 8; do
    echo "## --in-flight $batch, $threads threads, $(ls "$work/images" | wc -l) images of 224x224"
    "$bin" predict "$work/bundle" "$work/images" --out "$work/pred$batch" --category pill \
        --in-flight "$batch" --threads "$threads" --quiet
done
