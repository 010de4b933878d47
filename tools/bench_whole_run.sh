#!/usr/bin/env bash
# A whole run against an independent Python reference, back to back on the same data:
#   ours      `pipelines/mvtec-ad-patchcore.yaml` as shipped (with its calibration), --no-cache;
#   ours-core the same file without the calibrated nodes and the `calibrate:` section, so it
#             does exactly the reference's steps (THR and TTT4AS into the metrics), --no-cache;
#   python    tools/whole_run_reference.py (numpy, onnxruntime, FAISS, scikit-learn).
# Prints wall times, ratios, peak RSS, per-phase times (ours from run.json, with each phase's
# busy/(wall x threads) and CPU time) and the figures of both, as a check that they do the same work.
#
# usage: tools/bench_whole_run.sh [synthetic] [photo]   (default: both)
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
if ! "$VENV/bin/python" -c "import numpy, onnxruntime, sklearn, faiss, PIL, scipy, yaml" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy onnxruntime scikit-learn faiss-cpu pillow scipy pyyaml
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
    photo)
      [ -d "$ROOT_DIR/data/photo-demo" ] || "$PY" tools/make_photo_demo.py --out "$ROOT_DIR/data/photo-demo" >&2
      echo "$ROOT_DIR/data/photo-demo" ;;
    *) echo "unknown set $1 (synthetic | photo)" >&2; exit 2 ;;
  esac
}

timed() {  # timed LOG CMD...: runs CMD, appends wall seconds and peak RSS (KB) to LOG
  local log="$1"; shift
  /usr/bin/time -f "%e %M" -o "$log.time" "$@" >"$log" 2>&1
}

for set in "${SETS[@]}"; do
  root="$(dataset_root "$set")"
  echo "== $set: $root (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  timed "$OUT/$set-ours.log" "$BIN" run pipelines/mvtec-ad-patchcore.yaml --set "vars.root=$root" \
    --no-cache --out "$OUT/$set-ours" --replace -q
  timed "$OUT/$set-ours-core.log" "$BIN" run "$CORE" --set "vars.root=$root" \
    --no-cache --out "$OUT/$set-ours-core" --replace -q
  timed "$OUT/$set-python.log" "$PY" tools/whole_run_reference.py "$root"
  "$PY" - "$OUT" "$set" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
def wall_rss(log):
    wall, rss = open(f"{out}/{name}-{log}.log.time").read().split()[-2:]
    return float(wall), int(rss) / 1024
py = json.loads(open(f"{out}/{name}-python.log").read().strip().splitlines()[-1])
py_wall, py_rss = wall_rss("python")
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
print(f"{'run':<10} {'wall s':>8} {'python/ours':>11} {'peak RSS MB':>11}   phases: wall s (busy/(wall x threads), CPU s/(wall x threads))")
print(f"{'python':<10} {py_wall:>8.1f} {'':>11} {py_rss:>11.0f}   " +
      ", ".join(f"{k} {v:.1f}" for k, v in py["phases"].items()))
rows = {}
for run in ["ours-core", "ours"]:
    wall, rss = wall_rss(run)
    phases = json.load(open(f"{out}/{name}-{run}/run.json"))["run"]["phases"]
    desc = ", ".join(
        f"{p['name']} {p['wall_seconds']:.1f} ({p['utilization']:.2f}, "
        f"{(p.get('cpu_seconds') or 0) / max(1e-9, p['wall_seconds'] * p['threads']):.2f})" for p in phases)
    print(f"{run:<10} {wall:>8.1f} {py_wall / wall:>10.2f}x {rss:>11.0f}   {desc}")
    rows[run] = figures(run)
rows["python"] = {k: py[k] for k in rows["ours"]}
keys = list(rows["ours"])
print(f"{'figures':<10} " + " ".join(f"{k:>12}" for k in keys))
for run in ["python", "ours-core", "ours"]:
    print(f"{run:<10} " + " ".join(f"{rows[run][k]:>12.4f}" for k in keys))
PY
done
