"""Cell cycle phase per cell from S and G2/M marker genes (scanpy's ``score_genes_cell_cycle``).

The gene lists are the ones Seurat ships as ``cc.genes`` (Tirosh et al. 2016, Science 352:189),
which the real Cellenics worker scores with ``Seurat::CellCycleScoring``. Scanpy's method is the
same (module scores against binned control genes; G1 when both scores are negative, else the phase
with the higher score).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import scanpy as sc
from anndata import AnnData

from ._utils import float_list, scratch_anndata

__all__ = ["G2M_GENES", "S_GENES", "UNDETERMINED_PHASE", "CellCyclePhases", "cell_cycle_phases"]

#: S phase markers (Seurat ``cc.genes$s.genes``).
S_GENES: tuple[str, ...] = tuple(
    [
        "MCM5",
        "PCNA",
        "TYMS",
        "FEN1",
        "MCM2",
        "MCM4",
        "RRM1",
        "UNG",
        "GINS2",
        "MCM6",
        "CDCA7",
        "DTL",
        "PRIM1",
        "UHRF1",
        "MLF1IP",
        "HELLS",
        "RFC2",
        "RPA2",
        "NASP",
        "RAD51AP1",
        "GMNN",
        "WDR76",
        "SLBP",
        "CCNE2",
        "UBR7",
        "POLD3",
        "MSH2",
        "ATAD2",
        "RAD51",
        "RRM2",
        "CDC45",
        "CDC6",
        "EXO1",
        "TIPIN",
        "DSCC1",
        "BLM",
        "CASP8AP2",
        "USP1",
        "CLSPN",
        "POLA1",
        "CHAF1B",
        "BRIP1",
        "E2F8",
    ]
)
#: G2/M phase markers (Seurat ``cc.genes$g2m.genes``).
G2M_GENES: tuple[str, ...] = tuple(
    [
        "HMGB2",
        "CDK1",
        "NUSAP1",
        "UBE2C",
        "BIRC5",
        "TPX2",
        "TOP2A",
        "NDC80",
        "CKS2",
        "NUF2",
        "CKS1B",
        "MKI67",
        "TMPO",
        "CENPF",
        "TACC3",
        "FAM64A",
        "SMC4",
        "CCNB2",
        "CKAP2L",
        "CKAP2",
        "AURKB",
        "BUB1",
        "KIF11",
        "ANP32E",
        "TUBB4B",
        "GTSE1",
        "KIF20B",
        "HJURP",
        "CDCA3",
        "HN1",
        "CDC20",
        "TTK",
        "CDC25C",
        "KIF2C",
        "RANGAP1",
        "NCAPD2",
        "DLGAP5",
        "CDCA2",
        "CDCA8",
        "ECT2",
        "KIF23",
        "HMMR",
        "AURKA",
        "PSRC1",
        "ANLN",
        "LBR",
        "CKAP5",
        "CENPE",
        "CTCF",
        "NEK2",
        "G2E3",
        "GAS2L3",
        "CBX5",
        "CENPA",
    ]
)
#: The phase of every cell when scoring is impossible (the real worker's wording).
UNDETERMINED_PHASE = "Undetermined cycle phase"


class CellCyclePhases(TypedDict):
    """Result of :func:`cell_cycle_phases` (one entry per cell, in cell order)."""

    phase: list[str]
    s_score: list[float | None]
    g2m_score: list[float | None]
    s_genes: list[str]
    g2m_genes: list[str]


def matching_genes(gene_names: object, wanted: tuple[str, ...]) -> list[str]:
    """The names among ``gene_names`` that are in ``wanted``, case-insensitively (human ``MCM5``
    and mouse ``Mcm5`` alike, as the real worker's ``tolower`` match)."""
    lookup = {str(name).upper(): str(name) for name in gene_names}
    return [lookup[gene] for gene in wanted if gene in lookup]


def cell_cycle_phases(
    adata: AnnData, *, use_raw: bool | None = None, random_state: int = 0
) -> CellCyclePhases:
    """Score every cell for S and G2/M and assign its phase (``G1``, ``S`` or ``G2M``).

    Parameters
    ----------
    adata
        Log-normalised expression (``.raw`` when present).
    use_raw
        Score ``.raw`` (default when present) or ``.X``.
    random_state
        Seed of the control gene sampling.

    Returns
    -------
    CellCyclePhases
        Phases and scores per cell, and the marker genes found. When no S or no G2/M marker is in
        the experiment, or scanpy cannot score (too few genes to draw controls from), every cell is
        :data:`UNDETERMINED_PHASE` with ``None`` scores, as the real worker answers.
    """
    scratch = scratch_anndata(adata, use_raw=use_raw)
    s_genes = matching_genes(scratch.var_names, S_GENES)
    g2m_genes = matching_genes(scratch.var_names, G2M_GENES)
    undetermined = CellCyclePhases(
        phase=[UNDETERMINED_PHASE] * adata.n_obs,
        s_score=[None] * adata.n_obs,
        g2m_score=[None] * adata.n_obs,
        s_genes=s_genes,
        g2m_genes=g2m_genes,
    )
    if not s_genes or not g2m_genes:
        return undetermined
    try:
        sc.tl.score_genes_cell_cycle(
            scratch, s_genes=s_genes, g2m_genes=g2m_genes, random_state=random_state, copy=False
        )
    except (ValueError, IndexError):  # scanpy: no control genes / empty gene bins
        return undetermined
    return CellCyclePhases(
        phase=scratch.obs["phase"].astype(str).tolist(),
        s_score=float_list(np.asarray(scratch.obs["S_score"])),
        g2m_score=float_list(np.asarray(scratch.obs["G2M_score"])),
        s_genes=s_genes,
        g2m_genes=g2m_genes,
    )
