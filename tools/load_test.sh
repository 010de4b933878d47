#!/usr/bin/env bash
# Load test: pipelines/load-5000.yaml (synthetic, 224x224, 4 branches into segmentation-metrics)
# over 1,000 and 5,000 test samples with the release build; prints peak RSS and wall time of
# each run (GNU time -v) and fails if the peak grows with the sample count by more than 25%.
#
#   tools/load_test.sh              # uses target/release/anoflow (+ plugin libraries beside it)
#   tools/load_test.sh --build      # builds the crates it needs first
#   IN_FLIGHT=64 THREADS=2 tools/load_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

IN_FLIGHT="${IN_FLIGHT:-32}"
THREADS="${THREADS:-$(nproc)}"
SIZES="${SIZES:-1000 5000}"
BIN=target/release/anoflow

if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -v true >/dev/null 2>&1; then
    echo "installing GNU time (Debian package \`time\`) for peak RSS" >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq time >/dev/null
fi

if [[ "${1:-}" == "--build" || ! -x "$BIN" ]]; then
    cargo build --release -p anoflow-core -p anoflow-plugin-datasets -p anoflow-plugin-example \
        -p anoflow-plugin-postprocess -p anoflow-plugin-thresholds -p anoflow-plugin-metrics
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

printf '%-8s %-10s %-14s %-10s\n' samples wall_s peak_rss_MiB status
declare -A peak
for n in $SIZES; do
    good=$((n / 5))
    bad=$((n - good))
    log="$work/time-$n.txt"
    set +e
    /usr/bin/time -v -o "$log" "$BIN" run pipelines/load-5000.yaml \
        --set data.test_good="$good" --set data.test_defective="$bad" \
        --out "$work/run-$n" --no-cache --quiet --threads "$THREADS" --in-flight "$IN_FLIGHT" \
        >"$work/out-$n.txt" 2>&1
    code=$?
    set -e
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
    secs=$(echo "$wall" | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
    peak[$n]=$((kb / 1024))
    printf '%-8s %-10s %-14s %-10s\n' "$n" "$secs" "${peak[$n]}" "$([[ $code == 0 ]] && echo ok || echo "exit $code")"
    if [[ $code != 0 ]]; then
        tail -20 "$work/out-$n.txt" >&2
        exit 1
    fi
done

set -- $SIZES
first=$1
last=${!#}
if (( peak[$last] * 4 > peak[$first] * 5 )); then
    echo "FAIL: peak RSS grew from ${peak[$first]} MiB ($first samples) to ${peak[$last]} MiB ($last samples)" >&2
    exit 1
fi
echo "ok: peak RSS ${peak[$first]} MiB at $first samples, ${peak[$last]} MiB at $last samples (in flight $IN_FLIGHT, threads $THREADS)"
