"""Pure single-cell analyses: AnnData in, plain data out.

Scanpy-style functions (``adata`` first, keyword-only options) returning JSON-serialisable
builtins (dicts, lists, str, int, float, bool, ``None``), with Python's snake_case keys
(``z_score``, ``missing_genes``, ...): the analysis service spells them the wire's camelCase at its
protocol edge (``flows.analysis.tasks``), not here. This package imports nothing else of the
project: no Prefect, no AWS.

Every deliberate failure is an :class:`~analyses.errors.AnalysisError` with a stable ``code``.
:data:`ANALYSIS_VERSION` changes whenever results may change, so it can key caches.
"""

from . import errors
from ._version import ANALYSIS_VERSION
from .annotation import MARKERS, UNKNOWN_TYPE, annotate_clusters, marker_scores
from .cell_cycle import G2M_GENES, S_GENES, UNDETERMINED_PHASE, CellCyclePhases, cell_cycle_phases
from .cell_sets import CellSet, cell_set_id, list_cell_sets, resolve_cell_sets
from .cell_values import (
    CellValuesUnavailableError,
    cell_ids,
    cell_values,
    indexed_by_cell_id,
    truncate_at_quantile,
)
from .clustering import CLUSTERING_METHODS, ClusteringResult, cluster_cells
from .differential import (
    DifferentialExpressionResult,
    DifferentialExpressionRow,
    compared_cells,
    differential_expression,
)
from .embedding import EMBEDDING_METHODS, embedding
from .errors import (
    AnalysisError,
    EmbeddingUnavailableError,
    InvalidInputDataError,
    InvalidRequestError,
    MissingInputFileError,
    NoCellsLeftError,
    UnknownCellSetError,
)
from .expressed import MIN_TOTAL_COUNT, background_expressed_genes, estimated_counts
from .expression import ExpressionIndex, GeneExpression, GeneExpressionResult, gene_expression
from .genes import GeneTable, gene_name_matcher, like_pattern_to_regex, list_genes
from .markers import MarkerGenesResult, MarkerGroup, marker_genes
from .prepare import PREPARE_STEPS, ProgressCallback, prepare_anndata, prepare_experiment, read_10x_matrix_dir
from .synthetic import SyntheticCounts, generate_counts, synthetic_anndata, write_10x
from .trajectory import TrajectoryGraph, trajectory_graph, trajectory_pseudotime

__all__ = [
    "ANALYSIS_VERSION",
    "CLUSTERING_METHODS",
    "EMBEDDING_METHODS",
    "G2M_GENES",
    "MARKERS",
    "MIN_TOTAL_COUNT",
    "PREPARE_STEPS",
    "S_GENES",
    "UNDETERMINED_PHASE",
    "UNKNOWN_TYPE",
    "AnalysisError",
    "CellCyclePhases",
    "CellSet",
    "CellValuesUnavailableError",
    "ClusteringResult",
    "DifferentialExpressionResult",
    "DifferentialExpressionRow",
    "EmbeddingUnavailableError",
    "ExpressionIndex",
    "GeneExpression",
    "GeneExpressionResult",
    "GeneTable",
    "InvalidInputDataError",
    "InvalidRequestError",
    "MarkerGenesResult",
    "MarkerGroup",
    "MissingInputFileError",
    "NoCellsLeftError",
    "ProgressCallback",
    "SyntheticCounts",
    "TrajectoryGraph",
    "UnknownCellSetError",
    "annotate_clusters",
    "background_expressed_genes",
    "cell_cycle_phases",
    "cell_ids",
    "cell_set_id",
    "cell_values",
    "cluster_cells",
    "compared_cells",
    "differential_expression",
    "embedding",
    "errors",
    "estimated_counts",
    "gene_expression",
    "gene_name_matcher",
    "generate_counts",
    "indexed_by_cell_id",
    "like_pattern_to_regex",
    "list_cell_sets",
    "list_genes",
    "marker_genes",
    "marker_scores",
    "prepare_anndata",
    "prepare_experiment",
    "read_10x_matrix_dir",
    "resolve_cell_sets",
    "synthetic_anndata",
    "trajectory_graph",
    "trajectory_pseudotime",
    "truncate_at_quantile",
    "write_10x",
]
