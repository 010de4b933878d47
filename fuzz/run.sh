#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 120) with a seed corpus made from
# the pipeline files and the docs' YAML blocks (parser) and from a small synthetic MVTec AD /
# 3D-AD dataset (readers). Needs the nightly toolchain and `cargo install cargo-fuzz`.
#   fuzz/run.sh            # 120 s per target
#   SECONDS_PER_TARGET=600 fuzz/run.sh pipeline_parser
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-120}"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(pipeline_parser image_decode mask_and_cloud)

mkdir -p corpus/pipeline_parser corpus/image_decode corpus/mask_and_cloud
cp ../pipelines/*.yaml corpus/pipeline_parser/ 2>/dev/null || true
if [[ -z "$(ls corpus/image_decode)" ]]; then
    data="$(mktemp -d)"
    [[ -x ../target/release/make-synthetic ]] ||
        cargo build -q --release --manifest-path ../Cargo.toml -p anoflow-plugin-datasets --bin make-synthetic
    ../target/release/make-synthetic --out "$data/ad" --categories tiles --train 2 --test-good 1 --test-defective 2 --size 64 >/dev/null
    ../target/release/make-synthetic --out "$data/3d" --categories washer --train 2 --test-good 1 --test-defective 2 --size 64 --xyz >/dev/null
    find "$data" -name '*.png' | head -20 | while read -r f; do cp "$f" "corpus/image_decode/$(echo "$f" | md5sum | cut -c1-12).png"; done
    find "$data" \( -name '*_mask.png' -o -path '*/gt/*.png' -o -name '*.tiff' \) | head -20 |
        while read -r f; do cp "$f" "corpus/mask_and_cloud/$(echo "$f" | md5sum | cut -c1-12)"; done
    rm -rf "$data"
fi

cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    echo "== $t ($secs s)"
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 2>&1 |
        grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs|ERROR|SUMMARY|panicked|crash-" | tail -5
done
