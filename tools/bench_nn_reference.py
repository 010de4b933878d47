#!/usr/bin/env python3
"""Reference timings for exact nearest-neighbour search at the PatchCore scoring shapes of
plugins/scorers/benches/nn.rs (1024-d): OpenBLAS sgemm alone through numpy (`q @ b.T`, the
speed limit of any GEMM-based search), numpy GEMM + min (|q|^2 + |b|^2 - 2 q.b in bank tiles of
2048 rows, argmin), and FAISS `IndexFlatL2` search with k = 1. GFLOP/s = 2 * queries * bank * dim
/ time for all.

Installs numpy and faiss-cpu into its own virtual environment (target/bench-nn-venv, or
$NN_BENCH_VENV) on first use, and runs with 2 OpenBLAS / OpenMP threads unless
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS say otherwise.

Run: python3 tools/bench_nn_reference.py [--compare anoflow.tsv | --cpu]
With --compare, rows from `NN_BENCH_TSV=anoflow.tsv cargo bench -p anoflow-plugin-scorers
--bench nn` join the table, with each row's share of the sgemm GFLOP/s and its speed-up over
FAISS. tools/bench_nn.sh does both. With --cpu it prints GFLOP per CPU-second of sgemm and FAISS
instead (see NN_BENCH_CPU in the Rust bench).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("NN_BENCH_VENV", ROOT / "target" / "bench-nn-venv"))
DIM = 1024
SHAPES = [(784, 3136), (784, 31_360), (3136, 12_544)]


def ensure_venv():
    """Re-runs this script inside its own venv with numpy and faiss-cpu, creating it if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (numpy, faiss-cpu)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy", "faiss-cpu"], check=True)
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "2")
    env.setdefault("OMP_NUM_THREADS", "2")
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


def best_secs(runs, f):
    """Shortest of `runs` timed calls after a warm-up (the least disturbed on a shared machine),
    as plugins/scorers/benches/nn.rs reports."""
    f()
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return min(t)


def gemm_min(np, bank, bank_norms, queries, tile=2048):
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


def measure(runs):
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    print(f"# numpy {np.__version__} ({config.get('name')} {config.get('version')}), faiss {faiss.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, OMP threads {faiss.omp_get_max_threads()}")
    rows = []
    for nq, nb in SHAPES:
        rng = np.random.default_rng(nb)
        bank = rng.random((nb, DIM), dtype=np.float32)
        queries = rng.random((nq, DIM), dtype=np.float32)
        shape = f"{nq}x{nb}"
        rows.append((shape, "OpenBLAS sgemm only (numpy q @ b.T)", best_secs(runs, lambda: queries @ bank.T)))
        norms = np.einsum("ij,ij->i", bank, bank)
        rows.append((shape, "numpy GEMM + min", best_secs(runs, lambda: gemm_min(np, bank, norms, queries))))
        index = faiss.IndexFlatL2(DIM)
        index.add(bank)
        rows.append((shape, "FAISS IndexFlatL2 k=1", best_secs(runs, lambda: index.search(queries, 1))))
    return rows


def cpu_rates():
    """GFLOP per CPU-second of this process for sgemm and FAISS (about 4e11 flops per cell), the
    figure plugins/scorers/benches/nn.rs prints with NN_BENCH_CPU=1; meant for one BLAS thread."""
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"# GFLOP per CPU-second, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"OMP threads {faiss.omp_get_max_threads()}")
    print("| queries x bank | OpenBLAS sgemm only | FAISS IndexFlatL2 k=1 |")
    print("|---|---:|---:|")
    for nq, nb in SHAPES:
        rng = np.random.default_rng(nb)
        bank = rng.random((nb, DIM), dtype=np.float32)
        queries = rng.random((nq, DIM), dtype=np.float32)
        flops = 2.0 * nq * nb * DIM
        reps = int(np.ceil(4e11 / flops))
        index = faiss.IndexFlatL2(DIM)
        index.add(bank)
        rates = []
        for f in (lambda: queries @ bank.T, lambda: index.search(queries, 1)):
            f()
            start = time.process_time()
            for _ in range(reps):
                f()
            rates.append(flops * reps / (time.process_time() - start) / 1e9)
        print(f"| {nq} x {nb} | {rates[0]:.1f} | {rates[1]:.1f} |")


def main():
    ensure_venv()
    if "--cpu" in sys.argv:
        cpu_rates()
        return
    runs = int(os.environ.get("NN_BENCH_RUNS", "5"))
    rows = measure(runs)
    if "--compare" in sys.argv:
        path = sys.argv[sys.argv.index("--compare") + 1]
        for line in Path(path).read_text().splitlines():
            shape, name, secs = line.split("\t")
            rows.append((shape, name, float(secs)))
    print()
    print("| queries x bank x 1024-d | implementation | ms | GFLOP/s | % of sgemm GFLOP/s | FAISS time / this time |")
    print("|---|---|---:|---:|---:|---:|")
    for nq, nb in SHAPES:
        shape = f"{nq}x{nb}"
        here = [r for r in rows if r[0] == shape]
        flops = 2.0 * nq * nb * DIM
        sgemm = next(s for sh, n, s in here if n.startswith("OpenBLAS sgemm"))
        faiss_s = next(s for sh, n, s in here if n.startswith("FAISS"))
        for _, name, secs in here:
            print(f"| {nq} x {nb} | {name} | {secs * 1e3:.1f} | {flops / secs / 1e9:.1f} | "
                  f"{100 * sgemm / secs:.0f} % | {faiss_s / secs:.2f} |")


if __name__ == "__main__":
    main()
