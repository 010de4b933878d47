#!/usr/bin/env bash
# A whole run against an independent Python reference, back to back on the same data:
#   ours       `pipelines/mvtec-ad-patchcore.yaml` as shipped (with its calibration), --no-cache;
#   ours-core  the same file without the calibrated nodes and the `calibrate:` section, so it
#              does exactly the reference's core steps (THR and TTT4AS into the metrics), --no-cache;
#   python     tools/whole_run_reference.py (numpy, onnxruntime, FAISS, scikit-learn): the
#              counterpart of ours-core;
#   python-cal the same with --calibrate (synthetic defects, the level and THR k searches, the
#              family pick, and those masks in the test phase): the counterpart of ours.
# Prints wall and CPU times (user + system, every thread) with the ratios of each pair
# (python / ours-core, python-cal / ours), peak RSS, per-phase times (ours from run.json, with
# each phase's busy/(wall x threads) and CPU/(wall x threads)), the figures of all, as a check
# that they do the same work, and the calibrated choices per category. On a shared machine the
# CPU ratio is the steadier one: the wall ratio moves with what else runs.
#
# usage: tools/bench_whole_run.sh [synthetic] [photo] [synthetic448]   (default: the first two)
#        synthetic448: two synthetic categories (woven, pill) with 250 train images each, at
#        the 448 pipeline's settings (resize 512, crop 448, coreset 1 %), ours-core and python only
#        RUNS="python python-cal" tools/bench_whole_run.sh photo   re-runs only those of ours
#        ours-core python python-cal and prints the table with the others' last results
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
  ours_args=(); py_args=(); runs="ours ours-core python python-cal"
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
      python-cal) timed "$OUT/$set-python-cal.log" "$PY" tools/whole_run_reference.py "$root" --calibrate \
              "${py_args[@]}" ;;
      *) echo "unknown run $run (ours | ours-core | python | python-cal)" >&2; exit 2 ;;
    esac
  done
  "$PY" - "$OUT" "$set" <<'PY'
import json, os, sys
out, name = sys.argv[1], sys.argv[2]
nan = float("nan")
def measured(run):
    fields = open(f"{out}/{name}-{run}.log.time").read().split()
    wall, rss = float(fields[0]), int(fields[1]) / 1024
    return wall, rss, float(fields[2]) + float(fields[3]) if len(fields) >= 4 else nan
def reference(run):  # the JSON line of a reference run, or None when it has not run (or failed)
    try:
        return json.loads(open(f"{out}/{name}-{run}.log").read().strip().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        return None
KEYS = ["pixel_auroc", "aupro", "f1_max", "image_auroc", "thr_pixel_f1", "ttt_pixel_f1",
        "best_pixel_f1", "level_best_pixel_f1", "thr_cal_pixel_f1"]
def figures(run):
    recs = json.load(open(f"{out}/{name}-{run}/eval/results.json"))["records"]
    def get(source, metric, subset="all"):  # the first record: pooled over pixels for the masks
        for r in recs:
            if r["category"] == "mean" and r["source"] == source and r["metric"] == metric and r["subset"] == subset:
                return r["value"]
        return nan
    f = {k: get("scorer.score", k) for k in KEYS[:4]}
    f.update({f"{m}_pixel_f1": get(f"{m}.mask", "f1") for m in ["thr", "ttt", "best", "level_best", "thr_cal"]})
    return f
def choices(run):  # {category: (level, k, pick)} of a calibrated run
    if run.startswith("python"):
        cal = (reference(run) or {}).get("calibration", {})
        return {c: (v["level"], v["k"], v["pick"]) for c, v in cal.items()}
    groups = json.load(open(f"{out}/{name}-{run}/run.json"))["run"].get("calibration", {}).get("groups", [])
    got = {}
    for g in groups:
        for c in g["categories"]:
            got.setdefault(c["category"], []).extend(c["chosen"].values())
    return {c: (v[0], v[1], str(v[2]).removesuffix(".mask")) for c, v in got.items() if len(v) == 3}
print(f"load average now: {open('/proc/loadavg').read().split()[:3]}")
print(f"{'run':<10} {'wall s':>8} {'ref/ours':>9} {'CPU s':>8} {'ref/ours':>9} {'peak RSS MB':>11}"
      "   phases: wall s (busy/(wall x threads), CPU s/(wall x threads)); reference: wall s (CPU s)")
rows, ran = {}, []
for ref, ours in [("python", "ours-core"), ("python-cal", "ours")]:
    py = reference(ref)
    if py is not None:
        wall, rss, cpu = measured(ref)
        print(f"{ref:<10} {wall:>8.1f} {'':>9} {cpu:>8.1f} {'':>9} {rss:>11.0f}   " + ", ".join(
            f"{k} {v:.1f} ({py.get('phases_cpu', {}).get(k, nan):.1f})" for k, v in py["phases"].items()))
        rows[ref] = {k: py.get(k, nan) for k in KEYS}
        ran.append(ref)
    if os.path.exists(f"{out}/{name}-{ours}/run.json"):
        wall, rss, cpu = measured(ours)
        phases = json.load(open(f"{out}/{name}-{ours}/run.json"))["run"]["phases"]
        desc = ", ".join(
            f"{p['name']} {p['wall_seconds']:.1f} ({p['utilization']:.2f}, "
            f"{(p.get('cpu_seconds') or 0) / max(1e-9, p['wall_seconds'] * p['threads']):.2f})" for p in phases)
        if py is not None:
            ref_wall, _, ref_cpu = measured(ref)
            ratios = f"{ref_wall / wall:>8.2f}x {cpu:>8.1f} {ref_cpu / cpu:>8.2f}x"
        else:
            ratios = f"{'':>9} {cpu:>8.1f} {'':>9}"
        print(f"{ours:<10} {wall:>8.1f} {ratios} {rss:>11.0f}   {desc}")
        rows[ours] = figures(ours)
        ran.append(ours)
print(f"{'figures':<10} " + " ".join(f"{k.removesuffix('_pixel_f1'):>12}" for k in KEYS)
      + "   (masks: F1 pooled over pixels)")
for run in ran:
    print(f"{run:<10} " + " ".join(f"{rows[run][k]:>12.4f}" for k in KEYS))
for run in [r for r in ["python-cal", "ours"] if r in ran]:
    print(f"{run:<10} choices (level, k, best): " + ", ".join(
        f"{c} {lv} / {k} / {pick}" for c, (lv, k, pick) in sorted(choices(run).items())))
PY
done
