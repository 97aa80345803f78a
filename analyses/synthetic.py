"""Realistic synthetic single-cell count matrices, generated sparse, plus a 10x v3 writer.

Model
-----
Every cell belongs to one of ``n_clusters`` clusters. A cluster's expression profile is a shared
log-normal gene abundance profile with its own marker genes up-regulated ``marker_fold_change``
times. A cell's expected UMI count is log-normal around ``median_counts``; a fraction of cells are
*low quality* (fewer UMIs, most of them mitochondrial), the rest have a few percent mitochondrial
UMIs. Counts are negative binomial with a per-gene dispersion.

Counts are drawn sparse, never densified: a negative binomial count is a Poisson number of
"bursts" with log-series sizes, so each cell draws its bursts' genes from the cumulative burst
rates and the work is proportional to the number of non-zeros. Expected library sizes are snapped
to a fine logarithmic grid (about 4 % steps) so cells sharing a cluster and a grid level share burst
rates. Cells are generated in fixed-size chunks with one random stream per chunk, so a seed always
gives the same matrix and memory stays bounded by the output.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from anndata import AnnData

from .errors import InvalidRequestError

__all__ = ["SyntheticCounts", "generate_counts", "synthetic_anndata", "write_10x"]

# Human mitochondrially encoded protein-coding genes, in chrM order (as in 10x references).
_MITO_GENES = (
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
)  # fmt: skip
_FEATURE_TYPE = "Gene Expression"
_CELLS_PER_CHUNK = 4_096
# Library sizes are snapped to 2**(k / _LEVELS_PER_OCTAVE) so cells share burst rates.
_LEVELS_PER_OCTAVE = 16
_BARCODE_LENGTH = 16


@dataclass(frozen=True, eq=False)
class SyntheticCounts:
    """A synthetic count matrix with its ground truth.

    Attributes
    ----------
    counts
        Cells x genes UMI counts, ``scipy.sparse.csr_matrix`` of ``float32`` (like
        :func:`scanpy.read_10x_mtx`).
    barcodes
        Cell barcodes, 10x style (16 nucleotides + ``"-1"``).
    gene_ids, gene_names, feature_types
        Per gene, as in a 10x ``features.tsv``.
    clusters
        True cluster (``int``) per cell.
    low_quality
        Whether each cell was generated as a low-quality (high mitochondrial) cell.
    marker_genes
        Names of the marker genes of each cluster.
    """

    counts: sp.csr_matrix
    barcodes: np.ndarray
    gene_ids: np.ndarray
    gene_names: np.ndarray
    feature_types: np.ndarray
    clusters: np.ndarray
    low_quality: np.ndarray
    marker_genes: dict[int, list[str]]

    @property
    def n_cells(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.counts.shape[1])

    def to_anndata(self) -> AnnData:
        """The counts as an AnnData shaped like :func:`scanpy.read_10x_mtx` output.

        ``.obs`` also has the ground truth: ``synthetic_cluster`` (categorical) and
        ``synthetic_low_quality``. The count matrix is shared, not copied.
        """
        obs = pd.DataFrame(
            {
                "synthetic_cluster": pd.Categorical(
                    self.clusters.astype(str),
                    categories=[str(k) for k in range(int(self.clusters.max(initial=-1)) + 1)],
                ),
                "synthetic_low_quality": self.low_quality,
            },
            index=pd.Index(self.barcodes, dtype=object),
        )
        var = pd.DataFrame(
            {"gene_ids": self.gene_ids, "feature_types": self.feature_types},
            index=pd.Index(self.gene_names, dtype=object),
        )
        return AnnData(X=self.counts, obs=obs, var=var)


def generate_counts(
    n_cells: int = 2_000,
    n_genes: int = 1_000,
    *,
    n_clusters: int = 5,
    n_markers: int | None = None,
    marker_fold_change: float = 8.0,
    median_counts: float | None = None,
    low_quality_fraction: float = 0.05,
    seed: int = 0,
) -> SyntheticCounts:
    """Generate a synthetic UMI count matrix.

    Parameters
    ----------
    n_cells, n_genes
        Matrix shape. Time and memory are proportional to the non-zeros: about 20 s and 1.9 GB
        peak for 100,000 x 20,000 (8 bytes per non-zero; 12 above 2**31 non-zeros, where scipy
        needs 64-bit indices, so about 19 GB for 1,000,000 x 20,000).
    n_clusters
        Number of cell populations (sizes are uneven, drawn from a Dirichlet distribution).
    n_markers
        Marker genes per cluster; default ``max(10, n_genes // 40)``.
    marker_fold_change
        Mean up-regulation of a cluster's markers in that cluster (each marker gets a fold change
        drawn around this value).
    median_counts
        Median expected UMIs per healthy cell; default ``n_genes / 8``, which gives 90-95 % zeros
        (about 2,500 UMIs at 20,000 genes, as in typical 10x data).
    low_quality_fraction
        Fraction of low-quality cells: about a third of the UMIs, 30-70 % of them mitochondrial.
    seed
        Random seed; the same arguments always give the same matrix.

    Returns
    -------
    SyntheticCounts
        The counts and ground truth.
    """
    _check_generator_arguments(n_cells, n_genes, n_clusters, low_quality_fraction, marker_fold_change)
    root = np.random.SeedSequence(seed)
    design_seed, cell_seed, barcode_seed, *chunk_seeds = root.spawn(3 + -(-n_cells // _CELLS_PER_CHUNK))
    design = _design(
        n_genes,
        n_clusters=n_clusters,
        n_markers=max(10, n_genes // 40) if n_markers is None else n_markers,
        marker_fold_change=marker_fold_change,
        rng=np.random.default_rng(design_seed),
    )
    cells = _cells(
        n_cells,
        n_clusters=n_clusters,
        cluster_weights=design.cluster_weights,
        median_counts=n_genes / 8 if median_counts is None else float(median_counts),
        low_quality_fraction=low_quality_fraction,
        rng=np.random.default_rng(cell_seed),
    )
    chunks = (
        _generate_chunk(design, cells, start, min(start + _CELLS_PER_CHUNK, n_cells), chunk_seed)
        for start, chunk_seed in zip(range(0, n_cells, _CELLS_PER_CHUNK), chunk_seeds, strict=True)
    )
    counts = _stack_rows(chunks, n_cells=n_cells, n_genes=n_genes)
    return SyntheticCounts(
        counts=counts,
        barcodes=_barcodes(n_cells, np.random.default_rng(barcode_seed)),
        gene_ids=design.gene_ids,
        gene_names=design.gene_names,
        feature_types=np.full(n_genes, _FEATURE_TYPE, dtype=object),
        clusters=cells.clusters,
        low_quality=cells.low_quality,
        marker_genes={k: design.gene_names[markers].tolist() for k, markers in enumerate(design.markers)},
    )


def synthetic_anndata(n_cells: int = 2_000, n_genes: int = 1_000, **options: object) -> AnnData:
    """Generate a synthetic count matrix directly as an AnnData (no files).

    Takes the arguments of :func:`generate_counts`; see :meth:`SyntheticCounts.to_anndata`.
    """
    return generate_counts(n_cells, n_genes, **options).to_anndata()  # type: ignore[arg-type]


def write_10x(
    directory: str | Path,
    data: SyntheticCounts | None = None,
    *,
    compresslevel: int = 4,
    **options: object,
) -> SyntheticCounts:
    """Write a count matrix as a Cell Ranger v3 matrix directory.

    Writes ``matrix.mtx.gz`` (MatrixMarket coordinate, genes x cells, 1-based, sorted by cell),
    ``barcodes.tsv.gz`` and ``features.tsv.gz`` (``id<TAB>name<TAB>feature type``), readable by
    :func:`scanpy.read_10x_mtx`. The matrix is written in chunks of cells.

    Parameters
    ----------
    directory
        Output directory (created if needed).
    data
        The counts to write; when omitted, generated with :func:`generate_counts` from ``options``.
    compresslevel
        gzip compression level (1-9); low levels write much faster.
    **options
        Arguments of :func:`generate_counts` (only when ``data`` is omitted).

    Returns
    -------
    SyntheticCounts
        The data written (with its ground truth).
    """
    if data is None:
        data = generate_counts(**options)  # type: ignore[arg-type]
    elif options:
        raise InvalidRequestError("options", "Pass either data or generator options, not both")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    with gzip.open(directory / "barcodes.tsv.gz", "wt", compresslevel=compresslevel) as handle:
        handle.write("".join(f"{barcode}\n" for barcode in data.barcodes))
    with gzip.open(directory / "features.tsv.gz", "wt", compresslevel=compresslevel) as handle:
        handle.writelines(
            f"{gene_id}\t{name}\t{feature_type}\n"
            for gene_id, name, feature_type in zip(
                data.gene_ids, data.gene_names, data.feature_types, strict=True
            )
        )
    _write_mtx_gz(directory / "matrix.mtx.gz", data.counts, compresslevel=compresslevel)
    return data


# --------------------------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Design:
    gene_ids: np.ndarray
    gene_names: np.ndarray
    nuclear: np.ndarray  # column index of each nuclear gene
    mito: np.ndarray  # column index of each mitochondrial gene
    profiles: np.ndarray  # n_clusters x n_nuclear relative abundance, rows sum to 1
    mito_profile: np.ndarray  # relative abundance within mitochondrial genes, sums to 1
    dispersion: np.ndarray  # NB size parameter per gene (all genes)
    markers: list[np.ndarray]  # column indices of each cluster's markers
    cluster_weights: np.ndarray


@dataclass(frozen=True)
class _Cells:
    clusters: np.ndarray
    low_quality: np.ndarray
    nuclear_level: np.ndarray  # grid level of each cell's expected nuclear UMIs
    mito_mean: np.ndarray  # expected mitochondrial UMIs per cell


def _check_generator_arguments(
    n_cells: int, n_genes: int, n_clusters: int, low_quality_fraction: float, marker_fold_change: float
) -> None:
    if n_cells < 1:
        raise InvalidRequestError("n_cells", f"n_cells must be >= 1, got {n_cells}")
    if n_genes < 20:
        raise InvalidRequestError("n_genes", f"n_genes must be >= 20, got {n_genes}")
    if not 1 <= n_clusters <= n_genes // 10:
        raise InvalidRequestError(
            "n_clusters", f"n_clusters must be between 1 and n_genes / 10, got {n_clusters}"
        )
    if not 0 <= low_quality_fraction < 1:
        raise InvalidRequestError(
            "low_quality_fraction", f"low_quality_fraction must be in [0, 1), got {low_quality_fraction}"
        )
    if marker_fold_change < 1:
        raise InvalidRequestError(
            "marker_fold_change", f"marker_fold_change must be >= 1, got {marker_fold_change}"
        )


def _design(
    n_genes: int, *, n_clusters: int, n_markers: int, marker_fold_change: float, rng: np.random.Generator
) -> _Design:
    n_mito = min(len(_MITO_GENES), n_genes // 20)
    # Mitochondrial genes sit at the end, as chrM does in 10x references.
    mito = np.arange(n_genes - n_mito, n_genes)
    nuclear = np.arange(n_genes - n_mito)
    gene_names = np.array([f"GENE{i + 1}" for i in nuclear] + list(_MITO_GENES[:n_mito]), dtype=object)
    gene_ids = np.array([f"ENSG{i + 1:011d}" for i in range(n_genes)], dtype=object)

    # Heavy-tailed abundances: a few very highly expressed genes, a long tail of rare ones.
    base = rng.lognormal(mean=0.0, sigma=1.5, size=len(nuclear))
    # Markers come from moderately expressed genes, disjoint between clusters.
    candidates = rng.permutation(np.flatnonzero(base > np.quantile(base, 0.3)))
    n_markers = max(1, min(n_markers, len(candidates) // n_clusters))
    markers = [candidates[k * n_markers : (k + 1) * n_markers] for k in range(n_clusters)]
    profiles = np.tile(base, (n_clusters, 1))
    for k, marker_columns in enumerate(markers):
        profiles[k, marker_columns] *= marker_fold_change * rng.lognormal(0.0, 0.25, size=len(marker_columns))
    profiles /= profiles.sum(axis=1, keepdims=True)

    mito_profile = rng.lognormal(0.0, 0.5, size=n_mito)
    mito_profile /= max(mito_profile.sum(), 1e-12)
    return _Design(
        gene_ids=gene_ids,
        gene_names=gene_names,
        nuclear=nuclear,
        mito=mito,
        profiles=profiles,
        mito_profile=mito_profile,
        dispersion=rng.lognormal(np.log(3.0), 0.5, size=n_genes),
        markers=[nuclear[m] for m in markers],
        cluster_weights=rng.dirichlet(np.full(n_clusters, 4.0)),
    )


def _cells(
    n_cells: int,
    *,
    n_clusters: int,
    cluster_weights: np.ndarray,
    median_counts: float,
    low_quality_fraction: float,
    rng: np.random.Generator,
) -> _Cells:
    clusters = rng.choice(n_clusters, size=n_cells, p=cluster_weights)
    low_quality = rng.random(n_cells) < low_quality_fraction
    library = median_counts * rng.lognormal(0.0, 0.4, size=n_cells)
    library[low_quality] *= 0.35
    mito_fraction = np.where(
        low_quality, rng.beta(10.0, 10.0, size=n_cells) * 0.8 + 0.1, rng.beta(2.0, 48.0, size=n_cells)
    )
    nuclear_mean = library * (1.0 - mito_fraction)
    level = np.rint(np.log2(np.maximum(nuclear_mean, 1e-3)) * _LEVELS_PER_OCTAVE).astype(np.int64)
    return _Cells(
        clusters=clusters.astype(np.int64),
        low_quality=low_quality,
        nuclear_level=level,
        mito_mean=library * mito_fraction,
    )


def _generate_chunk(
    design: _Design, cells: _Cells, start: int, stop: int, seed: np.random.SeedSequence
) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    n_chunk = stop - start
    n_genes = len(design.gene_names)
    rows: list[np.ndarray] = []
    columns: list[np.ndarray] = []
    values: list[np.ndarray] = []

    # Nuclear genes: NB(mu, r) = Poisson(r * log1p(mu / r)) bursts of LogSeries(mu / (mu + r)) UMIs.
    clusters = cells.clusters[start:stop]
    levels = cells.nuclear_level[start:stop]
    nuclear_dispersion = design.dispersion[design.nuclear]
    group_keys = clusters * (1 << 32) + (levels - levels.min())
    order = np.argsort(group_keys, kind="stable")
    boundaries = np.flatnonzero(np.diff(group_keys[order])) + 1
    nuclear_columns = design.nuclear.astype(np.int32)
    for members in np.split(order, boundaries):
        if members.size == 0:
            continue
        scale = 2.0 ** (levels[members[0]] / _LEVELS_PER_OCTAVE)
        mean = scale * design.profiles[clusters[members[0]]]
        burst_rate = nuclear_dispersion * np.log1p(mean / nuclear_dispersion)
        # Bursts of a gene over the group's cells form one Poisson process split uniformly among
        # the cells, so draw per-gene totals and then a cell per burst (no per-burst gene search).
        bursts_per_gene = rng.poisson(burst_rate * members.size)
        n_bursts = int(bursts_per_gene.sum())
        if n_bursts == 0:
            continue
        success = np.repeat(mean / (mean + nuclear_dispersion), bursts_per_gene)
        rows.append(members.astype(np.int32)[rng.integers(members.size, size=n_bursts)])
        columns.append(np.repeat(nuclear_columns, bursts_per_gene))
        values.append(rng.logseries(success).astype(np.float32))

    # Mitochondrial genes are few: draw them densely with each cell's own mean.
    if len(design.mito):
        mito_mean = np.outer(cells.mito_mean[start:stop], design.mito_profile)
        dispersion = design.dispersion[design.mito]
        mito_counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mito_mean))
        cell_index, mito_index = np.nonzero(mito_counts)
        rows.append(cell_index.astype(np.int32))
        columns.append(design.mito[mito_index].astype(np.int32))
        values.append(mito_counts[cell_index, mito_index].astype(np.float32))

    if not rows:
        return sp.csr_matrix((n_chunk, n_genes), dtype=np.float32)
    # COO -> CSR keeps input order within a row; a cell's entries all come from its group (genes
    # ascending) and then the mitochondrial genes (last columns), so rows are already sorted and the
    # conversion only sums bursts that landed on the same (cell, gene).
    matrix = sp.coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
        shape=(n_chunk, n_genes),
    ).tocsr()
    matrix.sort_indices()  # no-op check unless the invariant above is ever broken
    return matrix


def _stack_rows(chunks: Iterator[sp.csr_matrix], *, n_cells: int, n_genes: int) -> sp.csr_matrix:
    """Stack CSR row blocks into one CSR matrix while holding a single block at a time.

    ``scipy.sparse.vstack`` needs every block and the result in memory together (twice the
    output); at 1,000,000 x 20,000 that is tens of GB. Here the output arrays are preallocated from
    the first block's density (grown if that was an underestimate) and filled block by block.
    """
    first = next(chunks)
    capacity = int(first.nnz / max(first.shape[0], 1) * n_cells * 1.1) + 1024
    data = np.empty(capacity, dtype=np.float32)
    indices = np.empty(capacity, dtype=_index_dtype(capacity))
    indptr = np.zeros(n_cells + 1, dtype=indices.dtype)
    n_rows = n_stored = 0
    for chunk in itertools.chain([first], chunks):
        end = n_stored + chunk.nnz
        if end > capacity:
            capacity = max(end, int(capacity * 1.25))
            data = _grown(data, capacity, n_stored, data.dtype)
            indices = _grown(indices, capacity, n_stored, _index_dtype(capacity))
            indptr = indptr.astype(indices.dtype, copy=False)
        data[n_stored:end] = chunk.data
        indices[n_stored:end] = chunk.indices
        indptr[n_rows + 1 : n_rows + chunk.shape[0] + 1] = chunk.indptr[1:] + n_stored
        n_rows += chunk.shape[0]
        n_stored = end
    # Trimming with views keeps the (at most ~10 % larger) buffers instead of copying them.
    matrix = sp.csr_matrix((n_cells, n_genes), dtype=np.float32)
    matrix.data, matrix.indices, matrix.indptr = data[:n_stored], indices[:n_stored], indptr
    matrix.has_sorted_indices = True
    return matrix


def _index_dtype(n_stored: int) -> type:
    return np.int32 if n_stored <= np.iinfo(np.int32).max else np.int64


def _grown(array: np.ndarray, capacity: int, n_used: int, dtype: type) -> np.ndarray:
    grown = np.empty(capacity, dtype=dtype)
    grown[:n_used] = array[:n_used]
    return grown


def _barcodes(n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Unique 16-nt barcodes: an odd multiplier modulo 4**16 is a bijection on the indices."""
    space = 4**_BARCODE_LENGTH
    multiplier = int(rng.integers(space // 4)) * 2 + 1
    offset = int(rng.integers(space))
    # uint64 wrap-around is harmless: 4**16 divides 2**64.
    index = np.arange(n_cells, dtype=np.uint64)
    codes = (index * np.uint64(multiplier) + np.uint64(offset)) % np.uint64(space)
    shifts = np.arange(_BARCODE_LENGTH - 1, -1, -1, dtype=np.uint64) * np.uint64(2)
    digits = ((codes[:, None] >> shifts) & np.uint64(3)).astype(np.uint8)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)[digits]
    sequences = letters.view(f"S{_BARCODE_LENGTH}").ravel().astype(str)
    return np.char.add(sequences, "-1").astype(object)


def _write_mtx_gz(path: Path, counts: sp.csr_matrix, *, compresslevel: int) -> None:
    n_cells, n_genes = counts.shape
    counts = sp.csr_matrix(counts)
    with gzip.open(path, "wb", compresslevel=compresslevel) as handle:
        handle.write(b"%%MatrixMarket matrix coordinate integer general\n")
        metadata = {"software_version": "interlinked-synthetic", "format_version": 2}
        handle.write(f"%metadata_json: {json.dumps(metadata)}\n".encode())
        handle.write(f"{n_genes} {n_cells} {counts.nnz}\n".encode())
        for start in range(0, n_cells, _CELLS_PER_CHUNK):
            block = counts[start : start + _CELLS_PER_CHUNK].tocoo()
            if block.nnz == 0:
                continue
            # Entries are (gene, cell) with global cell numbers, in cell order.
            entries = sp.coo_matrix(
                (block.data.astype(np.int64), (block.col, block.row + start)), shape=(n_genes, n_cells)
            )
            handle.write(_mtx_body(entries))


def _mtx_body(entries: sp.coo_matrix) -> bytes:
    """The entry lines of a MatrixMarket file, formatted by scipy's fast C++ writer."""
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, entries, field="integer")
    text = buffer.getvalue()
    # Drop scipy's header: the banner and comment lines (``%``) and the size line after them.
    position = 0
    while text.startswith(b"%", position):
        position = text.index(b"\n", position) + 1
    return text[text.index(b"\n", position) + 1 :]
