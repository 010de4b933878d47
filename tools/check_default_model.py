#!/usr/bin/env python3
"""Checks models/mobilenet_v2.onnx on real photos: each must get one of its known ImageNet classes.

The photos come from the scikit-image wheel's `skimage/data/` (BSD-3-Clause); the wheel is fetched
with `pip download` and read as a zip (nothing installed). Images are resized (shorter side 256,
bilinear, half-pixel) and centre-cropped to 224, as torchvision's ImageNet evaluation does.

`--write-fixtures DIR` also writes those 224x224 crops as PNGs (the Rust tests of the onnx plugin
read them from plugins/onnx/test-data/).

Needs: `pip install numpy onnxruntime` (PNG decoding and encoding are done here with zlib).
Usage: python3 tools/check_default_model.py [--model models/mobilenet_v2.onnx] [--write-fixtures DIR]
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SKIMAGE_PACKAGE = "scikit-image==0.26.0"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

# photo -> (accepted ImageNet class indices, what they are)
EXPECTED = {
    "chelsea": ({281, 282, 283, 284, 285, 287}, "tabby / tiger cat / Persian / Siamese / Egyptian cat / lynx"),
    "coffee": ({504, 967, 968}, "coffee mug / espresso / cup"),
    "motorcycle_left": ({665, 670}, "moped / motor scooter"),
}


def read_png(data: bytes) -> np.ndarray:
    """Decodes an 8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA) to HxWx3 uint8."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {color}, interlace {interlace})")
    raw = zlib.decompress(idat)
    stride = width * channels
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        else:  # sub, average, paeth depend on the reconstructed left neighbour: go pixel by pixel
            cur = np.zeros(stride, np.int32)
            for i in range(stride):
                a = cur[i - channels] if i >= channels else 0
                b, c = prev[i], prev[i - channels] if i >= channels else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 0xFF
        out[y] = cur
        prev = cur
    img = out.reshape(height, width, channels)
    if channels in (1, 2):
        img = np.repeat(img[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def write_png(path: Path, img: np.ndarray) -> None:
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(data)


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (align_corners=False), edges clamped."""
    h, w = img.shape[:2]

    def axis(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    f = img.astype(np.float32)
    rows = f[y0] * (1 - fy)[:, None, None] + f[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def resize_crop(img: np.ndarray, short: int = 256, crop: int = 224) -> np.ndarray:
    h, w = img.shape[:2]
    scale = short / min(h, w)
    nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
    r = resize_bilinear(img, nh, nw)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return np.clip(np.rint(r[top : top + crop, left : left + crop]), 0, 255).astype(np.uint8)


def skimage_photos(cache_dir: Path) -> dict[str, np.ndarray]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("scikit_image-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        subprocess.run(cmd + ["--dest", str(cache_dir), SKIMAGE_PACKAGE], check=True, stdout=sys.stderr)
        wheels = sorted(cache_dir.glob("scikit_image-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        return {name: read_png(z.read(f"skimage/data/{name}.png")) for name in EXPECTED}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "mobilenet_v2.onnx")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "images")
    ap.add_argument("--write-fixtures", type=Path)
    args = ap.parse_args()

    import onnxruntime as ort

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    failures = 0
    for name, photo in skimage_photos(args.cache_dir).items():
        crop = resize_crop(photo)
        if args.write_fixtures:
            args.write_fixtures.mkdir(parents=True, exist_ok=True)
            write_png(args.write_fixtures / f"{name}.png", crop)
        x = ((crop.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]
        (logits,) = session.run(["logits"], {"image": np.ascontiguousarray(x)})
        p = np.exp(logits[0] - logits[0].max())
        p /= p.sum()
        top5 = np.argsort(-p)[:5]
        accepted, what = EXPECTED[name]
        ok = int(top5[0]) in accepted
        failures += not ok
        shown = ", ".join(f"{i}:{p[i]:.3f}" for i in top5)
        print(f"{'ok  ' if ok else 'FAIL'} {name}: top-5 {shown} (expected one of {sorted(accepted)}: {what})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
