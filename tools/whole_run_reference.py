#!/usr/bin/env python3
"""Independent Python reference of `pipelines/mvtec-ad-patchcore.yaml`'s core steps, written as
a competent numpy / scikit-learn / onnxruntime / FAISS user would, for tools/bench_whole_run.sh.

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
            on one BLAS thread: two make this small product about 10x slower);
  scoring   FAISS IndexFlatL2 nearest neighbour per patch; the paper's image score (b = 3);
            the 28x28 map upsampled bilinearly to 224 and blurred (Gaussian, sigma 4);
  THR       mean + 3 std of every pixel of the validation images' maps;
  TTT4AS    per test image: local maxima at or above the 99.9th percentile grown by 1 px
            (at most 1,000), 500 nominal pixels from the rest at a Chebyshev margin of 8,
            features sampled bilinearly, standardized (class-weighted), scikit-learn LinearSVC
            (C = 0.001, balanced), decision on the feature grid upsampled, > 0;
  metrics   per category: pixel AUROC, AUPRO (FPR <= 0.3), pixel F1-max, image AUROC, and for
            the THR and TTT4AS masks the pixel F1 pooled over the category's images; then the
            mean over categories (as the `mean` rows of anoflow's results.json).

Prints one JSON line with the wall and CPU times of each phase (fit, test, metrics) and the
figures.
The validation hold-out and the random draws differ from anoflow's (different generators),
so the figures are close, not equal.

usage: whole_run_reference.py ROOT [--model models/mobilenet_v2.onnx] [--threads 2]
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
from scipy.ndimage import gaussian_filter, label, maximum_filter, uniform_filter
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


# ---------------------------------------------------------------- TTT4AS
def ttt4as(score, feat, rng, percentile=99.9, margin=8, nominal=500, max_anomalous=1000):
    h, w = score.shape
    thr = np.percentile(score, percentile)
    seeds = (score == maximum_filter(score, size=3, mode="nearest")) & (score >= thr) & (score > score.min())
    anomalous = maximum_filter(seeds.astype(np.uint8), size=3, mode="constant") > 0
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
    clf = LinearSVC(C=0.001, class_weight="balanced", tol=1e-2, dual=True, max_iter=1000)
    clf.fit((x - mean) * scale, y)
    w_raw = (clf.coef_[0] * scale).astype(np.float32)
    b_raw = clf.intercept_[0] - float(np.dot(w_raw, mean))
    return (resize_bilinear(feat @ w_raw, h, w) + b_raw > 0).astype(np.uint8)


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


def category_metrics(maps, image_scores, gts, thr_masks, ttt_masks):
    s = np.stack(maps).astype(np.float32)
    g = np.stack(gts).astype(np.uint8)
    labels = g.reshape(len(g), -1).max(axis=1)
    out = {"pixel_auroc": float(roc_auc_score(g.ravel(), s.ravel())), "aupro": aupro(s, g)}
    p, r, _ = precision_recall_curve(g.ravel(), s.ravel())
    out["f1_max"] = float(np.max(2 * p * r / np.maximum(p + r, 1e-12)))
    out["image_auroc"] = float(roc_auc_score(labels, image_scores)) if 0 < labels.sum() < len(labels) else float("nan")
    for name, masks in (("thr", thr_masks), ("ttt", ttt_masks)):
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
    args = ap.parse_args()
    SIZE, CROP = args.resize, args.crop
    started = time.perf_counter()
    extract = Extractor(args.model, args.threads)
    cats = sorted(d.name for d in args.root.iterdir() if (d / "train" / "good").is_dir())
    times = {"fit": 0.0, "test": 0.0, "metrics": 0.0}
    cpu = dict.fromkeys(times, 0.0)  # process CPU time (every thread) per phase
    per_cat = {}
    for ci, cat in enumerate(cats):
        rng = np.random.default_rng(ci)
        fit_files, val_files, test = list_category(args.root, cat, rng)
        t, c = time.perf_counter(), time.process_time()
        fit_feats = extract([load_pair(p, None)[0] for p in fit_files])
        model = PatchCore(fit_feats.reshape(-1, DIM), args.coreset)
        del fit_feats
        val_maps, _ = model.score(extract([load_pair(p, None)[0] for p in val_files]))
        v = np.stack(val_maps)
        thr = float(v.mean() + 3 * v.std())
        times["fit"] += time.perf_counter() - t
        cpu["fit"] += time.process_time() - c

        t, c = time.perf_counter(), time.process_time()
        pairs = [load_pair(p, gt) for p, gt in test]
        feats = extract([im for im, _ in pairs])
        maps, image_scores = model.score(feats)
        thr_masks = [(m > thr).astype(np.uint8) for m in maps]
        ttt_masks = [ttt4as(m, f, np.random.default_rng(k)) for k, (m, f) in enumerate(zip(maps, feats))]
        times["test"] += time.perf_counter() - t
        cpu["test"] += time.process_time() - c

        t, c = time.perf_counter(), time.process_time()
        per_cat[cat] = category_metrics(maps, image_scores, [m for _, m in pairs], thr_masks, ttt_masks)
        times["metrics"] += time.perf_counter() - t
        cpu["metrics"] += time.process_time() - c
        print(f"{cat}: {len(fit_files)} fit, {len(val_files)} validation, {len(test)} test images; "
              f"bank {len(model.bank)} rows", file=sys.stderr)

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
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
