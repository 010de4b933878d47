#!/usr/bin/env python3
"""Reference for the onnx-features benchmark: the same ONNX model, the same outputs and the same
preprocessing (u8 HWC -> normalized NCHW float) through Python's onnxruntime, batch 1 and 8.
Twice: on the whole model (onnxruntime runs every layer up to the logits, whatever it fetches)
and on the model cut to the two outputs with `onnx.utils.extract_model`, as the Rust stage
cuts it, so the comparison is with what a user who knows that writes.

Needs: `pip install numpy onnx onnxruntime`.
Usage: python3 tools/bench_onnx_reference.py [--threads 2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import tempfile

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
OUTPUTS = ["features.7.expand", "features.14.expand"]


def rate(budget: float, per_call: int, f) -> tuple[float, float]:
    """Best and median images/s over 5 rounds of budget / 5 (as the Rust bench)."""
    for _ in range(3):
        f()
    rounds = []
    for _ in range(5):
        start, images = time.perf_counter(), 0
        while time.perf_counter() - start < budget / 5:
            f()
            images += per_call
        rounds.append(images / (time.perf_counter() - start))
    rounds.sort()
    return rounds[4], rounds[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "mobilenet_v2.onnx")
    args = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    p = np.arange(224 * 224 * 3)
    images = [((p * 31 + i * 17) % 251).astype(np.uint8).reshape(224, 224, 3) for i in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "cut.onnx"
        onnx.utils.extract_model(str(args.model), str(cut), ["image"], OUTPUTS)
        for label, model in [("whole model", args.model), ("cut to the outputs", cut)]:
            session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

            def run(batch, session=session):
                x = np.stack([((im.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1) for im in batch])
                maps = session.run(OUTPUTS, {"image": x})
                # Same output layout as the Rust stage: channels-last, one array per image and layer.
                return [np.ascontiguousarray(m.transpose(0, 2, 3, 1)) for m in maps]

            b1 = rate(args.seconds, 1, lambda: run(images[:1]))
            b8 = rate(args.seconds, 8, lambda: run(images))
            for what, (best, median) in [("batch=1", b1), ("batch=8", b8)]:
                print(
                    f"python {label} threads={args.threads} {what}: best {best:.1f} images/s "
                    f"({1000 / best:.2f} ms/image), median {median:.1f}"
                )
    print(f"python peak RSS MB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
    print(f"python onnxruntime {ort.__version__}")


if __name__ == "__main__":
    main()
