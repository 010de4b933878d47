#!/usr/bin/env python3
"""Recomputes anoflow's segmentation metrics independently and compares.

Reads the JSON written by
    cargo run -p anoflow-seg-metrics --example export_check_case -- case.json [seed]
(masks, score maps, labels and the figures the Rust code computed) and recomputes every
figure with scikit-learn (roc_auc_score, precision/recall/f1/jaccard, precision_recall_curve)
and an AUPRO written from the definition (a loop over every distinct threshold, connected
components from scipy.ndimage.label with a 3x3 structure = 8-connectivity, PRO = mean over
components of the covered fraction, FPR over all non-GT pixels, trapezoid up to the FPR
limit with linear interpolation at the limit, divided by the limit).

Usage: python3 tools/check_metrics.py case.json   (exit status 1 on any disagreement)
Needs numpy, scipy, scikit-learn.
"""
import json
import sys

import numpy as np
from scipy import ndimage
from sklearn.metrics import (f1_score, jaccard_score, precision_recall_curve, precision_score, recall_score,
                             roc_auc_score)

TOL = 1e-9


def per_image_ratio(fn, gt, pred):
    # anoflow's convention: 0/0 is 1 when prediction and GT are both empty, else 0.
    both_empty = gt.sum() == 0 and pred.sum() == 0
    return fn(gt, pred, zero_division=1.0 if both_empty else 0.0)


def pooled_ratio(fn, gt, pred):
    both_empty = gt.sum() == 0 and pred.sum() == 0
    return fn(gt, pred, zero_division=1.0 if both_empty else 0.0)


def jaccard(gt, pred, zero_division):
    return jaccard_score(gt, pred, zero_division=zero_division)


RATIOS = {"precision": precision_score, "recall": recall_score, "f1": f1_score, "iou": jaccard}


def aupro_by_definition(gts, scores, fpr_limit):
    comps = []  # (image index, boolean mask of the component)
    for i, g in enumerate(gts):
        labels, n = ndimage.label(g, structure=np.ones((3, 3), dtype=int))
        comps += [(i, labels == k) for k in range(1, n + 1)]
    neg_scores = np.concatenate([s[g == 0] for s, g in zip(scores, gts)])
    thresholds = np.unique(np.concatenate([s.ravel() for s in scores]))[::-1]
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        fprs.append(float((neg_scores >= t).mean()))
        pros.append(float(np.mean([(scores[i][c] >= t).mean() for i, c in comps])))
    fprs, pros = np.array(fprs), np.array(pros)
    # Trapezoid up to the limit, interpolating linearly where the curve crosses it.
    keep = fprs <= fpr_limit
    area = np.trapezoid(pros[keep], fprs[keep])
    j = np.argmax(~keep) if (~keep).any() else None
    if j is not None:
        x0, y0, x1, y1 = fprs[j - 1], pros[j - 1], fprs[j], pros[j]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_lim) * (fpr_limit - x0)
    return area / fpr_limit


def f1_max(gt_flat, score_flat):
    p, r, _ = precision_recall_curve(gt_flat, score_flat)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    return float(f1.max())


def expected_figures(case):
    out = {}
    by_cat = {}
    for im in case["images"]:
        by_cat.setdefault(im["category"], []).append(im)
    for cat, ims in by_cat.items():
        shape = lambda im: (im["height"], im["width"])
        gts = [np.array(im["gt"], dtype=np.uint8).reshape(shape(im)) for im in ims]
        scores = [np.array(im["score"], dtype=np.float32).reshape(shape(im)) for im in ims]
        anomalous = [bool(im["anomalous"]) or g.any() for im, g in zip(ims, gts)]
        for src in ims[0]["masks"]:
            preds = [np.array(im["masks"][src], dtype=np.uint8).reshape(shape(im)) for im in ims]
            for subset in ("anomalous", "all"):
                idx = [i for i in range(len(ims)) if subset == "all" or anomalous[i]]
                g = np.concatenate([gts[i].ravel() for i in idx])
                p = np.concatenate([preds[i].ravel() for i in idx])
                for name, fn in RATIOS.items():
                    out[(cat, src, name, subset, "pixels")] = pooled_ratio(fn, g, p)
                    per = [per_image_ratio(fn, gts[i].ravel(), preds[i].ravel()) for i in idx]
                    out[(cat, src, name, subset, "image-mean")] = float(np.mean(per))
            good = [i for i in range(len(ims)) if not anomalous[i]]
            if good:
                fp = [((preds[i] == 1) & (gts[i] == 0)).sum() for i in good]
                out[(cat, src, "fp_area", "good", "pixels")] = sum(fp) / sum(gts[i].size for i in good)
                out[(cat, src, "fp_area", "good", "image-mean")] = float(np.mean([f / gts[i].size for f, i in zip(fp, good)]))
                out[(cat, src, "good_images_with_fp", "good", "images")] = float(np.mean([f > 0 for f in fp]))
        src = "scorer.score"
        g_all = np.concatenate([g.ravel() for g in gts])
        s_all = np.concatenate([s.ravel() for s in scores])
        out[(cat, src, "pixel_auroc", "all", "pixels")] = roc_auc_score(g_all, s_all)
        out[(cat, src, "aupro", "all", "pixels")] = aupro_by_definition(gts, scores, case["fpr_limit"])
        out[(cat, src, "f1_max", "all", "pixels")] = f1_max(g_all, s_all)
        idx = [i for i in range(len(ims)) if anomalous[i]]
        out[(cat, src, "f1_max", "anomalous", "pixels")] = f1_max(
            np.concatenate([gts[i].ravel() for i in idx]), np.concatenate([scores[i].ravel() for i in idx]))
        img = np.array([im["image_score"] for im in ims])
        out[(cat, src, "image_auroc", "all", "images")] = roc_auc_score(anomalous, img)
    # Means over categories.
    keys = {k[1:] for k in out}
    for k in keys:
        vals = [out[(c,) + k] for c in by_cat if (c,) + k in out]
        out[("mean",) + k] = float(np.mean(vals))
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with open(sys.argv[1]) as f:
        case = json.load(f)
    rust = {(r["category"], r["source"], r["metric"], r["subset"], r["pooling"]): r["value"]
            for r in case["rust"]["records"]}
    expected = expected_figures(case)
    worst, bad, by_metric = 0.0, [], {}
    for key, want in sorted(expected.items()):
        got = rust.get(key)
        if got is None:
            bad.append(f"{key}: missing in the Rust results (expected {want})")
            continue
        diff = abs(got - want)
        worst = max(worst, diff)
        by_metric[key[2]] = max(by_metric.get(key[2], 0.0), diff)
        if diff > TOL:
            bad.append(f"{key}: rust {got!r} vs independent {want!r} (diff {diff:.3g})")
    for metric, d in sorted(by_metric.items()):
        print(f"{metric:22s} max |rust - independent| = {d:.3g}")
    print(f"{len(expected)} figures compared, worst difference {worst:.3g}, tolerance {TOL}")
    for line in bad:
        print("MISMATCH", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
