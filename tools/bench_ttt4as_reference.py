#!/usr/bin/env python3
"""Python reference of one image's TTT4AS step, timed on the case the Rust bench wrote.

Same steps and settings as the Rust stage's defaults (plugins/ttt4as):
  pseudo-labels: 3x3 local maxima (scipy maximum_filter) >= 99th percentile and above the
  map minimum, plus a radius-1 square; 500 nominal pixels drawn at or below the median;
  training features sampled bilinearly (half-pixel centres) at those pixels only;
  standardization weighted like the classes; scikit-learn LinearSVC (liblinear dual CD,
  squared hinge, C=0.001, class_weight='balanced', tol=0.01, intercept_scaling=1);
  decision at feature resolution with the standardization folded in, upsampled bilinearly,
  thresholded at 0.

This is the efficient algorithm written in numpy, not the naive one that upsamples the
features to 1536 x 224 x 224 first; the comparison is about the implementation.

usage: bench_ttt4as_reference.py DIR [--runs N]   (DIR holds score.npy, features.npy, gt.npy)
"""
import sys
import time

import numpy as np
from scipy.ndimage import maximum_filter
from sklearn.svm import LinearSVC


def axis_taps(src, dst):
    c = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    c = np.clip(c, 0, src - 1)
    lo = np.floor(c).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, (c - lo).astype(np.float32)


def sample_features(feat, ys, xs, h, w):
    """Bilinear features (half-pixel centres) of an (gh, gw, c) map at image pixels (ys, xs)."""
    gh, gw, _ = feat.shape
    ylo, yhi, ty = axis_taps(gh, h)
    xlo, xhi, tx = axis_taps(gw, w)
    y0, y1, wy = ylo[ys], yhi[ys], ty[ys][:, None]
    x0, x1, wx = xlo[xs], xhi[xs], tx[xs][:, None]
    a = feat[y0, x0] + wx * (feat[y0, x1] - feat[y0, x0])
    b = feat[y1, x0] + wx * (feat[y1, x1] - feat[y1, x0])
    return a + wy * (b - a)


def upsample(plane, h, w):
    gh, gw = plane.shape
    ylo, yhi, ty = axis_taps(gh, h)
    xlo, xhi, tx = axis_taps(gw, w)
    rows_lo = plane[ylo]
    rows_hi = plane[yhi]
    a = rows_lo[:, xlo] + tx * (rows_lo[:, xhi] - rows_lo[:, xlo])
    b = rows_hi[:, xlo] + tx * (rows_hi[:, xhi] - rows_hi[:, xlo])
    return a + ty[:, None] * (b - a)


def ttt4as(score, feat, rng):
    h, w = score.shape
    thr = np.percentile(score, 99)
    local_max = (score == maximum_filter(score, size=3, mode="nearest")) & (score >= thr) & (score > score.min())
    anomalous = maximum_filter(local_max.astype(np.uint8), size=3, mode="constant") > 0  # radius 1
    nominal_region = (score <= np.percentile(score, 50)) & ~anomalous
    cand = np.flatnonzero(nominal_region)
    if not anomalous.any() or cand.size == 0:
        return np.zeros((h, w), np.uint8)
    nominal = np.sort(rng.choice(cand, size=min(500, cand.size), replace=False))
    pos = np.flatnonzero(anomalous)
    pix = np.concatenate([pos, nominal])
    y = np.concatenate([np.ones(pos.size), -np.ones(nominal.size)])
    x = sample_features(feat, pix // w, pix % w, h, w)
    n = y.size
    weights = np.where(y > 0, n / (2 * pos.size), n / (2 * nominal.size))
    mean = np.average(x, axis=0, weights=weights)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weights))
    scale = np.where(std > 1e-6 * (1 + np.abs(mean)), 1 / std, 1.0)
    z = (x - mean) * scale
    clf = LinearSVC(C=0.001, class_weight="balanced", tol=1e-2, dual=True, max_iter=1000)
    clf.fit(z, y)
    w_raw = (clf.coef_[0] * scale).astype(np.float32)
    b_raw = clf.intercept_[0] - float(np.dot(w_raw, mean))
    plane = feat @ w_raw
    decision = upsample(plane, h, w) + b_raw
    return (decision > 0).astype(np.uint8)


def f1(pred, gt):
    tp = np.sum((pred == 1) & (gt == 1))
    fp = np.sum((pred == 1) & (gt == 0))
    fn = np.sum((pred == 0) & (gt == 1))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    d = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
    score = np.load(f"{d}/score.npy")
    feat = np.load(f"{d}/features.npy")
    gt = np.load(f"{d}/gt.npy")
    rng = np.random.default_rng(42)
    mask = ttt4as(score, feat, rng)
    for _ in range(3):
        ttt4as(score, feat, rng)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        ttt4as(score, feat, rng)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    med = times[len(times) // 2]
    print(f"python reference per image: median {med:.2f} ms, p90 {times[len(times) * 9 // 10]:.2f} ms, "
          f"min {times[0]:.2f} ms ({runs} runs); mask {int(mask.sum())} px, F1 vs defect {f1(mask, gt):.3f}")
    try:
        rust = np.load(f"{d}/rust_mask.npy")
        inter = np.sum((rust == 1) & (mask == 1))
        union = np.sum((rust == 1) | (mask == 1))
        print(f"agreement with the Rust mask: IoU {inter / max(union, 1):.3f} (different nominal samples)")
    except FileNotFoundError:
        pass
    with open(f"{d}/python_median_ms.txt", "w") as fh:
        fh.write(f"{med:.4f}\n")


if __name__ == "__main__":
    main()
