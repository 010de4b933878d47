#!/usr/bin/env python3
"""NumPy reference of anoflow's PatchCore hot paths, at the sizes of
plugins/scorers/benches/patchcore.rs: greedy k-center coreset (10%, on a 128-d random
projection) against train-set size, and per-image nearest-neighbour scoring
(|a|^2 + |b|^2 - 2ab with a BLAS matmul, tiled) against bank size, with its GFLOP/s.

The coreset loop is one BLAS matrix-vector product per pick, on one BLAS thread when
threadpoolctl is installed (it comes with scikit-learn): two OpenBLAS threads make that small
product about 10x slower on a 2-core machine.

Run: python3 tools/bench_patchcore_reference.py   (BENCH_QUICK=1 for a smaller run)
"""
import os
import time

import numpy as np

PATCHES = 784  # 28 x 28 cells per image
DIM = 1024
PROJ = 128


def features(rows, seed):
    return np.random.default_rng(seed).random((rows, DIM), dtype=np.float32)


def one_blas_thread():
    """threadpoolctl's BLAS limit of 1 (installed with scikit-learn), or nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def coreset(rows, fraction, seed=0):
    rng = np.random.default_rng(seed)
    proj = rows @ (rng.standard_normal((DIM, PROJ), dtype=np.float32) / np.sqrt(PROJ))
    # Squared distances to the new pick as |p|^2 + |q|^2 - 2 p.q: one matrix-vector product
    # per pick (BLAS), no n x 128 temporary.
    sq = np.einsum("ij,ij->i", proj, proj)
    n = len(proj)
    count = max(1, int(n * fraction))
    min_d = np.full(n, np.inf, dtype=np.float32)
    d = np.empty(n, dtype=np.float32)
    nxt = int(rng.integers(n))
    chosen = np.empty(count, dtype=np.int64)
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
    return rows[chosen]


def nearest(bank, bank_norms, queries, tile=2048):
    qn = np.einsum("ij,ij->i", queries, queries)
    best = np.full(len(queries), np.inf, dtype=np.float32)
    idx = np.zeros(len(queries), dtype=np.int64)
    for s in range(0, len(bank), tile):
        d2 = qn[:, None] + bank_norms[None, s:s + tile] - 2.0 * (queries @ bank[s:s + tile].T)
        j = np.argmin(d2, axis=1)
        v = d2[np.arange(len(queries)), j]
        better = v < best
        best[better] = v[better]
        idx[better] = j[better] + s
    return np.sqrt(np.maximum(best, 0.0)), idx


def median_secs(runs, f):
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return sorted(t)[len(t) // 2]


def main():
    quick = bool(os.environ.get("BENCH_QUICK"))
    images = [10, 40] if quick else [10, 20, 40]
    print(f"# numpy reference: numpy {np.__version__}, dim {DIM}, {PATCHES} patches per image")
    print()
    print("| train images | train rows | coreset 10% fit (s) | bank rows |")
    print("|---:|---:|---:|---:|")
    for n in images:
        rows = features(n * PATCHES, n)
        s = time.perf_counter()
        bank = coreset(rows, 0.1)
        print(f"| {n} | {n * PATCHES} | {time.perf_counter() - s:.2f} | {len(bank)} |")
    print()
    print("| bank rows | per-image scoring (ms) | GFLOP/s |")
    print("|---:|---:|---:|")
    banks = [3136, 31360] if quick else [784, 3136, 7840, 31360]
    query = features(PATCHES, 999)
    for m in banks:
        bank = features(m, 7 + m)
        norms = np.einsum("ij,ij->i", bank, bank)
        flops = 2.0 * PATCHES * m * DIM
        t = median_secs(3 if m > 10000 else 7, lambda: nearest(bank, norms, query))
        print(f"| {m} | {t * 1e3:.1f} | {flops / t / 1e9:.1f} |")


if __name__ == "__main__":
    main()
