#!/usr/bin/env python3
"""Assemble a demo anomaly-detection dataset in the MVTec AD layout from real photographs.

The photographs are the sample images shipped inside the scikit-image wheel (skimage/data/):
the textures brick.png, grass.png and gravel.png (512x512 grey) and the colour photo coffee.png.
Nothing is installed: the wheel is only downloaded and read as a zip file.

    pip download --no-deps --only-binary=:all: scikit-image -d /tmp/wheels   # once (or let the script do it)
    pip install numpy                                                          # the only dependency
    python3 tools/make_photo_demo.py --out data/photo-demo [--wheel /tmp/wheels/scikit_image-*.whl]
        [--seed 0] [--train 40] [--test-good 10] [--test-defective 20] [--size 256]

Without --wheel the script runs the `pip download` above into a temporary directory.

Output (exactly what the `mvtec-ad` source reads):
    <out>/<category>/train/good/NNN.png
    <out>/<category>/test/good/NNN.png
    <out>/<category>/test/<defect>/NNN.png
    <out>/<category>/ground_truth/<defect>/NNN_mask.png     (0 / 255)
Categories: brick, grass, gravel (size x size crops of the texture at random positions, with random
flips / 90-degree rotations and +-10% gain) and coffee (the whole photo, jittered by up to 12 px and
+-8% gain, resized to size x size). Test crops come from the same photos as the training crops.
Defects: scratch (a thin smooth bright or dark line), crack (a jagged dark line with a branch),
hole (an irregular dark pit with a lit rim), stain (a translucent irregular blob),
contamination (a blob-shaped patch pasted from ANOTHER photograph). The mask is exactly the set of
pixels the defect changed. The same --seed gives the same files.
"""

import argparse
import glob
import io
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np

TEXTURES = ["brick", "grass", "gravel"]
OBJECTS = ["coffee"]
DEFECTS = ["contamination", "crack", "hole", "scratch", "stain"]


# ---------------------------------------------------------------------------------------------
# PNG without Pillow


def read_png(data):
    """Decodes an 8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA) to HxWxC uint8."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, palette = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
    if depth != 8 or interlace:
        raise ValueError(f"unsupported PNG (bit depth {depth}, interlace {interlace})")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        f, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:
            cur = np.zeros(stride, np.int32)
            for x in range(stride):
                a = cur[x - channels] if x >= channels else 0
                b = prev[x]
                if f == 1:
                    p = a
                elif f == 3:
                    p = (a + b) >> 1
                else:
                    c = prev[x - channels] if x >= channels else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    p = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur[x] = (line[x] + p) & 255
        out[y] = cur
        prev = cur
    img = out.reshape(height, width, channels)
    if ctype == 3:
        img = palette[img[:, :, 0]]
    return img


def png_bytes(img):
    img = np.ascontiguousarray(img, np.uint8)
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    raw = b"".join(b"\0" + img[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Photos


def find_wheel(path):
    if path:
        return path
    tmp = tempfile.mkdtemp(prefix="skimage-wheel-")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "scikit-image", "-d", tmp]
    subprocess.run(cmd, check=True)
    wheels = glob.glob(os.path.join(tmp, "scikit_image-*.whl"))
    if not wheels:
        sys.exit(f"pip download left no scikit-image wheel in {tmp}")
    return wheels[0]


def load_photos(wheel):
    photos = {}
    with zipfile.ZipFile(wheel) as z:
        for name in TEXTURES + OBJECTS:
            member = f"skimage/data/{name}.png"
            try:
                img = read_png(z.read(member))
            except KeyError:
                sys.exit(f"{wheel}: no {member} (expected a scikit-image wheel that ships its sample data)")
            img = img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img[:, :, :1], 3, axis=2)
            photos[name] = img.astype(np.float32)
    return photos


def resize_bilinear(img, nh, nw):
    """Half-pixel-centre bilinear resize (used to shrink by less than 2x: no antialiasing needed)."""
    h, w = img.shape[:2]
    ys = np.clip((np.arange(nh) + 0.5) * h / nh - 0.5, 0, h - 1)
    xs = np.clip((np.arange(nw) + 0.5) * w / nw - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def nominal(photos, category, rng, size):
    photo = photos[category]
    if category in TEXTURES:
        h, w = photo.shape[:2]
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        img = photo[y : y + size, x : x + size]
        img = np.rot90(img, rng.integers(0, 4))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        gain = rng.uniform(0.9, 1.1)
    else:
        h, w = photo.shape[:2]
        side = min(h, w)
        dy, dx = rng.integers(-12, 13, size=2)
        y = int(np.clip((h - side) // 2 + dy, 0, h - side))
        x = int(np.clip((w - side) // 2 + dx, 0, w - side))
        img = resize_bilinear(photo[y : y + side, x : x + side], size, size)
        gain = rng.uniform(0.92, 1.08)
    return np.clip(np.ascontiguousarray(img) * gain, 0, 255)


# ---------------------------------------------------------------------------------------------
# Defects: each returns the region it paints (bool HxW) after editing `img` in place.


def disc_mask(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r


def blob_mask(shape, cy, cx, r, rng):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    theta = np.arctan2(yy + 0.5 - cy, xx + 0.5 - cx)
    k = rng.uniform(0, 2 * np.pi, size=3)
    amp = rng.uniform(0.05, 0.25, size=3)
    radius = r * (1 + sum(a * np.sin((i + 2) * theta + p) for i, (a, p) in enumerate(zip(amp, k))))
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= radius**2


def stroke_mask(shape, points, width):
    m = np.zeros(shape, bool)
    for (ay, ax), (by, bx) in zip(points[:-1], points[1:]):
        steps = int(max(abs(by - ay), abs(bx - ax)) * 2) + 1
        for t in np.linspace(0, 1, steps):
            cy, cx = ay + (by - ay) * t, ax + (bx - ax) * t
            r = width / 2
            y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, shape[0]))
            x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, shape[1]))
            if y1 <= y0 or x1 <= x0:  # this part of the line left the image
                continue
            m[y0:y1, x0:x1] |= disc_mask((y1 - y0, x1 - x0), cy - y0, cx - x0, max(r, 0.5))
    return m


def walk(rng, y, x, length, wiggle):
    d = rng.uniform(0, 2 * np.pi)
    pts = [(y, x)]
    for _ in range(int(length / 2) + 1):
        d += rng.uniform(-wiggle, wiggle)
        y, x = y + 2 * np.sin(d), x + 2 * np.cos(d)
        pts.append((y, x))
    return pts


def add_defect(img, kind, rng, photos, category):
    size = img.shape[0]
    scale = float(np.exp(rng.uniform(np.log(4), np.log(0.2 * size))))  # 4 px .. ~50 px at 256
    margin = 16
    cy, cx = rng.uniform(margin, size - margin, size=2)
    if kind == "scratch":
        region = stroke_mask(img.shape[:2], walk(rng, cy, cx, 2.5 * scale, 0.08), rng.choice([1.0, 1.5, 2.5]))
        delta = rng.choice([-1, 1]) * rng.uniform(45, 90)
        img[region] = img[region] + delta
    elif kind == "crack":
        pts = walk(rng, cy, cx, 2.5 * scale, 0.7)
        region = stroke_mask(img.shape[:2], pts, rng.choice([1.0, 2.0]))
        by, bx = pts[len(pts) // 2]
        region |= stroke_mask(img.shape[:2], walk(rng, by, bx, scale, 0.7), 1.0)
        img[region] = img[region] * rng.uniform(0.25, 0.5)
    elif kind == "hole":
        r = max(2.5, 0.35 * scale)
        region = blob_mask(img.shape[:2], cy, cx, r, rng)
        inner = blob_mask(img.shape[:2], cy + 0.15 * r, cx + 0.15 * r, 0.75 * r, rng) & region
        img[region] = np.minimum(img[region] * 1.25 + 25, 255)  # lit rim
        img[inner] = rng.uniform(5, 25)
    elif kind == "stain":
        region = blob_mask(img.shape[:2], cy, cx, max(3.0, 0.6 * scale), rng)
        colour = np.array(rng.choice([[90, 60, 30], [40, 40, 35], [150, 140, 50], [110, 70, 90]]), np.float32)
        alpha = rng.uniform(0.3, 0.5)
        img[region] = img[region] * (1 - alpha) + colour * alpha
    elif kind == "contamination":
        others = [n for n in photos if n != category]
        src = photos[others[rng.integers(0, len(others))]]
        region = blob_mask(img.shape[:2], cy, cx, max(3.0, 0.5 * scale), rng)
        sy, sx = rng.integers(0, src.shape[0] - size + 1), rng.integers(0, src.shape[1] - size + 1)
        patch = src[sy : sy + size, sx : sx + size] * rng.uniform(0.7, 1.2)
        img[region] = patch[region]
    else:
        raise ValueError(kind)
    return region


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheel", help="a downloaded scikit-image wheel (default: pip download it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--test-good", type=int, default=10)
    ap.add_argument("--test-defective", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    if not 64 <= args.size <= 512:
        sys.exit("--size must be within 64..512 (the textures are 512x512)")
    photos = load_photos(find_wheel(args.wheel))
    written = 0
    for ci, category in enumerate(TEXTURES + OBJECTS):
        rng = np.random.default_rng([args.seed, ci])
        cat_dir = os.path.join(args.out, category)
        for i in range(args.train):
            img = nominal(photos, category, rng, args.size)
            write_atomic(os.path.join(cat_dir, "train", "good", f"{i:03d}.png"), png_bytes(np.round(img)))
            written += 1
        for i in range(args.test_good):
            img = nominal(photos, category, rng, args.size)
            write_atomic(os.path.join(cat_dir, "test", "good", f"{i:03d}.png"), png_bytes(np.round(img)))
            written += 1
        counters = {k: 0 for k in DEFECTS}
        for j in range(args.test_defective):
            kind = DEFECTS[j % len(DEFECTS)]
            clean = np.round(nominal(photos, category, rng, args.size))
            img = clean.copy()
            region = add_defect(img, kind, rng, photos, category)
            img = np.round(np.clip(img, 0, 255))
            # The mask is exactly the pixels the defect changed.
            mask = np.any(img != clean, axis=2)
            if not mask.any():  # a defect that changed nothing: draw a visible one instead
                img[region] = 255 - img[region]
                mask = np.any(img != clean, axis=2)
            n = counters[kind]
            counters[kind] += 1
            write_atomic(os.path.join(cat_dir, "test", kind, f"{n:03d}.png"), png_bytes(img))
            write_atomic(
                os.path.join(cat_dir, "ground_truth", kind, f"{n:03d}_mask.png"),
                png_bytes(mask.astype(np.uint8) * 255),
            )
            written += 1
    print(f"wrote {written} images ({', '.join(TEXTURES + OBJECTS)}) to {args.out}")


if __name__ == "__main__":
    main()
