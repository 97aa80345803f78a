"""Cell type annotation of clusters from marker genes, scored the ScType way.

The real Cellenics worker runs ScType (Ianevski et al. 2022, Nat Commun 13:1246) with its marker
database. This is the same scoring on a marker table of our own (:data:`MARKERS`, canonical markers
of the immune cell types found in blood, written from the common literature, not ScType's
database): every marker's expression is z-scored across cells (clipped at 10, as Seurat's
``ScaleData``); a positive marker is weighted by its specificity (1 for a marker of one cell type,
down to 0 for a marker of every type of the tissue, linearly); a cell's score for a type is the weighted sum of
its positive markers / sqrt(their number) minus the sum of its negative markers / sqrt(their
number); a cluster gets the type with the largest sum of scores over its cells, or ``Unknown`` when
that sum is below a quarter of its cells (ScType's confidence rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._utils import expression_source
from .errors import InvalidRequestError

__all__ = ["MARKERS", "UNKNOWN_TYPE", "ClusterAnnotation", "annotate_clusters", "marker_scores"]

#: Cell type → (positive markers, negative markers), per tissue (human symbols; matched
#: case-insensitively, so mouse symbols match too).
MARKERS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "Immune system": {
        "CD4+ T cells": (("CD3D", "CD3E", "CD4", "IL7R", "CCR7", "LEF1", "TCF7"), ("CD8A", "CD8B", "NKG7")),
        "CD8+ T cells": (("CD3D", "CD3E", "CD8A", "CD8B", "GZMK", "CCL5"), ("CD4",)),
        "Natural killer cells": (
            ("NKG7", "GNLY", "KLRD1", "KLRF1", "NCAM1", "PRF1", "GZMB", "FCGR3A"),
            ("CD3D", "CD3E"),
        ),
        "B cells": (("CD79A", "CD79B", "MS4A1", "CD19", "CD22", "BANK1", "PAX5"), ("CD3D",)),
        "Plasma cells": (("JCHAIN", "MZB1", "IGHG1", "XBP1", "SDC1"), ("MS4A1",)),
        "Classical monocytes": (("CD14", "LYZ", "S100A8", "S100A9", "VCAN", "FCN1"), ("FCGR3A",)),
        "Non-classical monocytes": (("FCGR3A", "MS4A7", "LST1", "IFITM3", "CDKN1C"), ("CD14",)),
        "Myeloid dendritic cells": (("FCER1A", "CD1C", "CLEC10A", "HLA-DQA1"), ("CD14",)),
        "Plasmacytoid dendritic cells": (("LILRA4", "CLEC4C", "IL3RA", "TCF4", "IRF7"), ()),
        "Platelets": (("PPBP", "PF4", "ITGA2B", "GP9", "TUBB1"), ()),
        "Erythroid cells": (("HBB", "HBA1", "HBA2", "ALAS2"), ()),
        "Hematopoietic progenitor cells": (("CD34", "KIT", "PROM1"), ()),
    },
}
#: The type of a cluster no cell type scores confidently for (ScType's word).
UNKNOWN_TYPE = "Unknown"
_Z_MAX = 10.0


class ClusterAnnotation(TypedDict):
    """Result of :func:`annotate_clusters`."""

    cell_type: list[str]
    clusters: dict[str, str]
    scores: dict[str, dict[str, float]]


def _markers(tissue: str) -> Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    if tissue not in MARKERS:
        raise InvalidRequestError(
            "tissue",
            f"No marker set for tissue {tissue!r}; this service annotates: {', '.join(MARKERS)}",
        )
    return MARKERS[tissue]


def marker_scores(
    adata: AnnData, *, tissue: str = "Immune system", use_raw: bool | None = None
) -> pd.DataFrame:
    """The ScType score of every cell (rows, cell order) for every cell type of ``tissue``
    (columns) with at least one positive marker in the experiment."""
    markers = _markers(tissue)
    matrix, gene_names, _ = expression_source(adata, use_raw)
    lookup: dict[str, int] = {}
    for position, name in enumerate(gene_names):
        lookup.setdefault(str(name).upper(), position)
    frequency: dict[str, int] = {}
    for positive, _ in markers.values():
        for gene in positive:
            frequency[gene] = frequency.get(gene, 0) + 1
    n_types = len(markers)

    def weight(gene: str) -> float:  # 1 for a marker of one type, 0 for a marker of every type
        return 1.0 if n_types == 1 else (n_types - frequency[gene]) / (n_types - 1)

    wanted = sorted({gene for pair in markers.values() for genes in pair for gene in genes if gene in lookup})
    columns = [lookup[gene] for gene in wanted]
    block = matrix[:, columns]
    block = np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)
    spread = block.std(axis=0, ddof=1) if adata.n_obs > 1 else np.zeros(len(wanted))
    z = np.divide(block - block.mean(axis=0), spread, out=np.zeros_like(block), where=spread > 0)
    z = np.minimum(z, _Z_MAX)
    where = {gene: i for i, gene in enumerate(wanted)}
    scores = {}
    for cell_type, (positive, negative) in markers.items():
        found = [gene for gene in positive if gene in where]
        if not found:
            continue
        score = sum(z[:, where[gene]] * weight(gene) for gene in found) / np.sqrt(len(found))
        against = [gene for gene in negative if gene in where]
        if against:
            score = score - sum(z[:, where[gene]] for gene in against) / np.sqrt(len(against))
        scores[cell_type] = score
    if not scores:
        raise InvalidRequestError(
            "tissue", f"None of the {tissue} marker genes is in the experiment; it cannot be annotated"
        )
    return pd.DataFrame(scores, index=adata.obs_names.copy())


def annotate_clusters(
    adata: AnnData, *, group_by: str, tissue: str = "Immune system", use_raw: bool | None = None
) -> ClusterAnnotation:
    """The cell type of every cluster of ``.obs[group_by]`` (see the module text), per cell.

    Returns
    -------
    ClusterAnnotation
        ``cell_type`` per cell (cell order; cells without a cluster get ``Unknown``), the type per
        cluster and each cluster's summed score per cell type.
    """
    if group_by not in adata.obs.columns:
        raise InvalidRequestError("group_by", f"{group_by!r} is not an .obs column of the experiment")
    scores = marker_scores(adata, tissue=tissue, use_raw=use_raw)
    labels = adata.obs[group_by].astype(str).where(adata.obs[group_by].notna(), None).to_numpy()
    cell_type = np.full(adata.n_obs, UNKNOWN_TYPE, dtype=object)
    clusters: dict[str, str] = {}
    summed: dict[str, dict[str, float]] = {}
    for cluster in dict.fromkeys(label for label in labels if label is not None):
        members = labels == cluster
        totals = scores[members].sum(axis=0)
        best = str(totals.idxmax())
        chosen = best if totals[best] >= members.sum() / 4 else UNKNOWN_TYPE
        clusters[cluster] = chosen
        summed[cluster] = {str(key): float(value) for key, value in totals.items()}
        cell_type[members] = chosen
    return ClusterAnnotation(cell_type=cell_type.tolist(), clusters=clusters, scores=summed)
