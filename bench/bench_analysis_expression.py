"""Gene expression lookup on a large synthetic experiment, and the memory the service needs for it.

    .venv/bin/python bench/bench_analysis_expression.py [--cells 1000000] [--genes 20000]
        [--median-counts N] [--repeats 30] [--memory-cells 100000]

1. Lookup: a synthetic count matrix (``analyses.generate_counts``), log-normalised (CSR float32, as
   an experiment holds it). 2 genes over all cells, a different pair each time:
   - ours: ``ExpressionIndex`` (CSC, built once per experiment version) → dense values;
   - ours, the whole GeneExpression result: ``analyses.gene_expression`` with the index (values,
     statistics, z-scores, as Python lists) and its JSON encoding;
   - stock: ``adata[:, genes].X.toarray()`` on the CSR matrix.
2. Memory: a child process loads the experiment from an ``.h5ad`` exactly as the service does
   (``flows.analysis.experiments.read_experiment_file``: read, build the index, share one copy),
   and reports its peak and steady resident memory against the matrix's own size.

At the default density (median 2,500 UMIs/cell at 20,000 genes) 1,000,000 cells hold ~1.5e9
non-zeros (~18 GB); ``--median-counts`` lowers the density to fit a smaller machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _common import print_table, summarise  # noqa: E402


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """High-water mark of this process' resident memory (VmHWM: unlike ru_maxrss, not inherited
    from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _experiment(cells: int, genes: int, median_counts: float | None, seed: int = 0):
    import scanpy as sc

    from analyses import generate_counts

    started = time.perf_counter()
    counts = generate_counts(cells, genes, n_clusters=10, median_counts=median_counts, seed=seed)
    adata = counts.to_anndata()
    del counts
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    print(
        f"  {cells:,} x {genes:,}: {adata.X.nnz:,} non-zeros ({adata.X.nnz / cells / genes:.1%}), "
        f"generated in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return adata


def lookup(args) -> None:
    import numpy as np

    from analyses import ExpressionIndex, gene_expression
    from flows.analysis.experiments import matrix_bytes
    from flows.analysis.protocol import encode

    adata = _experiment(args.cells, args.genes, args.median_counts)
    csr = adata.X
    matrix_size = matrix_bytes(csr)
    before = rss_bytes()
    started = time.perf_counter()
    index = ExpressionIndex.from_adata(adata)
    build_seconds = time.perf_counter() - started
    index_size = matrix_bytes(index.matrix)
    print(
        f"  matrix {matrix_size / 1e9:.2f} GB (CSR); index built in {build_seconds:.1f} s "
        f"({index_size / 1e9:.2f} GB CSC, RSS +{(rss_bytes() - before) / 1e9:.2f} GB)",
        file=sys.stderr,
    )
    rng = np.random.default_rng(1)
    names = list(adata.var_names)
    detected = np.flatnonzero(np.diff(index.matrix.indptr) > adata.n_obs // 100)
    pairs = [[names[i] for i in rng.choice(detected, 2, replace=False)] for _ in range(args.repeats)]

    def ours_values(pair):
        return [index.column_values(index.gene_columns[gene]) for gene in pair]

    def stock_values(pair):
        return adata[:, pair].X.toarray()

    # Same answer both ways (first pair), then time each on every pair.
    np.testing.assert_allclose(np.column_stack(ours_values(pairs[0])), stock_values(pairs[0]), rtol=1e-6)
    timings: dict[str, list[float]] = {"ours": [], "full": [], "encode": [], "stock": []}
    for pair in pairs:
        started = time.perf_counter()
        ours_values(pair)
        timings["ours"].append(time.perf_counter() - started)
        started = time.perf_counter()
        result = gene_expression(adata, genes=pair, index=index)
        timings["full"].append(time.perf_counter() - started)
        started = time.perf_counter()
        encode(result)
        timings["encode"].append(time.perf_counter() - started)
        del result
        started = time.perf_counter()
        stock_values(pair)
        timings["stock"].append(time.perf_counter() - started)
    milliseconds = {key: [value * 1000 for value in values] for key, values in timings.items()}
    rows = {
        "ours: ExpressionIndex (CSC) lookup": summarise(milliseconds["ours"]),
        "ours: full GeneExpression result": summarise(milliseconds["full"]),
        "ours: JSON encoding of that result": summarise(milliseconds["encode"]),
        "stock: adata[:, genes].X on CSR": summarise(milliseconds["stock"]),
    }
    print_table(
        f"2 genes x all {args.cells:,} cells ({args.genes:,} genes), {args.repeats} gene pairs",
        rows,
        unit="ms",
    )
    ours = rows["ours: ExpressionIndex (CSC) lookup"]["p50"]
    full = rows["ours: full GeneExpression result"]["p50"]
    stock = rows["stock: adata[:, genes].X on CSR"]["p50"]
    print(
        f"\nlookup p50 {ours:.2f} ms (target <= 50 ms), {stock / ours:.0f}x faster than adata[:, genes] "
        f"on CSR; full result (statistics, z-scores, lists) p50 {full:.1f} ms"
    )


def memory_child(path: str) -> None:
    """(child) Load the experiment the service's way; print memory figures as JSON."""
    import anndata  # noqa: F401  (imports outside the measurement)
    import scanpy  # noqa: F401

    import analyses  # noqa: F401
    import flows.analysis.tasks  # noqa: F401
    from flows.analysis.experiments import matrix_bytes, read_experiment_file

    baseline = rss_bytes()
    started = time.perf_counter()
    loaded = read_experiment_file(Path(path), "bench", "v1")
    seconds = time.perf_counter() - started
    gc.collect()
    print(
        json.dumps(
            {
                "baseline": baseline,
                "steady": rss_bytes(),
                "peak": peak_rss_bytes(),
                "matrix": matrix_bytes(loaded.index.matrix),
                "held": loaded.nbytes,
                "seconds": seconds,
                "file": Path(path).stat().st_size,
            }
        )
    )


def memory(args) -> None:
    adata = _experiment(args.memory_cells, args.genes, args.median_counts)
    with tempfile.TemporaryDirectory(prefix="bench-expression-", dir=args.tmpdir) as directory:
        path = Path(directory) / "processed.h5ad"
        adata.write_h5ad(path)
        del adata
        gc.collect()
        output = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    gb = 1e9
    matrix = figures["matrix"]
    print(
        f"\nService memory holding a {args.memory_cells:,} x {args.genes:,} experiment (loaded from .h5ad):"
    )
    print(f"  expression matrix itself      {matrix / gb:8.2f} GB")
    print(
        f"  held by the service (est.)    {figures['held'] / gb:8.2f} GB  ({figures['held'] / matrix:.2f}x the matrix)"
    )
    steady = figures["steady"] - figures["baseline"]
    peak = figures["peak"] - figures["baseline"]
    print(f"  RSS after load (- imports)    {steady / gb:8.2f} GB  ({steady / matrix:.2f}x the matrix)")
    print(f"  peak RSS while loading        {peak / gb:8.2f} GB  ({peak / matrix:.2f}x the matrix)")
    print(
        f"  load time                     {figures['seconds']:8.1f} s   (file {figures['file'] / gb:.2f} GB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--median-counts", type=float, default=None, help="default: genes / 8")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--memory-cells", type=int, default=100_000, help="0 to skip the memory part")
    parser.add_argument("--skip-lookup", action="store_true")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if not args.skip_lookup:
        lookup(args)
        gc.collect()
    if args.memory_cells:
        memory(args)


if __name__ == "__main__":
    main()
