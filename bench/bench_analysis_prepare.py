"""PrepareExperiment on a synthetic 10x matrix: our flow against the same steps called directly.

    .venv/bin/python bench/bench_analysis_prepare.py [--cells 100000] [--genes 20000] [--runs 1]

A synthetic count matrix (``analyses.write_10x``, Cell Ranger v3 layout, gzip) is put in S3. Then,
each in a fresh process, one after the other:

(ours)   the ``prepare-experiment`` flow, called as a flow (Prefect flow and task runs, progress
         artifact, response published): S3 download → ``analyses.prepare_experiment`` → write
         ``processed.h5ad`` → S3 upload → WorkResponse;
(stock)  the same steps called directly: boto3 download, ``sc.read_10x_mtx``,
         ``sc.pp.calculate_qc_metrics``, ``filter_cells``/``filter_genes`` and the mitochondrial
         cut, ``normalize_total``, ``log1p``, ``highly_variable_genes`` (seurat, 2,000), ``.raw``,
         ``pca`` (50), ``neighbors`` (15), ``leiden`` (igraph, 2 iterations), ``umap``,
         ``write_h5ad``, boto3 upload.

``neighbors`` on >= 8,192 cells crashes in scanpy 1.11 with pynndescent 0.7 (``csr_array`` has no
``getnnz``); both variants pass scanpy the very PyNNDescentTransformer it would build itself,
returning ``csr_matrix`` (``analyses._utils.compute_neighbors``).

Reported: wall time of the work (imports excluded, the same for both) and the process' peak
resident memory (VmHWM, imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _common import print_table, summarise  # noqa: E402

PREFIX = "bench-sources/prepare-{cells}x{genes}/"


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child_ours(args) -> None:
    import scanpy  # noqa: F401  (imports before the clock, as in the stock child)

    import analyses  # noqa: F401
    from flows.analysis.prepare import prepare_experiment

    request = {
        "uuid": str(uuid.uuid4()),
        "experimentId": f"bench-prepared-{args.cells}",
        "timeout": "2099-12-31 00:00:00",
        # Each run of the bench prepares the same experiment id again.
        "body": {
            "name": "PrepareExperiment",
            "sourceBucket": args.bucket,
            "sourceMatrixPath": args.prefix,
            "overwrite": True,
        },
    }
    started = time.perf_counter()
    state = prepare_experiment(request=request, response_id=f"bench-{uuid.uuid4()}", return_state=True)
    seconds = time.perf_counter() - started
    summary = state.result()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak": _peak_rss(),
                "cells": summary["cells"],
                "clusters": summary["clusters"],
            }
        )
    )


def child_stock(args) -> None:
    import boto3
    import numpy as np
    import scanpy as sc

    from analyses._utils import compute_neighbors

    s3 = boto3.session.Session().client("s3")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-stock-") as directory:
        matrix_dir = Path(directory) / "matrix"
        matrix_dir.mkdir()
        for item in s3.list_objects_v2(Bucket=args.bucket, Prefix=args.prefix)["Contents"]:
            s3.download_file(args.bucket, item["Key"], str(matrix_dir / Path(item["Key"]).name))
        adata = sc.read_10x_mtx(matrix_dir, var_names="gene_symbols", make_unique=True)
        adata.var["mt"] = adata.var_names.str.upper().str.startswith("MT-")
        sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
        sc.pp.filter_cells(adata, min_genes=200)
        adata = adata[adata.obs["pct_counts_mt"] <= 20.0].copy()
        sc.pp.filter_genes(adata, min_cells=3)
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat")
        adata.raw = adata
        sc.pp.pca(adata, n_comps=50, mask_var="highly_variable", random_state=0)
        compute_neighbors(adata, n_neighbors=15, n_pcs=50, random_state=0)
        sc.tl.leiden(adata, resolution=1.0, random_state=0, n_iterations=2, flavor="igraph", directed=False)
        sc.tl.umap(adata, random_state=0)
        path = Path(directory) / "processed.h5ad"
        adata.write_h5ad(path)
        s3.upload_file(str(path), args.bucket, f"experiments/bench-stock-{args.cells}/processed.h5ad")
    seconds = time.perf_counter() - started
    clusters = int(np.unique(adata.obs["leiden"]).size)
    print(
        json.dumps({"seconds": seconds, "peak": _peak_rss(), "cells": int(adata.n_obs), "clusters": clusters})
    )


def _run_child(role: str, args, prefix: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        role,
        "--bucket",
        args.bucket,
        "--prefix",
        prefix,
        "--cells",
        str(args.cells),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--child", choices=["ours", "stock"])
    parser.add_argument("--bucket")
    parser.add_argument("--prefix")
    args = parser.parse_args()
    if args.child:
        (child_ours if args.child == "ours" else child_stock)(args)
        return

    from analyses import write_10x
    from interlinked.local import up
    from interlinked.settings import get_settings

    settings = get_settings()
    up(settings, echo=lambda line: print(line, file=sys.stderr))
    args.bucket = settings.data_bucket
    import boto3

    s3 = boto3.session.Session().client("s3")
    prefix = PREFIX.format(cells=args.cells, genes=args.genes)
    existing = s3.list_objects_v2(Bucket=args.bucket, Prefix=prefix).get("KeyCount", 0)
    if existing < 3:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-10x-") as directory:
            write_10x(
                directory, n_cells=args.cells, n_genes=args.genes, n_clusters=12, seed=7, compresslevel=1
            )
            size = sum(path.stat().st_size for path in Path(directory).iterdir())
            for path in Path(directory).iterdir():
                s3.upload_file(str(path), args.bucket, prefix + path.name)
        print(
            f"synthetic 10x matrix {args.cells:,} x {args.genes:,} ({size / 1e6:.0f} MB gzip) written and uploaded "
            f"in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )

    seconds: dict[str, list[float]] = {"ours": [], "stock": []}
    peaks: dict[str, list[int]] = {"ours": [], "stock": []}
    for run in range(args.runs):
        for role in ("stock", "ours") if run % 2 == 0 else ("ours", "stock"):
            print(f"run {run + 1}: {role} ...", file=sys.stderr)
            outcome = _run_child(role, args, prefix)
            seconds[role].append(outcome["seconds"])
            peaks[role].append(outcome["peak"])
            print(
                f"  {role}: {outcome['seconds']:.1f} s, peak {outcome['peak'] / 1e9:.2f} GB, "
                f"{outcome['cells']} cells, {outcome['clusters']} clusters",
                file=sys.stderr,
            )
    print_table(
        f"PrepareExperiment, {args.cells:,} x {args.genes:,} synthetic 10x matrix in S3 → processed.h5ad in S3",
        {
            "ours: prepare-experiment flow": summarise(seconds["ours"]),
            "stock: the same steps in scanpy + boto3": summarise(seconds["stock"]),
        },
    )
    ours, stock = min(seconds["ours"]), min(seconds["stock"])
    ours_peak, stock_peak = max(peaks["ours"]), max(peaks["stock"])
    print(
        f"\nwall time: ours {ours:.1f} s vs stock {stock:.1f} s → overhead {100 * (ours / stock - 1):+.1f} % (target <= 10 %)"
    )
    print(
        f"peak memory: ours {ours_peak / 1e9:.2f} GB vs stock {stock_peak / 1e9:.2f} GB "
        f"({100 * (ours_peak / stock_peak - 1):+.1f} %)"
    )


if __name__ == "__main__":
    main()
