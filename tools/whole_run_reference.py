#!/usr/bin/env python3
"""Independent Python reference of `pipelines/mvtec-ad-patchcore.yaml`'s steps, written as a
competent numpy / scipy / scikit-learn / onnxruntime / FAISS user would, for
tools/bench_whole_run.sh: its core steps, and with --calibrate its `calibrate:` section too.

Per category of an MVTec-AD-layout root:
  data      train/good minus a seeded 20 % validation hold-out; test/* with ground_truth masks;
            PIL: shorter side to 256 (bilinear, antialiased), centre crop 224, masks nearest;
  backbone  models/mobilenet_v2.onnx cut to features.7.expand and features.14.expand with
            onnx.utils.extract_model (onnxruntime runs every layer of a graph, fetched or not),
            through onnxruntime (2 intra-op threads, batches of 16), ImageNet normalization;
  features  PatchCore aggregation: 3x3 box average (zero padding counted), the coarse layer
            bilinearly to the fine grid (half-pixel centres), adaptive average pooling of each
            layer's channels to 1024, concatenation pooled to 1024 (gathers, not matrix products);
  fit       PatchCore memory bank: a 10 % greedy k-center coreset on a 128-d Gaussian projection
            (vectorized: one matrix-vector product per pick, squared norms precomputed,
            on one BLAS thread: two make this small product about 10x slower); the validation
            images scored: their maps' mean and std (THR), min and max (normalize-scores min-max);
  scoring   FAISS IndexFlatL2 nearest neighbour per patch; the paper's image score (b = 3);
            the 28x28 map upsampled bilinearly to 224 and blurred (Gaussian, sigma 4);
  THR       mean + 3 std of every pixel of the validation images' maps;
  TTT4AS    per test image: local maxima at or above the labeler's level (the paper's: the map's
            99.9th percentile) grown by 1 px (at most 1,000), 500 nominal pixels from the rest
            at a Chebyshev margin of 8, features sampled bilinearly, standardized
            (class-weighted), scikit-learn LinearSVC (C = 0.001, balanced), decision on the
            feature grid upsampled, > 0;
  metrics   per category: pixel AUROC, AUPRO (FPR <= 0.3), pixel F1-max, image AUROC, and for
            each mask (THR, TTT4AS; with --calibrate also best, level_best, thr_cal) the pixel
            F1 pooled over the category's images; then the mean over categories (as the
            `mean` rows of anoflow's results.json).

With --calibrate, per category after the fit (calibrate.rs with calibration_plan.rs's
defaults; categories with fewer than 3 validation images keep the params as written):
  defects   4 defect images per clean validation image (variants round over the images, cut at
            160), each with its exact mask (the pixels with a channel moved by more than 8
            grey levels): plugins/defects' six families drawn independently in numpy, cycling
            per image from a random offset, 0.1-10 % of the image (log-uniform), the donor
            another validation image: cut-paste (a rotated rectangle from elsewhere), scar (a
            thin strip, straight or bent), noise-blend (a value-noise region filled with a
            shifted donor region or a coloured noise), warp (swirl or bulge), stain (1-3
            Gaussians darkening or tinting), missing (a ragged hole filled dark or bright);
            scored by the backbone, features and PatchCore above (the clean images' features
            and maps are the fit's);
  level     for each level of [1.2, 1.0, 1.4, 0.8, 1.7, 0.6]: TTT4AS with the level labeler on
            the maps min-max normalized on the validation maps, on every clean and defect image;
  thr_cal   for each k of [1, 1.5, 2, 2.5, 3, 4, ..., 33, 40]: raw map > mean + k std;
  best      the chosen level's masks smoothed as mask-refine's `image-guided` does (radius 3,
            sigma 20: pixels whose 7x7 window holds both values take its majority weighted by
            distance and colour similarity): `level_best`, against the chosen `thr_cal`;
  rule      a candidate's score is its F1 pooled over the defect images' pixels; among those
            marking at most 5 % of the clean images' pixels, the earliest in grid order within
            5 % (relative) of the best (15 % for `best`, so `thr_cal` only when it scores more
            than 15 % above `level_best`); with none under the bound, the one marking least;
            the params as written (1.2, 3, level_best) when every candidate scores the same.
  The test phase then also makes the chosen level's smoothed TTT4AS masks, the chosen k's THR
  masks and `best`. As in anoflow, the `level` search scores the unsmoothed masks (the
  searched node is `level`; `level_best` is scored by the `best` group).

Prints one JSON line with the wall and CPU times of each phase (fit, calibrate, test, metrics),
the figures and, with --calibrate, the choices per category (also on stderr, with their F1 on
the defects).
The validation hold-out, the defects and the random draws differ from anoflow's (different
generators), so the figures and choices are close, not equal.

usage: whole_run_reference.py ROOT [--calibrate] [--model models/mobilenet_v2.onnx] [--threads 2]
                              [--resize 256 --crop 224 --coreset 0.1]
(`--resize 512 --crop 448 --coreset 0.01`: the steps of `pipelines/patchcore-hires.yaml`)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
from PIL import Image
from scipy.ndimage import gaussian_filter, label, maximum_filter, minimum_filter, uniform_filter
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.svm import LinearSVC

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
OUTPUTS = ["features.7.expand", "features.14.expand"]
SIZE, CROP, DIM, PROJ = 256, 224, 1024, 128


# ---------------------------------------------------------------- data
def load_pair(image_path: Path, mask_path: Path | None):
    im = Image.open(image_path).convert("RGB")
    w, h = im.size
    s = SIZE / min(w, h)
    nw, nh = max(SIZE, round(w * s)), max(SIZE, round(h * s))
    x0, y0 = (nw - CROP) // 2, (nh - CROP) // 2
    box = (x0, y0, x0 + CROP, y0 + CROP)
    img = np.asarray(im.resize((nw, nh), Image.BILINEAR).crop(box))
    if mask_path is not None and mask_path.is_file():
        m = Image.open(mask_path).convert("L").resize((nw, nh), Image.NEAREST).crop(box)
        mask = (np.asarray(m) > 127).astype(np.uint8)
    else:
        mask = np.zeros((CROP, CROP), np.uint8)
    return img, mask


def list_category(root: Path, cat: str, rng):
    train = sorted((root / cat / "train" / "good").glob("*.png"))
    k = min(max(1, round(len(train) * 0.2)), len(train) - 1)
    held = set(rng.choice(len(train), size=k, replace=False).tolist())
    fit = [p for i, p in enumerate(train) if i not in held]
    val = [p for i, p in enumerate(train) if i in held]
    test = []
    for d in sorted((root / cat / "test").iterdir()):
        for p in sorted(d.glob("*.png")):
            gt = None if d.name == "good" else root / cat / "ground_truth" / d.name / f"{p.stem}_mask.png"
            test.append((p, gt))
    return fit, val, test


# ---------------------------------------------------------------- features
def adaptive_pool(x: np.ndarray, dst: int) -> np.ndarray:
    """adaptive_avg_pool1d over the last axis: window i is [floor(i src/dst), ceil((i+1) src/dst)),
    as gathers (windows of 1 or 2 channels here), or by a cumulative sum for wider windows."""
    src = x.shape[-1]
    a = (np.arange(dst) * src) // dst
    b = -((-(np.arange(dst) + 1) * src) // dst)
    if np.all(b - a <= 2):
        return 0.5 * (x[..., a] + x[..., b - 1])
    cs = np.concatenate([np.zeros(x.shape[:-1] + (1,), x.dtype), np.cumsum(x, axis=-1)], axis=-1)
    return (cs[..., b] - cs[..., a]) / (b - a).astype(x.dtype)


def axis_taps(src, dst):
    c = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0, src - 1)
    lo = np.floor(c).astype(np.int64)
    return lo, np.minimum(lo + 1, src - 1), (c - lo).astype(np.float32)


def resize_bilinear(x, h, w):
    """(..., gh, gw, c) or (gh, gw) bilinear with half-pixel centres."""
    plane = x.ndim == 2
    if plane:
        x = x[..., None]
    gh, gw = x.shape[-3], x.shape[-2]
    ylo, yhi, ty = axis_taps(gh, h)
    xlo, xhi, tx = axis_taps(gw, w)
    rows = x[..., ylo, :, :] + ty[:, None, None] * (x[..., yhi, :, :] - x[..., ylo, :, :])
    out = rows[..., xlo, :] + tx[:, None] * (rows[..., xhi, :] - rows[..., xlo, :])
    return out[..., 0] if plane else out


class Extractor:
    def __init__(self, model: Path, threads: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # Only the layers the two maps need (the tail up to the logits is ~40 % of the time).
        with tempfile.TemporaryDirectory() as tmp:
            cut = Path(tmp) / "cut.onnx"
            onnx.utils.extract_model(str(model), str(cut), ["image"], OUTPUTS)
            self.session = ort.InferenceSession(str(cut), opts, providers=["CPUExecutionProvider"])

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """(n, 28, 28, 1024) patch features."""
        out = []
        for s in range(0, len(images), 16):
            batch = np.stack(images[s:s + 16]).astype(np.float32) / 255.0
            x = np.ascontiguousarray(((batch - MEAN) / STD).transpose(0, 3, 1, 2))
            f7, f14 = (np.ascontiguousarray(m.transpose(0, 2, 3, 1)) for m in self.session.run(OUTPUTS, {"image": x}))
            f7 = uniform_filter(f7, size=(1, 3, 3, 1), mode="constant")
            f14 = resize_bilinear(uniform_filter(f14, size=(1, 3, 3, 1), mode="constant"), f7.shape[1], f7.shape[2])
            fused = np.concatenate([adaptive_pool(f7, DIM), adaptive_pool(f14, DIM)], axis=-1)
            out.append(adaptive_pool(fused, DIM).astype(np.float32))
        return np.concatenate(out)


# ---------------------------------------------------------------- PatchCore

def one_blas_thread():
    """threadpoolctl's BLAS limit of 1 (installed with scikit-learn), or nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def greedy_coreset(rows: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    proj = rows @ (rng.standard_normal((rows.shape[1], PROJ), dtype=np.float32) / np.sqrt(PROJ))
    sq = np.einsum("ij,ij->i", proj, proj)
    n = len(proj)
    count = max(1, int(n * fraction))
    chosen = np.empty(count, np.int64)
    nxt = int(rng.integers(n))
    min_d = np.full(n, np.inf, np.float32)
    d = np.empty(n, np.float32)
    # One BLAS thread: a 2-thread OpenBLAS matrix-vector product of this size spends more
    # time synchronizing than computing (10x slower measured on 7,840 rows).
    with one_blas_thread():
        for i in range(count):
            chosen[i] = nxt
            np.matmul(proj, proj[nxt], out=d)
            d *= -2.0
            d += sq
            d += sq[nxt]
            np.minimum(min_d, d, out=min_d)
            nxt = int(np.argmax(min_d))
    return chosen


class PatchCore:
    def __init__(self, rows: np.ndarray, fraction: float):
        self.bank = np.ascontiguousarray(rows[greedy_coreset(rows, fraction)])
        self.index = faiss.IndexFlatL2(self.bank.shape[1])
        self.index.add(self.bank)

    def score(self, feats: np.ndarray):
        """Per image: (224, 224) blurred map and the paper's image score (b = 3)."""
        n, gh, gw, c = feats.shape
        flat = feats.reshape(-1, c)
        d2, idx = self.index.search(flat, 1)
        dist = np.sqrt(np.maximum(d2[:, 0], 0)).reshape(n, gh * gw)
        idx = idx[:, 0].reshape(n, gh * gw)
        maps, image_scores = [], []
        for i in range(n):
            t = int(np.argmax(dist[i]))
            s_star, m_star = float(dist[i, t]), int(idx[i, t])
            _, support = self.index.search(self.bank[m_star:m_star + 1], 3)
            dists = np.linalg.norm(self.bank[support[0]] - feats[i].reshape(-1, c)[t], axis=1)
            top = max(s_star, dists.max())
            weight = 1.0 - np.exp(s_star - top) / np.exp(dists - top).sum()
            image_scores.append(weight * s_star)
            up = resize_bilinear(dist[i].reshape(gh, gw), CROP, CROP)
            maps.append(gaussian_filter(up, sigma=4))
        return maps, image_scores


# ---------------------------------------------------------------- synthetic defects
# The families of plugins/defects (cut-paste, scar, noise-blend, warp, stain, missing), drawn
# independently: same shapes, sizes and mixing, other random draws. Images are float32
# (h, w, 3) in 0-255; points are (x, y) in pixel-centre coordinates.
FAMILIES = ("cut-paste", "scar", "noise-blend", "warp", "stain", "missing")
VISIBLE = 8.0      # a pixel is part of a defect when a channel moved by more than this
ATTEMPTS = 8       # placements tried before the most visible one is kept
ACCEPT = 0.3       # ... unless this share of the region changed visibly
CANDIDATES = 6     # source positions (or warp centres) compared per placement
MIN_AREA, MAX_AREA, MIN_PIXELS = 0.001, 0.10, 3.0


def log_uniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def rotate(u, v, theta):
    c, s = np.cos(theta), np.sin(theta)
    return c * u - s * v, s * u + c * v


def centre(rng, h, w, rx, ry):
    """A centre at which a shape reaching rx, ry stays inside; the middle of a too short axis."""
    def pick(n, r):
        last = n - 1.0
        return rng.uniform(r, last - r) if last > 2 * r else last / 2
    x = pick(w, rx)
    return x, pick(h, ry)


def window(h, w, cx, cy, rx, ry):
    """Pixel rows y0:y1 and columns x0:x1 within rx, ry of (cx, cy), clipped to the image."""
    return (max(0, int(np.floor(cy - ry))), min(h, int(np.ceil(cy + ry)) + 1),
            max(0, int(np.floor(cx - rx))), min(w, int(np.ceil(cx + rx)) + 1))


def grid(y0, y1, x0, x1):
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return yy.ravel(), xx.ravel()


def sample(img, y, x):
    """Bilinear samples (n, c) at float positions, clamped to the image."""
    h, w = img.shape[:2]
    y = np.clip(np.asarray(y, np.float32), 0, h - 1)
    x = np.clip(np.asarray(x, np.float32), 0, w - 1)
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


class SmoothNoise:
    """Value noise in [0, 1]: random nodes every `cell` px, smoothstep interpolation."""

    def __init__(self, rng, origin, width, height, cell):
        self.origin, self.cell = origin, max(cell, 1.0)
        self.nodes = rng.random((int(np.ceil(height / self.cell)) + 2, int(np.ceil(width / self.cell)) + 2))

    def __call__(self, x, y):
        rows, cols = self.nodes.shape
        gx = np.clip((x - self.origin[0]) / self.cell, 0, cols - 1 - 1e-3)
        gy = np.clip((y - self.origin[1]) / self.cell, 0, rows - 1 - 1e-3)
        ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        tx, ty = gx - ix, gy - iy
        tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
        n = self.nodes
        top = n[iy, ix] * (1 - tx) + n[iy, ix + 1] * tx
        bottom = n[iy + 1, ix] * (1 - tx) + n[iy + 1, ix + 1] * tx
        return (top * (1 - ty) + bottom * ty).astype(np.float32)


def changed(img, rendered):
    """Pixels (h, w) of `rendered`, stored as u8, that moved visibly from `img`."""
    return (np.abs(np.clip(np.rint(rendered), 0, 255) - img) > VISIBLE).any(axis=-1)


def contrast(img, donor, ys, xs, sy, sx):
    """Mean absolute difference (summed over channels) between the image at (ys, xs) and the
    donor at (sy, sx), on at most 96 evenly spaced pixels."""
    if ys.size == 0:
        return 0.0
    step = -(-ys.size // 96)
    return float(np.abs(img[ys[::step], xs[::step]] - sample(donor, sy[::step], sx[::step])).sum(axis=1).mean())


def most_contrasting_offset(scene, rng, ys, xs, at, reach, min_shift):
    """Of a few random placements, the offset (dx, dy) to the donor that differs most."""
    img, donor, self_donor = scene["image"], scene["donor"], scene["donor_is_self"]
    h, w = img.shape[:2]
    best = None
    for _ in range(CANDIDATES):
        to = centre(rng, h, w, *reach)
        d = (to[0] - at[0], to[1] - at[1])
        if self_donor and np.hypot(*d) < min_shift:
            continue
        score = contrast(img, donor, ys, xs, ys + d[1], xs + d[0])
        if best is None or score > best[0]:
            best = (score, d)
    return best[1] if best else ((w - 1) - 2 * at[0], (h - 1) - 2 * at[1])


def cut_paste(scene, rng):
    """A rectangle (aspect 1:3 to 3:1, often rotated) cut elsewhere from the donor, maybe turned."""
    img, donor, area = scene["image"], scene["donor"], scene["area"]
    h, w = img.shape[:2]
    aspect = log_uniform(rng, 1 / 3, 3)
    hw = float(np.clip(np.sqrt(area * aspect) / 2, 0.5, 0.48 * w))
    hh = float(np.clip(np.sqrt(area / aspect) / 2, 0.5, 0.48 * h))
    theta = 0.0 if rng.random() < 0.4 else rng.uniform(0, np.pi)
    turn = 0.0 if rng.random() < 0.5 else rng.uniform(-np.pi, np.pi)

    def extent(t):
        s, c = abs(np.sin(t)), abs(np.cos(t))
        return c * hw + s * hh, s * hw + c * hh

    cx, cy = centre(rng, h, w, *extent(theta))
    ys, xs = grid(*window(h, w, cx, cy, *extent(theta)))
    u, v = rotate(xs - cx, ys - cy, -theta)
    inside = (np.abs(u) <= hw) & (np.abs(v) <= hh)
    ys, xs = ys[inside], xs[inside]
    su, sv = rotate(u[inside], v[inside], theta + turn)
    best = None
    for _ in range(CANDIDATES):
        fx, fy = centre(rng, h, w, *extent(theta + turn))
        if scene["donor_is_self"] and np.hypot(fx - cx, fy - cy) < 2 * min(hw, hh):
            continue
        score = contrast(img, donor, ys, xs, fy + sv, fx + su)
        if best is None or score > best[0]:
            best = (score, (fx, fy))
    fx, fy = best[1] if best else ((w - 1) - cx, (h - 1) - cy)
    px = img.copy()
    px[ys, xs] = sample(donor, fy + sv, fx + su)
    return px, ys.size


def stroke(h, w, p0, p1, p2, width):
    """Pixels (ys, xs) of a quadratic Bezier stroke of `width` px: the pixel under each curve
    point and those whose centre lies within width / 2 of one."""
    length = np.hypot(p1[0] - p0[0], p1[1] - p0[1]) + np.hypot(p2[0] - p1[0], p2[1] - p1[1])
    t = np.linspace(0.0, 1.0, max(int(np.ceil(length * 3)), 2) + 1)
    a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t * t
    x, y = a * p0[0] + b * p1[0] + c * p2[0], a * p0[1] + b * p1[1] + c * p2[1]
    ok = (x >= -0.5) & (y >= -0.5) & (x <= w - 0.5) & (y <= h - 0.5)
    x, y = x[ok], y[ok]
    hit = np.zeros((h, w), bool)
    hit[np.minimum(np.rint(y).astype(np.int64), h - 1), np.minimum(np.rint(x).astype(np.int64), w - 1)] = True
    r = width / 2
    k = int(np.ceil(r)) + 1
    offs = np.arange(-k, k + 1)
    qy = np.rint(y).astype(np.int64)[:, None, None] + offs[None, :, None]
    qx = np.rint(x).astype(np.int64)[:, None, None] + offs[None, None, :]
    near = (np.hypot(qx - x[:, None, None], qy - y[:, None, None]) <= r) & (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
    hit[np.broadcast_to(qy, near.shape)[near], np.broadcast_to(qx, near.shape)[near]] = True
    return np.nonzero(hit)


def scar(scene, rng):
    """A thin (1-4 px) long strip, straight or bent, cut from a parallel strip of the donor."""
    img, donor, area = scene["image"], scene["donor"], scene["area"]
    h, w = img.shape[:2]
    width = float(rng.integers(1, 5))
    chord = float(np.clip(area / width, 6.0, 0.9 * min(h, w)))
    phi = rng.uniform(0, np.pi)
    bend = chord * rng.uniform(-0.35, 0.35) if rng.random() < 0.6 else 0.0
    d, nrm = (np.cos(phi), np.sin(phi)), (-np.sin(phi), np.cos(phi))
    ex = abs(d[0]) * chord / 2 + abs(nrm[0]) * abs(bend) / 2 + width
    ey = abs(d[1]) * chord / 2 + abs(nrm[1]) * abs(bend) / 2 + width
    at = centre(rng, h, w, ex, ey)
    p0 = (at[0] - d[0] * chord / 2, at[1] - d[1] * chord / 2)
    p2 = (at[0] + d[0] * chord / 2, at[1] + d[1] * chord / 2)
    p1 = (at[0] + nrm[0] * bend, at[1] + nrm[1] * bend)
    ys, xs = stroke(h, w, p0, p1, p2, width)
    dx, dy = most_contrasting_offset(scene, rng, ys, xs, at, (ex, ey), 3 * width + 4)
    px = img.copy()
    px[ys, xs] = sample(donor, ys + dy, xs + dx)
    return px, ys.size


def noise_blend(scene, rng):
    """A region cut by thresholding smoothed value noise (two octaves, radial falloff), filled
    at opacity 0.5-1 with a soft rim: a donor region in shifted colours or a coloured noise."""
    img, donor, area = scene["image"], scene["donor"], scene["area"]
    h, w = img.shape[:2]
    radius = np.sqrt(area / np.pi) * 1.6 + 1
    cx, cy = centre(rng, h, w, radius * 0.8, radius * 0.8)
    origin = (cx - radius, cy - radius)
    coarse = SmoothNoise(rng, origin, 2 * radius, 2 * radius, radius / 1.5)
    fine = SmoothNoise(rng, origin, 2 * radius, 2 * radius, radius / 4)
    ys, xs = grid(*window(h, w, cx, cy, radius, radius))
    rho2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / radius ** 2
    ys, xs, rho2 = ys[rho2 < 1], xs[rho2 < 1], rho2[rho2 < 1]
    field = (0.65 * coarse(xs, ys) + 0.35 * fine(xs, ys)) * (1 - rho2)
    keep = np.argsort(-field, kind="stable")[:int(np.clip(round(area), 1, max(field.size, 1)))]
    ys, xs, field = ys[keep], xs[keep], field[keep]
    floor = field[-1]
    rim = max((field[0] - floor) * 0.25, 1e-6)
    opacity = rng.uniform(0.5, 1.0)
    if rng.random() < 0.5:
        shift = rng.uniform(25, 70, 3) * rng.choice([-1.0, 1.0], 3)
        to = centre(rng, h, w, radius, radius)
        texture = sample(donor, ys + (to[1] - cy), xs + (to[0] - cx)) + shift
    else:
        base = rng.uniform(0, 255, 3)
        amplitude = rng.uniform(10, 40)
        grain = SmoothNoise(rng, origin, 2 * radius, 2 * radius, rng.uniform(2, 6))
        texture = base + (amplitude * (2 * grain(xs, ys) - 1))[:, None]
    t = np.clip((field - floor) / rim, 0, 1)
    alpha = (opacity * (0.35 + 0.65 * t * t * (3 - 2 * t)))[:, None]
    px = img.copy()
    px[ys, xs] += alpha * (texture - px[ys, xs])
    return px, ys.size


def texture_energy(img, at, radius):
    """Mean absolute difference between neighbouring pixels on a 9 x 9 lattice of a disc."""
    g = np.arange(-4, 5) * radius / 4.5
    y, x = (at[1] + g[:, None] + 0 * g).ravel(), (at[0] + g + 0 * g[:, None]).ravel()
    p = sample(img, y, x)
    return float((np.abs(p - sample(img, y, x + 1)).sum() + np.abs(p - sample(img, y + 1, x)).sum()) / y.size)


def warp(scene, rng):
    """The image's own pixels displaced in an elliptic blob (swirl, or magnified / pinched
    centre), at the most textured of a few centres."""
    img, area = scene["image"], scene["area"]
    h, w = img.shape[:2]
    ratio = log_uniform(rng, 0.5, 2.0)
    limit = 0.45 * min(h, w)
    a = float(np.clip(np.sqrt(area / np.pi * ratio), 1, limit))
    b = float(np.clip(np.sqrt(area / np.pi / ratio), 1, limit))
    theta = rng.uniform(0, np.pi)
    reach = max(a, b)
    at = max((centre(rng, h, w, reach, reach) for _ in range(CANDIDATES)),
             key=lambda c: texture_energy(img, c, min(a, b)))
    swirl = rng.random() < 0.5
    strength = (rng.uniform(1.2, 3.0) if swirl else rng.uniform(0.35, 0.6)) * rng.choice([-1.0, 1.0])
    ys, xs = grid(*window(h, w, at[0], at[1], reach, reach))
    u, v = rotate(xs - at[0], ys - at[1], -theta)
    inside = (u / a) ** 2 + (v / b) ** 2 < 1
    ys, xs, u, v = ys[inside], xs[inside], u[inside], v[inside]
    fall = (1 - (u / a) ** 2 - (v / b) ** 2) ** 2
    mu, mv = rotate(u, v, strength * fall) if swirl else (u * (1 - strength * fall), v * (1 - strength * fall))
    sx, sy = rotate(mu, mv, theta)
    px = img.copy()
    px[ys, xs] = sample(img, at[1] + sy, at[0] + sx)
    return px, ys.size


def stain(scene, rng):
    """A soft blob (the union of 1-3 anisotropic Gaussians) darkening the region or tinting it
    towards a contrasting colour, strongest in the middle."""
    floor = 0.15
    img, area = scene["image"], scene["area"]
    h, w = img.shape[:2]
    n = int(rng.integers(1, 4))
    sigma = max(np.sqrt(1.2 * area / (2 * np.pi * np.log(1 / floor)) / n), 0.8)
    blobs = []
    for k in range(n):
        off = (0.0, 0.0) if k == 0 else tuple(rng.uniform(-1.2, 1.2, 2) * sigma)
        ratio = rng.uniform(1, 2)
        blobs.append((off, sigma * np.sqrt(ratio), sigma / np.sqrt(ratio), rng.uniform(0, np.pi)))
    reach = max(np.hypot(*off) + 2 * sx for off, sx, _, _ in blobs)
    cx, cy = centre(rng, h, w, reach, reach)
    ys, xs = grid(*window(h, w, cx, cy, reach, reach))
    g = np.zeros(ys.size)
    for (ox, oy), sx, sy, t in blobs:
        u, v = rotate(xs - cx - ox, ys - cy - oy, -t)
        g = np.maximum(g, np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)))
    sel = g > floor
    ys, xs, a = ys[sel], xs[sel], np.sqrt((g[sel] - floor) / (1 - floor))[:, None]
    level = float(img[ys, xs].mean()) if ys.size else 128.0
    strength = rng.uniform(0.3, 0.65)
    darken = level > 70 and rng.random() < 0.5
    target = rng.uniform(min(level + 70, 250), 255) if level < 128 else rng.uniform(0, max(level - 70, 5))
    tint = rng.uniform(-40, 40, 3)
    colour = np.clip(target + tint - tint.mean(), 0, 255)
    px = img.copy()
    px[ys, xs] = px[ys, xs] * (1 - strength * a) if darken else px[ys, xs] + (colour - px[ys, xs]) * strength * a
    return px, ys.size


def hole(scene, rng):
    """Pixels (ys, xs) inside a ragged star-shaped polygon of `area` px (never empty)."""
    img, area = scene["image"], scene["area"]
    h, w = img.shape[:2]
    n = int(rng.integers(28, 49))
    theta = np.arange(n) / n * 2 * np.pi
    wave = sum(rng.uniform(0, 0.22) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    r = np.maximum((1 + wave) * (1 + rng.uniform(-0.2, 0.2, n)), 0.2)
    vx, vy = r * np.cos(theta), r * np.sin(theta)
    scale = np.sqrt(area / max(abs(np.dot(vx, np.roll(vy, -1)) - np.dot(np.roll(vx, -1), vy)) / 2, 1e-30))
    vx, vy = vx * scale, vy * scale
    reach = float(np.hypot(vx, vy).max())
    cx, cy = centre(rng, h, w, reach, reach)
    ys, xs = grid(*window(h, w, cx, cy, reach, reach))
    x, y = xs - cx, ys - cy
    inside = np.zeros(ys.size, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for xi, yi, xj, yj in zip(vx, vy, np.roll(vx, 1), np.roll(vy, 1)):  # even-odd rule
            inside ^= ((yi > y) != (yj > y)) & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
    if not inside.any():
        return np.array([int(round(cy))]), np.array([int(round(cx))])
    return ys[inside], xs[inside]


def missing(scene, rng):
    """A ragged hole filled flat dark or bright (mostly the contrasting one), with slight noise."""
    img = scene["image"]
    ys, xs = hole(scene, rng)
    level = float(img[ys, xs].mean())
    dark = level >= 128 if rng.random() < 0.8 else rng.random() < 0.5
    fill = rng.uniform(5, 40) if dark else rng.uniform(215, 250)
    px = img.copy()
    px[ys, xs] = fill + rng.uniform(-6, 6, 3) + rng.uniform(2, 5) * rng.uniform(-1, 1, (ys.size, 3))
    return px, ys.size


DRAW = dict(zip(FAMILIES, (cut_paste, scar, noise_blend, warp, stain, missing)))


def synthetic_defect(image, donor, family, rng):
    """One defect of `family` pasted into `image` (u8); returns the image and its exact mask.
    Placements are retried until enough of the region shows; failing that, the most visible
    one, or a flat black or white hole."""
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    scene = {"image": img, "donor": img if donor is None else donor.astype(np.float32),
             "donor_is_self": donor is None,
             "area": max(log_uniform(rng, MIN_AREA, MAX_AREA) * h * w, MIN_PIXELS)}
    best = None
    for _ in range(ATTEMPTS):
        px, region = DRAW[family](scene, rng)
        visible = int(changed(img, px).sum())
        if visible > 0 and visible >= ACCEPT * region:
            best = (visible, px)
            break
        if visible > (best[0] if best else 0):
            best = (visible, px)
    if best is None:
        ys, xs = hole(scene, rng)
        px = img.copy()
        px[ys, xs] = 0.0 if img[ys, xs].mean() >= 127.5 else 255.0
    else:
        px = best[1]
    mask = changed(img, px)
    out = np.where(mask[..., None], np.clip(np.rint(px), 0, 255), img).astype(np.uint8)
    return out, mask.astype(np.uint8)


def calibration_defects(clean, variants, max_samples, seed):
    """calibrate.rs's samples: `variants` rounds over the clean images, cut at `max_samples`
    (so a cut spreads over the images); variant k of an image takes the family k places after
    an offset drawn per image, and a donor among the other clean images."""
    n = len(clean)
    total = min(variants * n, max_samples)
    images, masks = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        offset = int(rng.integers(len(FAMILIES)))
        for k in (k for k in range(variants) if k * n + i < total):
            family = FAMILIES[(offset + k) % len(FAMILIES)]
            donor = None if n == 1 else clean[(i + 1 + int(rng.integers(n - 1))) % n]
            im, m = synthetic_defect(clean[i], donor, family, rng)
            images.append(im)
            masks.append(m)
    return images, masks


# ---------------------------------------------------------------- TTT4AS
def maxima_at_or_above(score: np.ndarray, level: float) -> np.ndarray:
    """Pixels not smaller than any 8-neighbour, at or above `level` and above the map's floor."""
    return (score == maximum_filter(score, size=3, mode="nearest")) & (score >= level) & (score > score.min())


def percentile_labeler(percentile: float):
    """The paper's labeler: local maxima at or above the map's `percentile`-th percentile."""
    return lambda score: maxima_at_or_above(score, np.percentile(score, percentile))


def level_labeler(level: float):
    """Local maxima at or above an absolute score (on maps normalized on the validation maps)."""
    return lambda score: maxima_at_or_above(score, level)


def ttt4as(score, feat, rng, labeler, radius=1, margin=8, nominal=500, max_anomalous=1000):
    """The mask of one image: `labeler(score)` gives the seeds, grown by `radius` px."""
    h, w = score.shape
    seeds = labeler(score)
    anomalous = maximum_filter(seeds.astype(np.uint8), size=2 * radius + 1, mode="constant") > 0
    if not anomalous.any():
        return np.zeros((h, w), np.uint8)
    near = maximum_filter(anomalous.astype(np.uint8), size=2 * margin + 1, mode="constant") > 0
    pos = np.flatnonzero(anomalous)
    if pos.size > max_anomalous:
        keep = np.flatnonzero(seeds)
        rest = np.setdiff1d(pos, keep)
        pos = np.sort(np.concatenate([keep, rng.choice(rest, max(0, max_anomalous - keep.size), replace=False)]))
    cand = np.flatnonzero(~near)
    if cand.size == 0:
        return np.zeros((h, w), np.uint8)
    neg = np.sort(rng.choice(cand, size=min(nominal, cand.size), replace=False))
    pix = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), -np.ones(neg.size)])
    gh, gw, _ = feat.shape
    ylo, yhi, ty = axis_taps(gh, h)
    xlo, xhi, tx = axis_taps(gw, w)
    ys, xs = pix // w, pix % w
    a = feat[ylo[ys], xlo[xs]] + tx[xs][:, None] * (feat[ylo[ys], xhi[xs]] - feat[ylo[ys], xlo[xs]])
    b = feat[yhi[ys], xlo[xs]] + tx[xs][:, None] * (feat[yhi[ys], xhi[xs]] - feat[yhi[ys], xlo[xs]])
    x = a + ty[ys][:, None] * (b - a)
    n = y.size
    weights = np.where(y > 0, n / (2 * pos.size), n / (2 * neg.size))
    mean = np.average(x, axis=0, weights=weights)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weights))
    scale = np.ones_like(std)
    np.divide(1.0, std, out=scale, where=std > 1e-6 * (1 + np.abs(mean)))
    clf = LinearSVC(C=0.001, class_weight="balanced", tol=1e-2, dual=True, max_iter=1000, random_state=0)
    clf.fit((x - mean) * scale, y)
    w_raw = (clf.coef_[0] * scale).astype(np.float32)
    b_raw = clf.intercept_[0] - float(np.dot(w_raw, mean))
    return (resize_bilinear(feat @ w_raw, h, w) + b_raw > 0).astype(np.uint8)


def guided_vote(mask: np.ndarray, image: np.ndarray, r: int = 3, sigma: float = 20.0) -> np.ndarray:
    """mask-refine's image-guided smoothing: each pixel whose (2r+1)^2 window (clipped to the
    image) holds both values takes the majority of the window weighted by
    exp(-d^2 / 2r^2) exp(-|I_p - I_q|^2 / 2 sigma^2) (colour in 0-255); the others keep theirs."""
    m = mask.astype(bool)
    size = 2 * r + 1
    mixed = maximum_filter(m, size=size, mode="nearest") != minimum_filter(m, size=size, mode="nearest")
    if not mixed.any():
        return mask.astype(np.uint8)
    h, w = m.shape
    ys, xs = np.nonzero(mixed)
    img = image.astype(np.float32)
    ip = img[ys, xs]
    on = np.zeros(ys.size, np.float32)
    total = np.zeros(ys.size, np.float32)
    inv = 1.0 / (2.0 * sigma * sigma)
    for dy in range(-r, r + 1):
        qy = ys + dy
        row_ok = (qy >= 0) & (qy < h)
        qy = np.clip(qy, 0, h - 1)
        for dx in range(-r, r + 1):
            qx = xs + dx
            ok = row_ok & (qx >= 0) & (qx < w)
            qx = np.clip(qx, 0, w - 1)
            d2 = np.square(img[qy, qx] - ip).sum(axis=1)
            wt = np.exp(-(dy * dy + dx * dx) / (2.0 * r * r)) * np.exp(-d2 * inv) * ok
            total += wt
            on += wt * m[qy, qx]
    out = m.copy()
    out[ys, xs] = on > 0.5 * total
    return out.astype(np.uint8)


# ---------------------------------------------------------------- calibration
# The pipeline's `calibrate:` section with calibration_plan.rs's defaults.
LEVELS = [1.2, 1.0, 1.4, 0.8, 1.7, 0.6]
KS = [1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 10, 12, 14, 17, 20, 24, 28, 33, 40]
PICKS = ["level_best", "thr_cal"]
WRITTEN = {"level": 0, "k": KS.index(3), "pick": 0}  # the params as written, by grid index
VARIANTS, MAX_SAMPLES, MIN_IMAGES = 4, 160, 3
MAX_GOOD_FP_AREA, TOLERANCE, FAMILY_TOLERANCE = 0.05, 0.05, 0.15


def candidate_score(clean_masks: np.ndarray, defect_masks: np.ndarray, gts: np.ndarray):
    """(F1 pooled over the defect images' pixels, share of the clean images' pixels marked)."""
    tp, fp, fn = mask_counts(defect_masks, gts)
    return (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0), float(clean_masks.mean())


def choose(scores, tolerance: float, written: int):
    """search.rs's rule: the earliest candidate within `tolerance` (relative) of the best F1
    among those marking at most MAX_GOOD_FP_AREA of the clean pixels; with none, the one
    marking least (then the higher F1); the params as written when every score is the same."""
    if all(s == scores[0] for s in scores):
        return written, "constant"
    feasible = [f1 for f1, area in scores if area <= MAX_GOOD_FP_AREA]
    if not feasible:
        return min(range(len(scores)), key=lambda i: (scores[i][1], -scores[i][0])), "infeasible"
    floor = max(feasible) * (1 - tolerance)
    return next(i for i, (f1, area) in enumerate(scores) if area <= MAX_GOOD_FP_AREA and f1 >= floor), ""


def calibrate(extract, model, val_images, val_feats, val_maps, norm, thr_stats, seed):
    """The choices for one category, made on synthetic defects pasted into its clean
    validation images (whose features and maps the fit computed)."""
    if len(val_images) < MIN_IMAGES:
        return {"level": LEVELS[0], "k": 3, "pick": PICKS[0], "clean": len(val_images), "defect": 0,
                "note": f"fewer than {MIN_IMAGES} clean images: the params as written"}
    images, gts = calibration_defects(val_images, VARIANTS, MAX_SAMPLES, seed)
    feats = extract(images)
    maps, _ = model.score(feats)
    n = len(val_images)
    gts = np.stack(gts).astype(bool)
    all_images, all_maps = val_images + images, val_maps + maps
    all_feats = [*val_feats, *feats]
    lo, hi = norm
    normalized = [((m - lo) / (hi - lo)).astype(np.float32) for m in all_maps]

    # `level`: TTT4AS with the level labeler on the normalized maps, per level.
    level_masks, level_scores = [], []
    for level in LEVELS:
        masks = np.stack([ttt4as(s, f, np.random.default_rng(j), level_labeler(level))
                          for j, (s, f) in enumerate(zip(normalized, all_feats))]).astype(bool)
        level_scores.append(candidate_score(masks[:n], masks[n:], gts))
        level_masks.append(masks)
    li, level_note = choose(level_scores, TOLERANCE, WRITTEN["level"])

    # `thr_cal`: THR's k on the raw maps, with the validation maps' mean and std.
    raw = np.stack(all_maps)
    mean, std = thr_stats
    thr_scores = [candidate_score(raw[:n] > mean + k * std, raw[n:] > mean + k * std, gts) for k in KS]
    ki, thr_note = choose(thr_scores, TOLERANCE, WRITTEN["k"])

    # `best`: the chosen level's masks smoothed (`level_best`) against `thr_cal`.
    smoothed = np.stack([guided_vote(m, im) for m, im in zip(level_masks[li], all_images)]).astype(bool)
    family_scores = [candidate_score(smoothed[:n], smoothed[n:], gts), thr_scores[ki]]
    pi, pick_note = choose(family_scores, FAMILY_TOLERANCE, WRITTEN["pick"])
    return {"level": LEVELS[li], "k": KS[ki], "pick": PICKS[pi], "clean": n, "defect": len(images),
            "level_f1": level_scores[li][0], "thr_cal_f1": thr_scores[ki][0],
            "level_best_f1": family_scores[0][0],
            "note": "; ".join(f"{g}: {s}" for g, s in (("level", level_note), ("thr_cal", thr_note),
                                                        ("best", pick_note)) if s)}


# ---------------------------------------------------------------- metrics
def aupro(scores: np.ndarray, gts: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, normalized (one sort)."""
    weights = np.zeros(scores.shape, np.float64)
    regions = 0
    for i in range(len(gts)):
        lab, k = label(gts[i], structure=np.ones((3, 3)))
        if k:
            sizes = np.bincount(lab.ravel())
            weights[i] = np.where(lab > 0, 1.0 / sizes[lab], 0.0)
            regions += k
    if regions == 0:
        return float("nan")
    s, g, wt = scores.ravel(), gts.ravel(), weights.ravel() / regions
    order = np.argsort(-s, kind="stable")
    fpr = np.cumsum(g[order] == 0) / max(1, int((g == 0).sum()))
    pro = np.cumsum(wt[order])
    keep = np.r_[np.diff(s[order]) != 0, True]
    fpr, pro = np.r_[0.0, fpr[keep]], np.r_[0.0, pro[keep]]
    cut = np.searchsorted(fpr, fpr_limit, side="right")
    f, p = fpr[:cut], pro[:cut]
    if cut < len(fpr):
        t = (fpr_limit - fpr[cut - 1]) / (fpr[cut] - fpr[cut - 1])
        f, p = np.r_[f, fpr_limit], np.r_[p, pro[cut - 1] + t * (pro[cut] - pro[cut - 1])]
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return float(trapezoid(p, f) / fpr_limit)


def mask_counts(pred, gt):
    tp = int(np.sum(pred & gt))
    return tp, int(np.sum(pred)) - tp, int(np.sum(gt)) - tp


def category_metrics(maps, image_scores, gts, named_masks):
    s = np.stack(maps).astype(np.float32)
    g = np.stack(gts).astype(np.uint8)
    labels = g.reshape(len(g), -1).max(axis=1)
    out = {"pixel_auroc": float(roc_auc_score(g.ravel(), s.ravel())), "aupro": aupro(s, g)}
    p, r, _ = precision_recall_curve(g.ravel(), s.ravel())
    out["f1_max"] = float(np.max(2 * p * r / np.maximum(p + r, 1e-12)))
    out["image_auroc"] = float(roc_auc_score(labels, image_scores)) if 0 < labels.sum() < len(labels) else float("nan")
    for name, masks in named_masks.items():
        tp, fp, fn = mask_counts(np.stack(masks).astype(bool), g.astype(bool))
        out[f"{name}_pixel_f1"] = 2 * tp / max(1, 2 * tp + fp + fn)
    return out


# ---------------------------------------------------------------- run
def main() -> None:
    global SIZE, CROP
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parent.parent / "models/mobilenet_v2.onnx")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--resize", type=int, default=SIZE, help="shorter side before the centre crop")
    ap.add_argument("--crop", type=int, default=CROP, help="centre crop: the backbone's input size")
    ap.add_argument("--coreset", type=float, default=0.1, help="fraction of the fit rows in the memory bank")
    ap.add_argument("--calibrate", action="store_true",
                    help="also the `calibrate:` section and its masks (best, level_best, thr_cal)")
    args = ap.parse_args()
    SIZE, CROP = args.resize, args.crop
    started = time.perf_counter()
    extract = Extractor(args.model, args.threads)
    cats = sorted(d.name for d in args.root.iterdir() if (d / "train" / "good").is_dir())
    times = {"fit": 0.0, "calibrate": 0.0, "test": 0.0, "metrics": 0.0}
    if not args.calibrate:
        del times["calibrate"]
    cpu = dict.fromkeys(times, 0.0)  # process CPU time (every thread) per phase
    per_cat, choices = {}, {}
    for ci, cat in enumerate(cats):
        rng = np.random.default_rng(ci)
        fit_files, val_files, test = list_category(args.root, cat, rng)
        t, c = time.perf_counter(), time.process_time()
        fit_feats = extract([load_pair(p, None)[0] for p in fit_files])
        model = PatchCore(fit_feats.reshape(-1, DIM), args.coreset)
        del fit_feats
        val_images = [load_pair(p, None)[0] for p in val_files]
        val_feats = extract(val_images)
        val_maps, _ = model.score(val_feats)
        v = np.stack(val_maps)
        thr_stats = (float(v.mean()), float(v.std()))
        thr = thr_stats[0] + 3 * thr_stats[1]
        norm = (float(v.min()), float(v.max()))  # normalize-scores min-max, for the level labeler
        del v
        if not args.calibrate:
            del val_images, val_feats
        times["fit"] += time.perf_counter() - t
        cpu["fit"] += time.process_time() - c

        if args.calibrate:
            t, c = time.perf_counter(), time.process_time()
            choice = calibrate(extract, model, val_images, val_feats, val_maps, norm, thr_stats, seed=ci)
            choices[cat] = choice
            del val_images, val_feats
            times["calibrate"] += time.perf_counter() - t
            cpu["calibrate"] += time.process_time() - c

        t, c = time.perf_counter(), time.process_time()
        pairs = [load_pair(p, gt) for p, gt in test]
        feats = extract([im for im, _ in pairs])
        maps, image_scores = model.score(feats)
        masks = {"thr": [(m > thr).astype(np.uint8) for m in maps],
                 "ttt": [ttt4as(m, f, np.random.default_rng(k), percentile_labeler(99.9))
                         for k, (m, f) in enumerate(zip(maps, feats))]}
        if args.calibrate:
            lo, hi = norm
            labeler = level_labeler(choice["level"])
            masks["level_best"] = [guided_vote(ttt4as(((m - lo) / (hi - lo)).astype(np.float32), f,
                                                      np.random.default_rng(k), labeler), im)
                                   for k, (m, f, (im, _)) in enumerate(zip(maps, feats, pairs))]
            k_thr = thr_stats[0] + choice["k"] * thr_stats[1]
            masks["thr_cal"] = [(m > k_thr).astype(np.uint8) for m in maps]
            masks["best"] = masks[choice["pick"]]
        times["test"] += time.perf_counter() - t
        cpu["test"] += time.process_time() - c

        t, c = time.perf_counter(), time.process_time()
        per_cat[cat] = category_metrics(maps, image_scores, [m for _, m in pairs], masks)
        times["metrics"] += time.perf_counter() - t
        cpu["metrics"] += time.process_time() - c
        print(f"{cat}: {len(fit_files)} fit, {len(val_files)} validation, {len(test)} test images; "
              f"bank {len(model.bank)} rows", file=sys.stderr)
        if args.calibrate:
            ch = choices[cat]
            scores = (f"; F1 on the defects: level {ch['level_f1']:.3f}, level_best {ch['level_best_f1']:.3f}, "
                      f"thr_cal {ch['thr_cal_f1']:.3f}") if ch["defect"] else ""
            print(f"{cat}: calibrated on {ch['clean']} clean + {ch['defect']} defect images: level {ch['level']}, "
                  f"k {ch['k']}, best = {ch['pick']}{scores}" + (f" ({ch['note']})" if ch["note"] else ""),
                  file=sys.stderr)

    def mean(key):
        return float(np.nanmean([c[key] for c in per_cat.values()]))

    result = {
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time(),
        "phases": times,
        "phases_cpu": cpu,
        "categories": cats,
        "pixel_auroc": mean("pixel_auroc"),
        "aupro": mean("aupro"),
        "f1_max": mean("f1_max"),
        "image_auroc": mean("image_auroc"),
        "thr_pixel_f1": mean("thr_pixel_f1"),
        "ttt_pixel_f1": mean("ttt_pixel_f1"),
    }
    if args.calibrate:
        result.update({f"{name}_pixel_f1": mean(f"{name}_pixel_f1") for name in ("best", "level_best", "thr_cal")})
        result["calibration"] = {cat: {key: ch[key] for key in ("level", "k", "pick")} for cat, ch in choices.items()}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
