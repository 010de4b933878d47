#!/usr/bin/env bash
# A whole run against an independent Python reference, back to back on the same data:
#   ours      `pipelines/mvtec-ad-patchcore.yaml` as shipped (with its calibration), --no-cache;
#   ours-core the same file without the calibrated nodes and the `calibrate:` section, so it
#             does exactly the reference's steps (THR and TTT4AS into the metrics), --no-cache;
#   python    tools/whole_run_reference.py (numpy, onnxruntime, FAISS, scikit-learn).
# Prints wall and CPU times (user + system, every thread) with the ratios, peak RSS, per-phase
# times (ours from run.json, with each phase's busy/(wall x threads) and CPU/(wall x threads))
# and the figures of both, as a check that they do the same work. On a shared machine the CPU
# ratio is the steadier one: the wall ratio moves with what else runs.
#
# usage: tools/bench_whole_run.sh [synthetic] [photo] [synthetic448]   (default: the first two)
#        synthetic448: two synthetic categories (woven, pill) with 250 train images each, at
#        the 448 pipeline's settings (resize 512, crop 448, coreset 1 %), ours-core and python only
#        RUNS="python" tools/bench_whole_run.sh photo   re-runs only those of ours ours-core python
#        and prints the table with the others' last results
# Needs the release build (cargo build --release --workspace), models/mobilenet_v2.onnx
# (tools/setup.sh) and python3 with venv; the Python packages go into $OUT/venv.
# OUT (default target/bench-whole-run) holds the datasets, runs and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR="$PWD"
OUT="$(realpath -m "${OUT:-target/bench-whole-run}")"
BIN="$ROOT_DIR/target/release/anoflow"
SETS=("$@")
[ ${#SETS[@]} -eq 0 ] && SETS=(synthetic photo)
for f in "$BIN" "$ROOT_DIR/target/release/make-synthetic" "$ROOT_DIR/models/mobilenet_v2.onnx"; do
  [ -e "$f" ] || { echo "missing $f: run cargo build --release --workspace and tools/setup.sh" >&2; exit 1; }
done
mkdir -p "$OUT"

VENV="$OUT/venv"
if ! "$VENV/bin/python" -c "import numpy, onnx, onnxruntime, sklearn, faiss, PIL, scipy, yaml" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy onnx onnxruntime scikit-learn faiss-cpu pillow scipy pyyaml
fi
PY="$VENV/bin/python"

# The shipped pipeline reduced to the reference's steps.
CORE="$OUT/mvtec-ad-patchcore-core.yaml"
"$PY" - "$ROOT_DIR/pipelines/mvtec-ad-patchcore.yaml" "$CORE" <<'PY'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
p["name"] = "mvtec-ad-patchcore-core"
p.pop("calibrate", None)
for n in ["defects", "nrm", "level", "level_best", "thr_cal", "best"]:
    del p["nodes"][n]
p["nodes"]["eval"]["inputs"]["masks"] = ["thr.mask", "ttt.mask"]
yaml.safe_dump(p, open(sys.argv[2], "w"), sort_keys=False)
PY

dataset_root() {
  case "$1" in
    synthetic)
      # The shipped synthetic set (7 categories, 50 train, 30 test images each) in MVTec layout.
      [ -d "$OUT/synthetic" ] || "$ROOT_DIR/target/release/make-synthetic" --out "$OUT/synthetic" >/dev/null
      echo "$OUT/synthetic" ;;
    synthetic448)
      [ -d "$OUT/synthetic448" ] || "$ROOT_DIR/target/release/make-synthetic" --out "$OUT/synthetic448" \
        --categories woven,pill --train 250 >/dev/null
      echo "$OUT/synthetic448" ;;
    photo)
      [ -d "$ROOT_DIR/data/photo-demo" ] || "$PY" tools/make_photo_demo.py --out "$ROOT_DIR/data/photo-demo" >&2
      echo "$ROOT_DIR/data/photo-demo" ;;
    *) echo "unknown set $1 (synthetic | photo | synthetic448)" >&2; exit 2 ;;
  esac
}

timed() {  # timed LOG CMD...: runs CMD; LOG.time gets wall s, peak RSS KB, user s, system s
  local log="$1"; shift
  /usr/bin/time -f "%e %M %U %S" -o "$log.time" "$@" >"$log" 2>&1
}

for set in "${SETS[@]}"; do
  root="$(dataset_root "$set")"
  echo "== $set: $root (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  ours_args=(); py_args=(); runs="ours ours-core python"
  if [ "$set" = synthetic448 ]; then
    ours_args=(--set prep.resize=512 --set prep.crop=448 --set backbone.input_size=448 --set scorer.coreset=0.01)
    py_args=(--resize 512 --crop 448 --coreset 0.01); runs="ours-core python"
  fi
  for run in ${RUNS:-$runs}; do
    case "$run" in
      ours) timed "$OUT/$set-ours.log" "$BIN" run pipelines/mvtec-ad-patchcore.yaml --set "vars.root=$root" \
              --no-cache --out "$OUT/$set-ours" --replace -q ;;
      ours-core) timed "$OUT/$set-ours-core.log" "$BIN" run "$CORE" --set "vars.root=$root" "${ours_args[@]}" \
              --no-cache --out "$OUT/$set-ours-core" --replace -q ;;
      python) timed "$OUT/$set-python.log" "$PY" tools/whole_run_reference.py "$root" "${py_args[@]}" ;;
      *) echo "unknown run $run (ours | ours-core | python)" >&2; exit 2 ;;
    esac
  done
  "$PY" - "$OUT" "$set" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
def measured(log):
    fields = open(f"{out}/{name}-{log}.log.time").read().split()
    wall, rss = float(fields[0]), int(fields[1]) / 1024
    return wall, rss, float(fields[2]) + float(fields[3]) if len(fields) >= 4 else float("nan")
py = json.loads(open(f"{out}/{name}-python.log").read().strip().splitlines()[-1])
py_wall, py_rss, py_cpu = measured("python")
def figures(run):
    recs = json.load(open(f"{out}/{name}-{run}/eval/results.json"))["records"]
    def get(source, metric, subset="all"):
        for r in recs:
            if r["category"] == "mean" and r["source"] == source and r["metric"] == metric and r["subset"] == subset:
                return r["value"]
        return float("nan")
    return {"pixel_auroc": get("scorer.score", "pixel_auroc"), "aupro": get("scorer.score", "aupro"),
            "f1_max": get("scorer.score", "f1_max"), "image_auroc": get("scorer.score", "image_auroc"),
            "thr_pixel_f1": get("thr.mask", "f1"), "ttt_pixel_f1": get("ttt.mask", "f1")}
print(f"load average now: {open('/proc/loadavg').read().split()[:3]}")
print(f"{'run':<10} {'wall s':>8} {'python/ours':>11} {'CPU s':>8} {'python/ours':>11} {'peak RSS MB':>11}"
      "   phases: wall s (busy/(wall x threads), CPU s/(wall x threads))")
print(f"{'python':<10} {py_wall:>8.1f} {'':>11} {py_cpu:>8.1f} {'':>11} {py_rss:>11.0f}   " +
      ", ".join(f"{k} {v:.1f} (CPU {py.get('phases_cpu', {}).get(k, float('nan')):.1f} s)" for k, v in py["phases"].items()))
import os
ran = [run for run in ["ours-core", "ours"] if os.path.exists(f"{out}/{name}-{run}/run.json")]
rows = {}
for run in ran:
    wall, rss, cpu = measured(run)
    phases = json.load(open(f"{out}/{name}-{run}/run.json"))["run"]["phases"]
    desc = ", ".join(
        f"{p['name']} {p['wall_seconds']:.1f} ({p['utilization']:.2f}, "
        f"{(p.get('cpu_seconds') or 0) / max(1e-9, p['wall_seconds'] * p['threads']):.2f})" for p in phases)
    print(f"{run:<10} {wall:>8.1f} {py_wall / wall:>10.2f}x {cpu:>8.1f} {py_cpu / cpu:>10.2f}x {rss:>11.0f}   {desc}")
    rows[run] = figures(run)
keys = list(rows[ran[0]])
rows["python"] = {k: py[k] for k in keys}
print(f"{'figures':<10} " + " ".join(f"{k:>12}" for k in keys))
for run in ["python"] + ran:
    print(f"{run:<10} " + " ".join(f"{rows[run][k]:>12.4f}" for k in keys))
PY
done
