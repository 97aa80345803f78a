"""Interactive tasks of the analysis service: a validated task + a loaded experiment → result data.

Each handler maps the task body's camelCase fields onto one :mod:`analyses` function and returns
its plain-data result (the WorkResponse's result body, before JSON encoding). Analysis errors keep
their stable codes (``UNKNOWN_CELL_SET``, ``INVALID_REQUEST``, ``EMBEDDING_UNAVAILABLE``, ...);
the message names the body field in the task's own spelling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

import analyses
from flows.analysis.experiments import LoadedExperiment
from flows.analysis.protocol import ErrorCode, ServiceError, Task

# analyses parameter names -> body field names, for error messages.
_FIELD_NAMES = {
    "method": "type",
    "n_neighbors": "nNeighbors",
    "random_state": "randomState",
    "select_fields": "selectFields",
    "order_by": "orderBy",
    "order_direction": "orderDirection",
    "offset": "offset",
    "limit": "limit",
    "gene_names_filter": "geneNamesFilter",
    "genes": "genes",
    "cell_sets": "cellSets",
    "resolution": "resolution",
    "cell_set": "cellSet",
    "versus": "compareWith",
    "corr_method": "correctionMethod",
    "n_genes": "nGenes",
    "group_by": "groupBy",
}


def _get_embedding(experiment: LoadedExperiment, body: dict[str, Any]) -> Any:
    options = _options(
        body, computeIfMissing="compute_if_missing", nNeighbors="n_neighbors", randomState="random_state"
    )
    return analyses.embedding(experiment.adata, method=body["type"], **options)


def _list_genes(experiment: LoadedExperiment, body: dict[str, Any]) -> Any:
    options = _options(
        body,
        selectFields="select_fields",
        orderBy="order_by",
        orderDirection="order_direction",
        offset="offset",
        limit="limit",
        geneNamesFilter="gene_names_filter",
    )
    return analyses.list_genes(experiment.adata, **options)


def _gene_expression(experiment: LoadedExperiment, body: dict[str, Any]) -> Any:
    genes = body["genes"]
    if not genes:
        raise ServiceError(ErrorCode.INVALID_REQUEST, "GeneExpression: genes must name at least one gene")
    result = analyses.gene_expression(
        experiment.adata, genes=genes, cell_sets=body.get("cellSets"), index=experiment.index
    )
    if not result["genes"]:
        missing = ", ".join(map(repr, result["missingGenes"][:20]))
        raise ServiceError(
            ErrorCode.UNKNOWN_GENE,
            f"None of the requested genes is in experiment {experiment.experiment_id!r}: {missing}",
        )
    return result


def _cluster_cells(experiment: LoadedExperiment, body: dict[str, Any]) -> Any:
    options = _options(
        body, type="method", resolution="resolution", nNeighbors="n_neighbors", randomState="random_state"
    )
    return analyses.cluster_cells(experiment.adata, **options)


def _differential_expression(experiment: LoadedExperiment, body: dict[str, Any]) -> Any:
    options = _options(
        body, compareWith="versus", method="method", correctionMethod="corr_method", nGenes="n_genes"
    )
    return analyses.differential_expression(experiment.adata, cell_set=body["cellSet"], **options)


def _marker_genes(experiment: LoadedExperiment, body: dict[str, Any]) -> Any:
    options = _options(body, nGenes="n_genes", method="method")
    group_by = body.get("groupBy") or default_grouping(experiment.adata)
    return analyses.marker_genes(experiment.adata, group_by=group_by, **options)


HANDLERS: dict[str, Callable[[LoadedExperiment, dict[str, Any]], Any]] = {
    "GetEmbedding": _get_embedding,
    "ListGenes": _list_genes,
    "GeneExpression": _gene_expression,
    "ClusterCells": _cluster_cells,
    "DifferentialExpression": _differential_expression,
    "MarkerGenes": _marker_genes,
}


def default_grouping(adata: Any) -> str:
    """The ``.obs`` column MarkerGenes groups by when the body names none: a clustering if any."""
    categorical = [
        str(column)
        for column in adata.obs.columns
        if isinstance(adata.obs[column].dtype, pd.CategoricalDtype)
    ]
    for preferred in ("louvain", "leiden"):
        if preferred in categorical:
            return preferred
    if not categorical:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            "MarkerGenes: the experiment has no categorical .obs column to group by",
        )
    return categorical[0]


def run_task(task: Task, experiment: LoadedExperiment) -> Any:
    """The result data of an interactive task; :class:`ServiceError` for a request that cannot be answered."""
    handler = HANDLERS.get(task.name)
    if handler is None:  # PrepareExperiment is not interactive; parse_task already refused the rest
        raise ServiceError(ErrorCode.UNKNOWN_TASK, f"{task.name} is not an interactive task")
    try:
        return handler(experiment, task.body)
    except analyses.InvalidRequestError as error:
        field = _FIELD_NAMES.get(error.field, error.field)
        code = error.code  # INVALID_REQUEST or UNKNOWN_CELL_SET
        raise ServiceError(code, f"{task.name}: invalid {field}: {error.message}") from None
    except analyses.AnalysisError as error:
        raise ServiceError(error.code, f"{task.name}: {error.message}") from None


def _options(body: dict[str, Any], **names: str) -> dict[str, Any]:
    """Keyword arguments for the body fields present (body name → parameter name)."""
    return {parameter: body[field] for field, parameter in names.items() if field in body}
