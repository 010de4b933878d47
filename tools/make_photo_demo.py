#!/usr/bin/env python3
"""Assemble a demo anomaly-detection dataset in the MVTec AD layout from real photographs.

Two collections of photographs, each shipped inside a registry package (nothing is installed):

- `--collection skimage` (default; docs/results/photo-demo.md): the sample images inside the
  scikit-image wheel (skimage/data/), read as a zip file: the textures brick, grass and gravel
  (512x512 grey) and the colour photo coffee.
- `--collection opencv` (docs/results/photo-demo-2.md): the sample images of Debian's opencv-doc
  package (usr/share/doc/opencv-doc/examples/data/), read from the .deb (an ar archive holding a tar)
  without installing it: the textures fabric (the patterned cloth behind the aloe of aloeL.jpg) and
  bookcloth (the black cloth cover of the notebook in ela_original.jpg), and the objects pcb
  (board.jpg), orange (orange.jpg) and baboon (baboon.jpg). Decoding JPEG needs Pillow: when it is
  missing the script says so and installs it into a temporary folder for this run only.

    pip install numpy                                                        # the only dependency
    python3 tools/make_photo_demo.py --out data/photo-demo
        [--wheel /tmp/wheels/scikit_image-*.whl]      # else: pip download scikit-image into a temp folder
    python3 tools/make_photo_demo.py --collection opencv --out data/photo-demo-2
        [--deb /tmp/debs/opencv-doc_*.deb | --deb DIR]  # else: apt-get download opencv-doc into a temp folder
    options: [--seed 0] [--train 40] [--test-good 10] [--test-defective 20] [--size 256]

`--deb DIR` takes an unpacked package (the folder holding usr/) or its examples/data folder itself.

Output (exactly what the `mvtec-ad` source reads):
    <out>/<category>/train/good/NNN.png
    <out>/<category>/test/good/NNN.png
    <out>/<category>/test/<defect>/NNN.png
    <out>/<category>/ground_truth/<defect>/NNN_mask.png     (0 / 255)
Textures are size x size crops of the texture (of a clean window of the photo for opencv) at random
positions, with random flips / 90-degree rotations and +-10% gain. Objects are the whole photo as a
square, jittered (coffee: up to 12 px sideways; opencv objects: up to 8 px both ways, from a square
16 px smaller than the photo's short side) with +-8% gain, resized to size x size.
Test images come from the same photos as the training ones.
Defects: scratch (a thin smooth bright or dark line), crack (a jagged dark line with a branch),
hole (an irregular dark pit with a lit rim), stain (a translucent irregular blob),
contamination (a blob-shaped patch pasted from ANOTHER photograph of the collection). The mask is
exactly the set of pixels the defect changed, and every defect keeps changed pixels inside the
256 -> 224 centre crop of the pipelines (else it is drawn again). The same --seed gives the same files.
"""

import argparse
import glob
import io
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

DEFECTS = ["contamination", "crack", "hole", "scratch", "stain"]


@dataclass(frozen=True)
class Collection:
    textures: list
    objects: list
    object_jitter: int  # the largest shift of an object's square, in photo pixels
    object_inset: int  # the square is this much smaller than the photo's short side on each end


COLLECTIONS = {
    "skimage": Collection(["brick", "grass", "gravel"], ["coffee"], object_jitter=12, object_inset=0),
    "opencv": Collection(["fabric", "bookcloth"], ["pcb", "orange", "baboon"], object_jitter=8, object_inset=8),
}

# opencv-doc photos: file and, for textures, the window (y0, y1, x0, x1) that holds only the texture.
OPENCV_PHOTOS = {
    "fabric": ("aloeL.jpg", (0, 464, 0, 560)),  # above and left of the aloe's leaves
    "bookcloth": ("ela_original.jpg", (0, 528, 0, 528)),  # above the page edge, left of the elastic band
    "pcb": ("board.jpg", None),
    "orange": ("orange.jpg", None),
    "baboon": ("baboon.jpg", None),
}
OPENCV_DATA_DIR = "usr/share/doc/opencv-doc/examples/data"


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


def load_skimage_photos(wheel, collection):
    photos = {}
    with zipfile.ZipFile(wheel) as z:
        for name in collection.textures + collection.objects:
            member = f"skimage/data/{name}.png"
            try:
                img = read_png(z.read(member))
            except KeyError:
                sys.exit(f"{wheel}: no {member} (expected a scikit-image wheel that ships its sample data)")
            img = img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img[:, :, :1], 3, axis=2)
            photos[name] = img.astype(np.float32)
    return photos


def find_deb(path, tmp):
    """The opencv-doc .deb or unpacked folder: `path`, or one `apt-get download` fetches into `tmp`."""
    if path:
        if not os.path.exists(path):
            sys.exit(f"--deb {path}: no such file or folder (an opencv-doc .deb, or the folder it was unpacked to)")
        return path
    print(f"no --deb given: running `apt-get download opencv-doc` in {tmp}", file=sys.stderr)
    try:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(
            f"could not download Debian's opencv-doc package ({err}). Run `apt-get update` first, or fetch "
            "the .deb on a Debian-like machine with `apt-get download opencv-doc` and pass --deb PATH"
        )
    debs = glob.glob(os.path.join(tmp, "opencv-doc_*.deb"))
    if not debs:
        sys.exit(f"apt-get download left no opencv-doc_*.deb in {tmp}")
    return debs[0]


def deb_data_tar(deb):
    """The data.tar.* member of a .deb (an ar archive), as (name, bytes); read without dpkg."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            sys.exit(f"{deb}: not a .deb (no ar archive header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                sys.exit(f"{deb}: no data.tar member")
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith("data.tar"):
                return name, f.read(size)
            f.seek(size + (size & 1), os.SEEK_CUR)  # members are 2-byte aligned


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def read_opencv_files(source, names):
    """{file name: bytes} for the sample photos `names`, from a .deb or an unpacked folder."""
    if os.path.isdir(source):
        for folder in (os.path.join(source, OPENCV_DATA_DIR), source):
            if all(os.path.isfile(os.path.join(folder, n)) for n in names):
                return {n: read_file(os.path.join(folder, n)) for n in names}
        sys.exit(f"{source}: neither it nor {OPENCV_DATA_DIR} under it holds all of {', '.join(names)}")
    member, data = deb_data_tar(source)
    if member.endswith(".zst"):
        sys.exit(f"{source}: {member} is zstd-compressed; unpack it with `dpkg-deb -x` and pass the folder")
    wanted = {f"./{OPENCV_DATA_DIR}/{n}": n for n in names} | {f"{OPENCV_DATA_DIR}/{n}": n for n in names}
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        for entry in tar:
            if entry.name in wanted and entry.isfile():
                found[wanted[entry.name]] = tar.extractfile(entry).read()
                if len(found) == len(names):
                    break
    missing = sorted(set(names) - set(found))
    if missing:
        sys.exit(f"{source}: no {', '.join(missing)} under {OPENCV_DATA_DIR} (expected Debian's opencv-doc package)")
    return found


def import_pillow():
    """Pillow decodes the JPEG photos; without it, install it into a temporary folder for this run only."""
    try:
        from PIL import Image
    except ImportError:
        target = tempfile.mkdtemp(prefix="pillow-")
        print(f"Pillow is not installed: `pip install --target {target} pillow` for this run only", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--target", target, "pillow"]
        if subprocess.run(cmd).returncode != 0:
            sys.exit("decoding the opencv-doc JPEG photos needs Pillow: `pip install pillow`, then run this again")
        sys.path.insert(0, target)
        from PIL import Image
    return Image


def load_opencv_photos(source, collection):
    files = read_opencv_files(source, sorted({OPENCV_PHOTOS[n][0] for n in collection.textures + collection.objects}))
    image = import_pillow()
    photos = {}
    for name in collection.textures + collection.objects:
        file, window = OPENCV_PHOTOS[name]
        img = np.asarray(image.open(io.BytesIO(files[file])).convert("RGB"), np.float32)
        if window:
            y0, y1, x0, x1 = window
            img = img[y0:y1, x0:x1]
        photos[name] = np.ascontiguousarray(img)
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


def nominal(photos, collection, category, rng, size):
    photo = photos[category]
    if category in collection.textures:
        h, w = photo.shape[:2]
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        img = photo[y : y + size, x : x + size]
        img = np.rot90(img, rng.integers(0, 4))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        gain = rng.uniform(0.9, 1.1)
    else:
        h, w = photo.shape[:2]
        side = min(h, w) - 2 * collection.object_inset
        jitter = collection.object_jitter
        dy, dx = rng.integers(-jitter, jitter + 1, size=2)
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


def crop_margin(size):
    """Pixels on each side that the pipelines' resize to 256 and 224 centre crop drop, rounded up."""
    return int(np.ceil(size * 16 / 256))


def defective(photos, collection, category, kind, rng, size):
    """A defective image and its mask; drawn again if nothing it changed survives the centre crop."""
    clean = np.round(nominal(photos, collection, category, rng, size))
    margin = crop_margin(size)
    for _ in range(100):
        img = clean.copy()
        region = add_defect(img, kind, rng, photos, category)
        img = np.round(np.clip(img, 0, 255))
        # The mask is exactly the pixels the defect changed.
        mask = np.any(img != clean, axis=2)
        if not mask.any():  # a defect that changed nothing: draw a visible one instead
            img[region] = 255 - img[region]
            mask = np.any(img != clean, axis=2)
        if mask[margin : size - margin, margin : size - margin].any():
            return img, mask
    sys.exit(f"{category}/{kind}: 100 draws of the defect all fell outside the centre crop")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--collection", choices=sorted(COLLECTIONS), default="skimage")
    ap.add_argument("--wheel", help="skimage: a downloaded scikit-image wheel (default: pip download it)")
    ap.add_argument(
        "--deb", help="opencv: an opencv-doc .deb or the folder it was unpacked to (default: apt-get download it)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--test-good", type=int, default=10)
    ap.add_argument("--test-defective", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    collection = COLLECTIONS[args.collection]
    if args.collection == "skimage" and args.deb:
        sys.exit("--deb is for --collection opencv")
    if args.collection == "opencv" and args.wheel:
        sys.exit("--wheel is for --collection skimage")
    if args.collection == "skimage":
        photos = load_skimage_photos(find_wheel(args.wheel), collection)
    else:
        with tempfile.TemporaryDirectory(prefix="opencv-doc-") as tmp:  # the 96 MB .deb is not kept
            photos = load_opencv_photos(find_deb(args.deb, tmp), collection)
    # Every photo must hold a size x size crop: texture crops and contamination patches are cut, not resized.
    smallest = min(min(p.shape[:2]) for p in photos.values())
    if not 64 <= args.size <= smallest:
        sys.exit(f"--size must be within 64..{smallest} (the smallest photo of the collection is {smallest} px)")
    categories = collection.textures + collection.objects
    written = 0
    for ci, category in enumerate(categories):
        rng = np.random.default_rng([args.seed, ci])
        cat_dir = os.path.join(args.out, category)
        for i in range(args.train):
            img = nominal(photos, collection, category, rng, args.size)
            write_atomic(os.path.join(cat_dir, "train", "good", f"{i:03d}.png"), png_bytes(np.round(img)))
            written += 1
        for i in range(args.test_good):
            img = nominal(photos, collection, category, rng, args.size)
            write_atomic(os.path.join(cat_dir, "test", "good", f"{i:03d}.png"), png_bytes(np.round(img)))
            written += 1
        counters = {k: 0 for k in DEFECTS}
        for j in range(args.test_defective):
            kind = DEFECTS[j % len(DEFECTS)]
            img, mask = defective(photos, collection, category, kind, rng, args.size)
            n = counters[kind]
            counters[kind] += 1
            write_atomic(os.path.join(cat_dir, "test", kind, f"{n:03d}.png"), png_bytes(img))
            write_atomic(
                os.path.join(cat_dir, "ground_truth", kind, f"{n:03d}_mask.png"),
                png_bytes(mask.astype(np.uint8) * 255),
            )
            written += 1
    print(f"wrote {written} images ({', '.join(categories)}) to {args.out}")


if __name__ == "__main__":
    main()
