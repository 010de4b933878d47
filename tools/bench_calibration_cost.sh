#!/usr/bin/env bash
# Calibration's cost against PatchCore's fit, from each run's run.json: the calibrate phase's
# busy seconds (summed over workers) over the PatchCore node's fit_seconds. Each set runs twice:
# with a new, empty cache directory (the default mode: clean validation images come from the
# fit phase's entries) and with --no-cache.
#
# usage: tools/bench_calibration_cost.sh [photo] [quickstart] [mvtec-sized]   (default: all three)
#   photo        pipelines/mvtec-ad-patchcore.yaml on data/photo-demo (tools/make_photo_demo.py)
#   quickstart   pipelines/quickstart.yaml (7 synthetic categories)
#   mvtec-sized  pipelines/mvtec-ad-patchcore.yaml on 4 synthetic categories with 250 train
#                images each, written by make-synthetic (200 fit, 50 validation images)
# Needs the release build; OUT (default target/bench-calibration-cost) holds data and runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/target/release/anoflow"
OUT="$(realpath -m "${OUT:-target/bench-calibration-cost}")"
SETS=("$@")
[ ${#SETS[@]} -eq 0 ] && SETS=(photo quickstart mvtec-sized)
mkdir -p "$OUT"

report() {  # report RUN_DIR LABEL
  python3 - "$1" "$2" <<'PY'
import json, sys
run = json.load(open(sys.argv[1] + "/run.json"))["run"]
phases = {p["name"]: p for p in run["phases"]}
fit = sum(n["fit_seconds"] or 0 for n in run["nodes"] if n["stage"] == "patchcore")
cal = phases["calibrate"]
print(f"{sys.argv[2]:<26} wall {run['seconds']:6.1f} s   calibrate: wall {cal['wall_seconds']:5.1f} s, "
      f"busy {cal['busy_seconds']:6.2f} s   PatchCore fit {fit:6.2f} s   calibration / fit {cal['busy_seconds'] / fit:.2f}")
PY
}

for set in "${SETS[@]}"; do
  case "$set" in
    photo)
      [ -d data/photo-demo ] || python3 tools/make_photo_demo.py --out data/photo-demo
      args=(pipelines/mvtec-ad-patchcore.yaml --set "vars.root=$PWD/data/photo-demo") ;;
    quickstart) args=(pipelines/quickstart.yaml) ;;
    mvtec-sized)
      root="$OUT/mvtec-sized-data"
      [ -d "$root" ] || "$PWD/target/release/make-synthetic" --out "$root" \
        --categories woven,pill,carpet,screw --train 250 --seed 3 >/dev/null
      args=(pipelines/mvtec-ad-patchcore.yaml --set "vars.root=$root") ;;
    *) echo "unknown set $set (photo | quickstart | mvtec-sized)" >&2; exit 2 ;;
  esac
  rm -rf "$OUT/cache"
  "$BIN" run "${args[@]}" --cache "$OUT/cache" --out "$OUT/$set-cache" --replace -q >/dev/null
  report "$OUT/$set-cache" "$set, empty cache"
  "$BIN" run "${args[@]}" --no-cache --out "$OUT/$set-no-cache" --replace -q >/dev/null
  report "$OUT/$set-no-cache" "$set, --no-cache"
  rm -rf "$OUT/cache"
done
