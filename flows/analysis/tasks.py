"""The protocol edge: the wire's camelCase tasks in, :mod:`analyses` calls in Python, camelCase out.

The wire (the seed's task JSON and WorkResponse bodies) speaks camelCase; :mod:`analyses` speaks
Python (snake_case parameters and result keys). This module is the one place that translates
between the two. Each interactive task has one :class:`TaskSpec`:

- ``parameters``: body field → analyses parameter. It builds the call, and the same table names a
  bad field in an error message in the task's own spelling (``invalid orderDirection: ...``);
- ``result``: how the keys of the result are spelled on the wire (:class:`Keys`, :class:`Each`);
  keys that are data (gene names, ``.var`` columns chosen by the request) are left alone.

PrepareExperiment's ``config`` (:data:`PREPARE_CONFIG`) and its summary (:func:`prepare_summary`)
are translated here too. Light to import: :mod:`analyses` (scanpy) is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flows.analysis.experiments import LoadedExperiment
from flows.analysis.protocol import ErrorCode, ServiceError, Task

# ---- result keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """A dict whose keys are names: ``renamed`` (Python → wire; others keep their name) and the
    shape of the values under ``nested`` keys (by their Python name)."""

    renamed: Mapping[str, str] = field(default_factory=dict)
    nested: Mapping[str, Shape] = field(default_factory=dict)


@dataclass(frozen=True)
class Each:
    """A list, or a dict keyed by data (e.g. gene names), whose values all have ``shape``."""

    shape: Shape


Shape = Keys | Each | None  # None: the value goes out as it is


def to_wire(value: Any, shape: Shape) -> Any:
    """``value`` with its keys spelled as the wire spells them."""
    if shape is None or value is None:
        return value
    if isinstance(shape, Each):
        if isinstance(value, dict):
            return {key: to_wire(item, shape.shape) for key, item in value.items()}
        return [to_wire(item, shape.shape) for item in value]
    return {shape.renamed.get(key, key): to_wire(item, shape.nested.get(key)) for key, item in value.items()}


# One row of a differential expression table (DifferentialExpression rows, MarkerGenes genes).
_RANKED_GENE = Keys(
    {"log_fold_change": "logFoldChange", "p_value": "pValue", "adjusted_p_value": "adjustedPValue"}
)


# ---- the tasks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """How one interactive task is answered.

    Parameters
    ----------
    run
        ``run(experiment, **arguments)``: the analyses call, given the experiment and the
        translated body.
    parameters
        Body field → analyses parameter.
    result
        How the result's keys are spelled on the wire.
    """

    run: Callable[..., Any]
    parameters: Mapping[str, str]
    result: Shape = None

    def arguments(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the body fields present."""
        return {parameter: body[name] for name, parameter in self.parameters.items() if name in body}

    def field_name(self, parameter: str) -> str:
        """The body field of an analyses parameter (the parameter itself when no field maps to it)."""
        return next((name for name, known in self.parameters.items() if known == parameter), parameter)


def _on_adata(function_name: str) -> Callable[..., Any]:
    """``run`` for an analyses function that takes the AnnData and the arguments as they are."""

    def run(experiment: LoadedExperiment, **arguments: Any) -> Any:
        import analyses

        return getattr(analyses, function_name)(experiment.adata, **arguments)

    return run


def _gene_expression(experiment: LoadedExperiment, *, genes: list[str], **arguments: Any) -> Any:
    import analyses

    if not genes:
        raise ServiceError(ErrorCode.INVALID_REQUEST, "GeneExpression: genes must name at least one gene")
    result = analyses.gene_expression(experiment.adata, genes=genes, index=experiment.index, **arguments)
    if not result["genes"]:
        missing = ", ".join(map(repr, result["missing_genes"][:20]))
        raise ServiceError(
            ErrorCode.UNKNOWN_GENE,
            f"None of the requested genes is in experiment {experiment.experiment_id!r}: {missing}",
        )
    return result


def _marker_genes(experiment: LoadedExperiment, *, group_by: str | None = None, **arguments: Any) -> Any:
    import analyses

    return analyses.marker_genes(
        experiment.adata, group_by=group_by or default_grouping(experiment.adata), **arguments
    )


TASKS: dict[str, TaskSpec] = {
    "GetEmbedding": TaskSpec(
        _on_adata("embedding"),
        {
            "type": "method",
            "computeIfMissing": "compute_if_missing",
            "nNeighbors": "n_neighbors",
            "randomState": "random_state",
        },
    ),
    "ListGenes": TaskSpec(
        _on_adata("list_genes"),
        {
            "selectFields": "select_fields",
            "orderBy": "order_by",
            "orderDirection": "order_direction",
            "offset": "offset",
            "limit": "limit",
            "geneNamesFilter": "gene_names_filter",
        },
    ),
    "GeneExpression": TaskSpec(
        _gene_expression,
        {"genes": "genes", "cellSets": "cell_sets"},
        Keys({"missing_genes": "missingGenes"}, nested={"genes": Each(Keys({"z_score": "zScore"}))}),
    ),
    "ClusterCells": TaskSpec(
        _on_adata("cluster_cells"),
        {
            "type": "method",
            "resolution": "resolution",
            "nNeighbors": "n_neighbors",
            "randomState": "random_state",
        },
        Keys({"n_clusters": "nClusters"}),
    ),
    "DifferentialExpression": TaskSpec(
        _on_adata("differential_expression"),
        {
            "cellSet": "cell_set",
            "compareWith": "versus",
            "method": "method",
            "correctionMethod": "corr_method",
            "nGenes": "n_genes",
        },
        Keys(
            {"n_cells_group": "nCellsGroup", "n_cells_reference": "nCellsReference"},
            nested={"rows": Each(_RANKED_GENE)},
        ),
    ),
    "MarkerGenes": TaskSpec(
        _marker_genes,
        {"groupBy": "group_by", "nGenes": "n_genes", "method": "method"},
        Keys(
            {"group_by": "groupBy"},
            nested={
                "groups": Each(
                    Keys(
                        {"cell_set_id": "cellSetId", "cell_count": "cellCount"},
                        nested={"genes": Each(_RANKED_GENE)},
                    )
                )
            },
        ),
    ),
}


def run_task(task: Task, experiment: LoadedExperiment) -> Any:
    """The wire result of an interactive task; :class:`ServiceError` for a request that cannot be answered."""
    import analyses

    spec = TASKS.get(task.name)
    if spec is None:  # PrepareExperiment is not interactive; parse_task already refused the rest
        raise ServiceError(ErrorCode.UNKNOWN_TASK, f"{task.name} is not an interactive task")
    try:
        result = spec.run(experiment, **spec.arguments(task.body))
    except analyses.InvalidRequestError as error:  # INVALID_REQUEST or UNKNOWN_CELL_SET
        raise ServiceError(
            error.code, f"{task.name}: invalid {spec.field_name(error.field)}: {error.message}"
        ) from None
    except analyses.AnalysisError as error:
        raise ServiceError(error.code, f"{task.name}: {error.message}") from None
    return to_wire(result, spec.result)


def default_grouping(adata: Any) -> str:
    """The ``.obs`` column MarkerGenes groups by when the body names none: a clustering if any."""
    import pandas as pd

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


# ---- PrepareExperiment ----------------------------------------------------------------------------

#: PrepareExperiment ``config`` keys → :func:`analyses.prepare_experiment` parameters.
PREPARE_CONFIG = {
    "minGenes": "min_genes",
    "minCells": "min_cells",
    "maxPctMito": "max_pct_mito",
    "mitoPrefix": "mito_prefix",
    "targetSum": "target_sum",
    "nTopGenes": "n_top_genes",
    "nPcs": "n_pcs",
    "nNeighbors": "n_neighbors",
    "clusteringMethod": "clustering_method",
    "resolution": "resolution",
    "computeUmap": "compute_umap",
    "randomState": "random_state",
}


def prepare_parameters(body: Mapping[str, Any]) -> dict[str, Any]:
    """``analyses.prepare_experiment`` keyword arguments from a PrepareExperiment body's ``config``."""
    config = body.get("config") or {}
    unknown = sorted(set(config) - set(PREPARE_CONFIG))
    if unknown:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"PrepareExperiment: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(PREPARE_CONFIG)}",
        )
    return {PREPARE_CONFIG[key]: value for key, value in config.items()}


def prepare_summary(
    adata: Any, experiment_id: str, *, uri: str, version: str, seconds: float
) -> dict[str, Any]:
    """The result body of PrepareExperiment: the prepared experiment as the wire describes it."""
    provenance = adata.uns["interlinked"]
    return {
        "experimentId": experiment_id,
        "location": uri,
        "version": version,
        "cells": int(adata.n_obs),
        "genes": int(adata.n_vars),
        "clusters": int(provenance["n_clusters"]),
        "clusteringColumn": str(provenance["parameters"]["clustering_method"]),
        "embeddings": sorted(str(key).removeprefix("X_") for key in adata.obsm),
        "qc": {key: int(value) for key, value in provenance["qc"].items()},
        "seconds": round(seconds, 2),
    }
