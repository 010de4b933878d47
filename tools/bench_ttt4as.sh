#!/usr/bin/env bash
# Per-image TTT4AS: the Rust path (cargo bench) and the numpy + scikit-learn reference on the
# same case, in one run. Needs python3 with numpy, scipy and scikit-learn
# (pip install numpy scipy scikit-learn); the Rust tests do not.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-50}"
OUT="$(realpath -m "${OUT:-target/bench-ttt4as}")"  # absolute: cargo bench runs in the crate dir
mkdir -p "$OUT"
cargo bench -p anoflow-plugin-ttt4as --bench ttt4as -- --runs "$RUNS" --out "$OUT"
python3 -c "import numpy, scipy, sklearn" 2>/dev/null || {
  echo "python reference skipped: install numpy, scipy and scikit-learn" >&2
  exit 1
}
python3 tools/bench_ttt4as_reference.py "$OUT" --runs "$RUNS"
python3 - "$OUT" <<'PY'
import sys
d = sys.argv[1]
rust = float(open(f"{d}/rust_median_ms.txt").read())
py = float(open(f"{d}/python_median_ms.txt").read())
print(f"speed-up of the Rust path over the Python reference (medians): {py / rust:.1f}x")
PY
