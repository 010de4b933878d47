#!/usr/bin/env bash
# The quickstart split into 1, 2 and 4 tasks by category, all tasks of a split started at
# once (as array tasks on as many nodes would), then merged: the wall time until the last
# task ends, the CPU time of all tasks together, and the merge's. No cache, so every task
# fits what it owns. Prints a Markdown table (docs/PERFORMANCE.md, "Scale-out").
#
# usage: tools/bench_scale_out.sh [TASK COUNTS, default "1 2 4"]   (after cargo build --release --workspace)
# Environment: BENCH_THREADS threads per task (default 1; a 1-task run gets `nproc`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/anoflow"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(ls "$root"/.cache/onnxruntime/libonnxruntime.so.* | head -n 1)}"
counts=${1:-1 2 4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"

# /usr/bin/time writes "%e %U %S": wall, user and system seconds.
echo "| tasks | wall (last task) | CPU, all tasks | slowest / fastest task | merge wall | merge CPU | identical to 1 task |"
echo "|---:|---:|---:|---:|---:|---:|---|"
reference=""
for n in $counts; do
    out="$work/run$n"
    threads=${BENCH_THREADS:-1}
    [[ $n -eq 1 ]] && threads=$(nproc)
    start=$(date +%s.%N)
    pids=()
    for ((i = 0; i < n; i++)); do
        /usr/bin/time -f "%e %U %S" -o "$work/time$n.$i" \
            "$bin" run pipelines/quickstart.yaml --no-cache -q --threads "$threads" --out "$out" --shard "$i/$n" \
            > "$work/log$n.$i" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
    cpu=$(awk '{s += $2 + $3} END {printf "%.1f", s}' "$work"/time$n.*)
    spread=$(awk '{print $1}' "$work"/time$n.* | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.1f / %.1f s", hi, lo}')
    /usr/bin/time -f "%e %U %S" -o "$work/merge$n" "$bin" merge "$out" > "$work/mergelog$n" 2>&1
    read -r mwall muser msys < "$work/merge$n"
    same="-"
    if [[ -z "$reference" ]]; then
        reference="$out/merged"
    elif diff -rq "$reference/eval" "$out/merged/eval" >/dev/null && diff -rq "$reference/report" "$out/merged/report" >/dev/null; then
        same="yes (eval/, report/)"
    else
        same="**no**"
    fi
    printf "| %d | %.1f s | %s s | %s | %.2f s | %.2f s | %s |\n" "$n" "$wall" "$cpu" "$spread" "$mwall" \
        "$(awk -v a="$muser" -v b="$msys" 'BEGIN {print a + b}')" "$same"
done
