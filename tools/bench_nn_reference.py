#!/usr/bin/env python3
"""Reference timings for exact nearest-neighbour search at the PatchCore scoring shapes of
plugins/scorers/benches/nn.rs (1024-d): OpenBLAS sgemm alone through numpy (`q @ b.T`, the
speed limit of any GEMM-based search), numpy GEMM + min (|q|^2 + |b|^2 - 2 q.b in bank tiles of
2048 rows, argmin), and FAISS `IndexFlatL2` search with k = 1. GFLOP/s = 2 * queries * bank * dim
/ time for all (the brute-force flops, also for a search that skips bank rows).

Installs numpy and faiss-cpu (and, for --extract-real, onnx, onnxruntime, pillow, scipy and
scikit-learn) into its own virtual environment (target/bench-nn-venv, or $NN_BENCH_VENV) on first
use, and runs with 2 OpenBLAS / OpenMP threads unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS say
otherwise.

Run: python3 tools/bench_nn_reference.py [--compare anoflow.tsv] [--real DIR] | --cpu
                                        | --extract-real DIR [--root data/photo-demo] [--category brick]
With --compare, rows from `NN_BENCH_TSV=anoflow.tsv cargo bench -p anoflow-plugin-scorers
--bench nn` join the table, with each row's share of the sgemm GFLOP/s and its speed-up over
FAISS. tools/bench_nn.sh does both. With --cpu it prints GFLOP per CPU-second of sgemm and FAISS
instead (see NN_BENCH_CPU in the Rust bench).

Real features: --extract-real DIR extracts MobileNetV2 patch features of one category of an
MVTec-AD-layout root exactly as tools/whole_run_reference.py does (its own code, imported) and
writes them to DIR as raw little-endian f32 row-major files with a side features.json:
  bank10   the 10 % greedy coreset of the fit rows (what pipelines/mvtec-ad-patchcore.yaml keeps;
           the reference's coreset, not anoflow's: same size, other picks),
  bankall  every fit row (a 100 % coreset),
  queries  every test image's 784 patches, the images taken round-robin over the defect types so
           that any prefix of whole images mixes them;
and the searched shapes: queries x bank10 with every query, queries x bankall with the first
BIG_BANK_IMAGES images' patches (a run under about a minute); and the three SHAPES of the random
rows on real features, from every train image (fit and validation, 40 on the photo set: 31,360
rows): the first image's 784 patches against the 10 % coreset (3,136 rows) and against every
train row, the first 4 images' 3,136 against the 40 % coreset (12,544 rows). `--real DIR` (with
`NN_BENCH_REAL=DIR` on the Rust side) times FAISS and sgemm on those shapes, and checks FAISS's
nearest indices against anoflow's (anoflow-nn-<label>.bin in DIR, written by the Rust bench): an
index may differ only where the two rows' distances (recomputed in f64) tie within 1e-6 relative.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("NN_BENCH_VENV", ROOT / "target" / "bench-nn-venv"))
DIM = 1024
SHAPES = [(784, 3136), (784, 31_360), (3136, 12_544)]
# Test images whose patches are searched against the whole fit set (bankall): 4 x 784 queries
# against ~25k rows is about 160 GFLOP, a couple of seconds per run.
BIG_BANK_IMAGES = 4
# (module, package) pairs: what every mode needs, and what --extract-real adds.
BASE = [("numpy", "numpy"), ("faiss", "faiss-cpu")]
EXTRACT = [("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("PIL", "pillow"), ("scipy", "scipy"), ("sklearn", "scikit-learn")]
# Where the real-feature search's nearest indices may differ: only between rows whose f64
# distances tie within this relative margin.
TIE_REL = 1e-6


def ensure_venv(needs):
    """Re-runs this script inside its own venv with the packages of `needs`, creating the venv or
    installing what it lacks."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import " + ", ".join(m for m, _ in needs)], capture_output=True)
    if probe.returncode != 0:
        packages = [p for _, p in needs]
        print(f"installing {' '.join(packages)} into {VENV}", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
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


def print_versions(np, faiss):
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    print(f"# numpy {np.__version__} ({config.get('name')} {config.get('version')}), faiss {faiss.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, OMP threads {faiss.omp_get_max_threads()}")


def measure(runs):
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print_versions(np, faiss)
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


# ---------------------------------------------------------------- real features
def extract_real(out: Path, root: Path, category: str, model: Path, threads: int):
    """Writes bank10, bankall and queries of `category` to `out` (see the module doc)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tools"))
    from whole_run_reference import Extractor, greedy_coreset, list_category, load_pair

    cats = sorted(d.name for d in root.iterdir() if (d / "train" / "good").is_dir()) if root.is_dir() else []
    if category not in cats:
        sys.exit(f"--extract-real: no category `{category}` with train/good under {root} "
                 f"(found: {', '.join(cats) or 'none'}); the photo demo set is made by "
                 f"`python3 tools/make_photo_demo.py --out data/photo-demo`")
    if not model.is_file():
        sys.exit(f"--extract-real: model {model} not found (tools/setup.sh fetches it)")
    # The hold-out draw of whole_run_reference.py's main: its generator is seeded with the
    # category's position among the root's categories.
    fit_files, val_files, test = list_category(root, category, np.random.default_rng(cats.index(category)))
    started = time.perf_counter()
    extract = Extractor(model, threads)
    fit = extract([load_pair(p, None)[0] for p in fit_files])
    patches = fit.shape[1] * fit.shape[2]
    fit = np.ascontiguousarray(fit.reshape(-1, fit.shape[-1]))
    bank10 = np.ascontiguousarray(fit[greedy_coreset(fit, 0.1)])
    val = extract([load_pair(p, None)[0] for p in val_files])
    train = np.ascontiguousarray(np.concatenate([fit, val.reshape(-1, val.shape[-1])]))
    # Banks of the random rows' sizes where the train split allows (31,360 rows = 40 images).
    sized = {}
    for (nq, nb) in SHAPES:
        if nb == len(train):
            sized[nb] = train
        elif nb < len(train):
            sized[nb] = np.ascontiguousarray(train[greedy_coreset(train, nb / len(train))][:nb])
    by_kind = {}
    for p, _ in test:
        by_kind.setdefault(p.parent.name, []).append(p)
    order = [by_kind[k][i] for i in range(max(map(len, by_kind.values()))) for k in sorted(by_kind)
             if i < len(by_kind[k])]
    queries = extract([load_pair(p, None)[0] for p in order])
    queries = np.ascontiguousarray(queries.reshape(-1, queries.shape[-1]))
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    named = [("bank10", bank10), ("bankall", fit), ("queries", queries)]
    named += [(f"train{nb}", a) for nb, a in sized.items()]
    for name, a in named:
        a.astype("<f4").tofile(out / f"{name}.f32")
        arrays[name] = {"file": f"{name}.f32", "rows": int(a.shape[0])}
    big = min(BIG_BANK_IMAGES, len(order)) * patches
    issue_shapes = [{"label": f"{nq}x{nb}", "bank": f"train{nb}", "queries": nq}
                    for nq, nb in SHAPES if nb in sized and nq <= len(queries) and len(sized[nb]) == nb]
    meta = {
        "category": category,
        "root": shown(root),
        "model": shown(model),
        "dim": int(fit.shape[1]),
        "patches_per_image": patches,
        "fit_images": len(fit_files),
        "query_images": [str(p.relative_to(root)) for p in order],
        "arrays": arrays,
        "shapes": [
            {"label": "bank10", "bank": "bank10", "queries": int(queries.shape[0])},
            {"label": "bankall", "bank": "bankall", "queries": int(big)},
        ] + issue_shapes,
    }
    # Written last: its presence (and time) says the arrays are complete.
    (out / "features.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"# real features of {root}/{category} in {out}: bank10 {len(bank10)}, bankall {len(fit)}, "
          f"queries {len(queries)} rows ({len(order)} test images) x {fit.shape[1]}, "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)


def shown(path: Path) -> str:
    """`path` relative to the repository where it lies inside it."""
    try:
        return str(path.absolute().relative_to(ROOT))
    except ValueError:
        return str(path)


def real_shape_key(meta, shape):
    """The shape field of the TSV rows, as plugins/scorers/benches/nn.rs writes it."""
    rows = meta["arrays"][shape["bank"]]["rows"]
    return f"real ({meta['category']}, {shape['label']}): {shape['queries']}x{rows}"


def load_real(np, directory: Path):
    meta = json.loads((directory / "features.json").read_text())
    arrays = {}
    for name, a in meta["arrays"].items():
        flat = np.fromfile(directory / a["file"], dtype="<f4")
        if flat.size != a["rows"] * meta["dim"]:
            sys.exit(f"{directory / a['file']}: {flat.size} floats, expected {a['rows']} x {meta['dim']} "
                     f"(features.json); re-run --extract-real")
        arrays[name] = flat.reshape(a["rows"], meta["dim"])
    return meta, arrays


def check_indices(np, directory, meta, shape, queries, bank, faiss_d2, faiss_idx):
    """FAISS's nearest rows against anoflow's (anoflow-nn-<label>.bin: per query f32 distance and
    u32 index, little-endian): one line saying how many differ, how many of those are ties
    within TIE_REL of the f64 distances, and, for the rest, which side found the nearer row.
    Returns the line and the count of queries where FAISS's row is nearer beyond a tie (anoflow
    not exact)."""
    key = real_shape_key(meta, shape)
    path = directory / f"anoflow-nn-{shape['label']}.bin"
    if not path.is_file() or path.stat().st_mtime < (directory / "features.json").stat().st_mtime:
        return (f"# {key}: no index check ({path.name} missing or older than features.json: run the Rust "
                f"bench with NN_BENCH_REAL={directory})"), 0
    ours = np.fromfile(path, dtype=np.dtype([("d", "<f4"), ("i", "<u4")]))
    if len(ours) != len(queries):
        return f"# {key}: no index check ({path.name} has {len(ours)} queries, expected {len(queries)})", 0
    ours_idx = ours["i"].astype(np.int64)
    theirs = faiss_idx[:, 0]

    def d64(rows):
        diff = queries.astype(np.float64) - bank[rows].astype(np.float64)
        return np.einsum("ij,ij->i", diff, diff)

    ours_d64 = d64(ours_idx)
    faiss_d64 = d64(theirs)
    # Reported distances against the f64 recomputation at the reported rows.
    ref = np.sqrt(ours_d64)
    ours_err = float(np.max(np.abs(ours["d"].astype(np.float64) - ref) / np.maximum(ref, 1e-30)))
    faiss_err = float(np.max(np.abs(np.sqrt(np.maximum(faiss_d2[:, 0], 0)).astype(np.float64) - np.sqrt(faiss_d64))
                             / np.maximum(np.sqrt(faiss_d64), 1e-30)))
    diff = np.flatnonzero(ours_idx != theirs)
    a, f = ours_d64[diff], faiss_d64[diff]
    tie = np.abs(a - f) <= TIE_REL * np.maximum(a, f)
    ours_nearer = ~tie & (a < f)
    faiss_nearer = int(np.sum(~tie & (f < a)))
    gap = f", FAISS's row farther by up to {np.max((f - a)[ours_nearer] / a[ours_nearer]):.1e} relative" \
        if ours_nearer.any() else ""
    line = (f"# {key}: nearest index FAISS vs anoflow: {len(diff)} of {len(queries)} differ, {int(tie.sum())} of "
            f"them ties within {TIE_REL:g} relative (f64 squared distances); beyond a tie anoflow's row nearer "
            f"{int(ours_nearer.sum())}, FAISS's nearer {faiss_nearer}{gap}; reported distance against f64 at "
            f"the reported row: anoflow max rel err {ours_err:.1e}, FAISS {faiss_err:.1e}")
    return line, faiss_nearer


def measure_real(runs, directory: Path):
    """sgemm and FAISS rows for the real-feature shapes, then the index check; returns the rows,
    the dimension, the check's lines and how many queries anoflow got wrong."""
    import faiss
    import numpy as np

    meta, arrays = load_real(np, directory)
    rows, lines, wrong = [], [], 0
    for shape in meta["shapes"]:
        key = real_shape_key(meta, shape)
        queries = np.ascontiguousarray(arrays["queries"][:shape["queries"]])
        bank = arrays[shape["bank"]]
        rows.append((key, "OpenBLAS sgemm only (numpy q @ b.T)", best_secs(runs, lambda: queries @ bank.T)))
        index = faiss.IndexFlatL2(meta["dim"])
        index.add(bank)
        rows.append((key, "FAISS IndexFlatL2 k=1", best_secs(runs, lambda: index.search(queries, 1))))
        d2, idx = index.search(queries, 1)
        line, bad = check_indices(np, directory, meta, shape, queries, bank, d2, idx)
        lines.append(line)
        wrong += bad
    return rows, meta["dim"], lines, wrong


# ---------------------------------------------------------------- table
def print_table(rows, dims):
    """One Markdown table, shapes in order of first appearance; `dims` maps a shape to its
    dimension (DIM unless a real shape says otherwise)."""
    shapes = list(dict.fromkeys(r[0] for r in rows))
    print()
    print("| queries x bank x 1024-d | implementation | ms | GFLOP/s | % of sgemm GFLOP/s | FAISS time / this time |")
    print("|---|---|---:|---:|---:|---:|")
    for shape in shapes:
        here = [r for r in rows if r[0] == shape]
        m = re.search(r"(\d+)x(\d+)$", shape)
        nq, nb = int(m.group(1)), int(m.group(2))
        label = shape[:m.start()].rstrip(": ")
        shown = f"{label} {nq} x {nb}".strip()
        flops = 2.0 * nq * nb * dims.get(shape, DIM)
        sgemm = next((s for _, n, s in here if n.startswith("OpenBLAS sgemm")), None)
        faiss_s = next((s for _, n, s in here if n.startswith("FAISS")), None)
        for _, name, secs in here:
            share = f"{100 * sgemm / secs:.0f} %" if sgemm else "n/a"
            speedup = f"{faiss_s / secs:.2f}" if faiss_s else "n/a"
            print(f"| {shown} | {name} | {secs * 1e3:.1f} | {flops / secs / 1e9:.1f} | {share} | {speedup} |")


def main():
    ap = argparse.ArgumentParser(description="Reference timings for exact nearest-neighbour search "
                                 "(see the module doc)")
    ap.add_argument("--compare", type=Path, help="TSV rows of the Rust bench (NN_BENCH_TSV) to join")
    ap.add_argument("--real", type=Path, metavar="DIR", help="also time the real-feature shapes of DIR")
    ap.add_argument("--cpu", action="store_true", help="GFLOP per CPU-second of sgemm and FAISS")
    ap.add_argument("--extract-real", type=Path, metavar="DIR", help="extract real features into DIR and stop")
    ap.add_argument("--root", type=Path, default=ROOT / "data" / "photo-demo", help="MVTec-AD-layout root")
    ap.add_argument("--category", default="brick")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "mobilenet_v2.onnx")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = ap.parse_args()
    ensure_venv(BASE + EXTRACT if args.extract_real else BASE)
    if args.extract_real:
        extract_real(args.extract_real, args.root, args.category, args.model, args.threads)
        return
    if args.cpu:
        cpu_rates()
        return
    runs = int(os.environ.get("NN_BENCH_RUNS", "5"))
    rows = measure(runs)
    dims, lines, wrong = {}, [], 0
    if args.real:
        real_rows, dim, lines, wrong = measure_real(runs, args.real)
        dims = {r[0]: dim for r in real_rows}
        rows += real_rows
    if args.compare:
        for line in args.compare.read_text().splitlines():
            shape, name, secs = line.split("\t")
            rows.append((shape, name, float(secs)))
    print_table(rows, dims)
    if lines:
        print()
        print("\n".join(lines))
    if wrong:
        sys.exit(f"anoflow's nearest row is farther than FAISS's beyond a tie for {wrong} queries")


if __name__ == "__main__":
    main()
