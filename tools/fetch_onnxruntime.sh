#!/usr/bin/env bash
# Gets ONNX Runtime's shared library (libonnxruntime.so.X.Y.Z) out of the `onnxruntime` Python
# wheel, without installing anything, into <project>/.cache/onnxruntime/. Idempotent: a second
# run finds the library and only prints its path. Prints the library's path on stdout.
#
# Needs: python3 with pip, unzip or python3's zipfile (used here), access to the Python package
# registry on first run. Override the version with ORT_VERSION=1.xx.y.
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.32.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/onnxruntime"
lib="$dest/libonnxruntime.so.$ORT_VERSION"

if [[ -f "$lib" ]]; then
    echo "$lib"
    exit 0
fi

mkdir -p "$dest/wheels"
if ! ls "$dest/wheels"/onnxruntime-"$ORT_VERSION"-*.whl >/dev/null 2>&1; then
    echo "fetch_onnxruntime: downloading the onnxruntime $ORT_VERSION wheel" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$dest/wheels" "onnxruntime==$ORT_VERSION" >&2
fi
wheel="$(ls "$dest/wheels"/onnxruntime-"$ORT_VERSION"-*.whl | head -n 1)"

# Extract only the versioned library; write to a temp name, then rename (atomic).
python3 - "$wheel" "$lib" <<'PY'
import os, re, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if re.search(r"onnxruntime/capi/libonnxruntime\.so\.\d+\.\d+\.\d+$", n)]
    if not names:
        sys.exit(f"fetch_onnxruntime: no libonnxruntime.so.X.Y.Z inside {wheel}")
    tmp = out + ".tmp"
    with z.open(names[0]) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
PY
rm -rf "$dest/wheels"
echo "$lib"
