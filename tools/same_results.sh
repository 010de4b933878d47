#!/usr/bin/env bash
# Do two builds give the same results? Runs every shipped pipeline (or those named) with the
# binary of BASE and with this checkout's build, back to back, without caches, and compares
# every sink's results.json and results.csv and the calibration's choices byte for byte.
# For a change that must not change results (a refactor, a faster kernel):
#
#   tools/same_results.sh [--quick] BASE [PIPELINE...]
#
# BASE: a git revision (built in a worktree under target/same-results/; its own pipeline
# files run with its binary) or a directory holding an `anoflow` binary and its plugin
# libraries (then BASE_REV=<revision> takes the base's pipeline files from that revision,
# for a change that also changed how pipelines are written). --quick runs two categories of each
# pipeline (minutes instead of about an hour on 2 cores). Pipelines whose data or models are
# not here are skipped and listed. Exit status 1 when any result differs; the runs stay in
# target/same-results/runs/ to inspect.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
if [[ ${1:-} == --quick ]]; then quick=1; shift; fi
base=${1:?usage: tools/same_results.sh [--quick] BASE [PIPELINE...]}
shift
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(tools/fetch_onnxruntime.sh)}"
work=target/same-results
mkdir -p "$work/runs"

base_rev=${BASE_REV:-}
if [[ -x $base/anoflow ]]; then
    base_bin=$(cd "$base" && pwd)/anoflow
else
    rev=$(git rev-parse --verify "$base^{commit}")
    base_rev=$rev
    tree=$work/base-$rev
    [[ -d $tree ]] || git worktree add --detach -q "$tree" "$rev"
    echo "building $rev in $tree" >&2
    (cd "$tree" && CARGO_TARGET_DIR=$(pwd)/target cargo build --release --workspace -q)
    base_bin=$tree/target/release/anoflow
fi
# NEW_BIN_DIR: compare the binaries there (already built) instead of building this checkout.
if [[ -n ${NEW_BIN_DIR:-} ]]; then
    new_bin=$(cd "$NEW_BIN_DIR" && pwd)/anoflow
else
    cargo build --release --workspace -q
    new_bin=$(pwd)/target/release/anoflow
fi

# name | pipeline | what it needs | --quick overrides
# (`data` is the source node of every shipped pipeline.)
synthetic_quick="--set data.categories=[pill,carpet]"
photo_quick="--set data.category=brick"
table=(
    "quickstart|pipelines/quickstart.yaml||$synthetic_quick"
    "binarizers-calibrated|pipelines/binarizers-calibrated.yaml||$synthetic_quick"
    "binarizers-calibrated-mvtec|pipelines/binarizers-calibrated-mvtec.yaml|data/photo-demo|$photo_quick"
    "binarizers-percentile|pipelines/binarizers-percentile.yaml||$synthetic_quick"
    "binarizers-synthetic|pipelines/binarizers-synthetic.yaml||$synthetic_quick"
    "scorers-ttt4as|pipelines/scorers-ttt4as.yaml||--set data.categories=[pill,tiles]"
    "ttt4as-chain|pipelines/ttt4as-chain.yaml||--set data.categories=[pill,washer]"
    # Objects: plane removal leaves nothing of a flat texture (carpet) to score.
    "multimodal-synthetic|pipelines/multimodal-synthetic.yaml||--set data.categories=[pill,washer]"
    "photo-demo|pipelines/photo-demo.yaml|data/photo-demo|$photo_quick"
    "photo-demo-2|pipelines/photo-demo-2.yaml|data/photo-demo-2|--set data.category=fabric"
    "mvtec-ad-patchcore|pipelines/mvtec-ad-patchcore.yaml|data/photo-demo|$photo_quick"
    "mvtec3d|pipelines/mvtec3d.yaml|${MVTEC3D_ROOT:-data/mvtec3d}|--set data.category=bagel"
    "mvtec-ad-wrn50|pipelines/mvtec-ad-wrn50.yaml|models/wide_resnet50.onnx|$photo_quick"
    "mvtec-ad-dinov2|pipelines/mvtec-ad-dinov2.yaml|models/dinov2_vits14.onnx|$photo_quick"
    "patchcore-hires|pipelines/patchcore-hires.yaml||$synthetic_quick --set vars.train=60"
    "load-5000|pipelines/load-5000.yaml||--set data.test_good=100 --set data.test_defective=400"
)

# What must be equal: each sink's results, and what calibration chose.
fingerprint() {
    local run=$1
    find "$run" -mindepth 2 -maxdepth 2 \( -name results.json -o -name results.csv \) | sort | while read -r f; do
        echo "== ${f#"$run"/}"
        cat "$f"
    done
    python3 - "$run/run.json" <<'EOF'
import json, sys
cal = json.load(open(sys.argv[1]))["run"].get("calibration") or {}
for g in cal.get("groups", []):
    for c in g["categories"]:
        # The chosen values, not their param paths: a change of config shape renames the paths.
        chosen = [c["chosen"][k] for k in sorted(c["chosen"])]
        print("== calibration", g["target"], c["category"], json.dumps(chosen, sort_keys=True), c.get("flag"))
EOF
}

# The MVTec AD pipelines read MVTEC_ROOT: without it, the photo set that ships.
export MVTEC_ROOT=${MVTEC_ROOT:-$(pwd)/data/photo-demo}
differ=0
skipped=()
printf '%-28s %9s %9s  %s\n' pipeline "base s" "new s" result
for row in "${table[@]}"; do
    IFS='|' read -r name file needs overrides <<<"$row"
    if (($# > 0)) && [[ " $* " != *" $name "* ]]; then continue; fi
    if [[ -n $needs && ! -e $needs ]]; then skipped+=("$name (no $needs)"); continue; fi
    args=()
    if ((quick)) && [[ -n $overrides ]]; then read -r -a args <<<"$overrides"; fi
    times=()
    for side in base new; do
        bin=$base_bin
        pipeline=$file
        if [[ $side == base && -n $base_rev ]]; then
            # Beside the current file, so relative paths in it resolve the same way.
            pipeline=$(dirname "$file")/.same-results-base-$(basename "$file")
            git show "$base_rev:$file" >"$pipeline"
        fi
        [[ $side == new ]] && bin=$new_bin
        out=$work/runs/$name-$side
        rm -rf "$out"
        start=$(date +%s.%N)
        if ! "$bin" run "$pipeline" "${args[@]}" -q --no-cache --out "$out" >"$work/runs/$name-$side.log" 2>&1; then
            echo "$name: the $side build failed; see $work/runs/$name-$side.log" >&2
            differ=1
        fi
        times+=("$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")")
        [[ $pipeline != "$file" ]] && rm -f "$pipeline"
        fingerprint "$out" >"$work/runs/$name-$side.fingerprint" 2>/dev/null || true
    done
    if cmp -s "$work/runs/$name-base.fingerprint" "$work/runs/$name-new.fingerprint" \
        && [[ -s $work/runs/$name-new.fingerprint ]]; then
        result=identical
    else
        result="DIFFERENT (diff $work/runs/$name-{base,new}.fingerprint)"
        differ=1
    fi
    printf '%-28s %9s %9s  %s\n' "$name" "${times[0]}" "${times[1]}" "$result"
done
for s in "${skipped[@]}"; do echo "skipped: $s"; done
exit $differ
