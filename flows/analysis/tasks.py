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
        How the result's keys are spelled on the wire (``None``: ``run`` already returns the wire's
        shape, as the tasks of the real Cellenics UI do).
    aliases
        Analyses parameter → how the body spells it, for parameters reached through a nested field
        (``config.minimumDistance``).
    """

    run: Callable[..., Any]
    parameters: Mapping[str, str]
    result: Shape = None
    aliases: Mapping[str, str] = field(default_factory=dict)

    def arguments(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the body fields present."""
        return {parameter: body[name] for name, parameter in self.parameters.items() if name in body}

    def field_name(self, parameter: str) -> str:
        """The body field of an analyses parameter (the parameter itself when no field maps to it)."""
        if parameter in self.aliases:
            return self.aliases[parameter]
        return next((name for name, known in self.parameters.items() if known == parameter), parameter)


def _on_adata(function_name: str) -> Callable[..., Any]:
    """``run`` for an analyses function that takes the AnnData and the arguments as they are."""

    def run(experiment: LoadedExperiment, **arguments: Any) -> Any:
        import analyses

        return getattr(analyses, function_name)(experiment.adata, **arguments)

    return run


def _gene_expression(experiment: LoadedExperiment, *, genes: list[str], **arguments: Any) -> Any:
    """GeneExpression as the real UI reads it: per gene ``rawExpression {mean, stdev, expression}``
    and ``truncatedExpression {min, max, expression}``, expression arrays indexed by cell id
    (``null`` for cells outside ``cellSets``); nothing else at the top level (the UI's z-score code
    walks every top-level key as a gene). Genes match case-insensitively (as the real worker's
    ``toupper``); unknown ones are left out, and an error says so when none is known."""
    import numpy as np

    import analyses

    if not genes:
        raise ServiceError(ErrorCode.INVALID_REQUEST, "GeneExpression: genes must name at least one gene")
    known = experiment.index.gene_columns
    resolved = [gene if gene in known else _case_insensitive(experiment, gene) or gene for gene in genes]
    result = analyses.gene_expression(experiment.adata, genes=resolved, index=experiment.index, **arguments)
    if not result["genes"]:
        missing = ", ".join(map(repr, genes[:20]))
        raise ServiceError(
            ErrorCode.UNKNOWN_GENE,
            f"None of the requested genes is in experiment {experiment.experiment_id!r}: {missing}",
        )
    cells = np.asarray(result["cells"], dtype=np.int64)
    return {
        gene: _expression_item(experiment, np.asarray(values["expression"], dtype=np.float64), cells, values)
        for gene, values in result["genes"].items()
    }


def _case_insensitive(experiment: LoadedExperiment, gene: str) -> str | None:
    lookup = experiment.__dict__.get("_upper_genes")
    if lookup is None:
        lookup = {}
        for name in experiment.index.gene_columns:
            lookup.setdefault(name.upper(), name)
        experiment.__dict__["_upper_genes"] = lookup
    return lookup.get(gene.upper())


def _expression_item(experiment: LoadedExperiment, values: Any, cells: Any, stats: Mapping[str, Any]) -> dict:
    import numpy as np

    import analyses

    truncated, _ = analyses.truncate_at_quantile(values)
    finite = truncated[np.isfinite(truncated)]
    return {
        "rawExpression": {
            "mean": stats["mean"],
            "stdev": stats["stdev"],
            "expression": analyses.indexed_by_cell_id(experiment.adata, values, cells),
        },
        "truncatedExpression": {
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
            "expression": analyses.indexed_by_cell_id(experiment.adata, truncated, cells),
        },
    }


def _embedding(
    experiment: LoadedExperiment,
    *,
    method: str,
    config: Mapping[str, Any] | None = None,
    use_saved: bool | None = None,
    **arguments: Any,
) -> Any:
    """GetEmbedding: ``[x, y]`` per cell id (``null`` for ids without a cell), as the real worker.

    The UI's ``config`` (UMAP ``minimumDistance``, ``distanceMetric``; t-SNE ``perplexity``,
    ``learningRate``) is used: with a config and without ``useSaved: true`` the embedding is
    computed with it (as the real worker does); without one, or with ``useSaved``, the stored
    embedding is served when there is one."""
    import numpy as np

    import analyses

    coordinates = _embedding_coordinates(
        experiment, method=method, config=config, use_saved=use_saved, **arguments
    )
    ids = analyses.cell_ids(experiment.adata)
    out: list[Any] = [None] * (int(ids.max()) + 1 if ids.size else 0)
    for cell_id, point in zip(ids.tolist(), coordinates, strict=True):
        out[cell_id] = None if not np.all(np.isfinite(point)) else point
    return out


def _embedding_coordinates(
    experiment: LoadedExperiment,
    *,
    method: str,
    config: Mapping[str, Any] | None = None,
    use_saved: bool | None = None,
    **arguments: Any,
) -> list[list[float]]:
    """The ``[x, y]`` of every cell (cell order) of the embedding the UI shows for ``method`` and
    its ``config`` (see :func:`_embedding`)."""
    import analyses

    config = dict(config or {})
    options = {
        "min_dist": config.get("minimumDistance"),
        "metric": config.get("distanceMetric"),
        "perplexity": config.get("perplexity"),
        "learning_rate": config.get("learningRate"),
    }
    use_stored = (
        bool(use_saved) if use_saved is not None else not any(v is not None for v in options.values())
    )
    if method == "pca":
        use_stored = True  # the real worker never recomputes PCA either
    return analyses.embedding(experiment.adata, method=method, use_stored=use_stored, **options, **arguments)


def _list_genes(experiment: LoadedExperiment, **arguments: Any) -> Any:
    import analyses

    return analyses.list_genes(experiment.adata, **arguments)


# A colour per new cluster (the d3 "category20" palette, then its repetition).
_CLUSTER_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip


def _cluster_cells(
    experiment: LoadedExperiment,
    *,
    method: str = "louvain",
    config: Mapping[str, Any] | None = None,
    cell_set_key: str | None = None,
    cell_set_name: str | None = None,
    **arguments: Any,
) -> Any:
    """ClusterCells: the new cell set group as the real worker sends it, ``{key, name, rootNode,
    type: "cellSets", children: [{key, name, rootNode, type, color, cellIds}]}``, clusters in natural
    order (``Cluster 0``, ``Cluster 1``, ...); ``config.resolution`` (real UI) or ``resolution``."""
    import numpy as np

    import analyses

    if config and "resolution" in config:
        arguments.setdefault("resolution", config["resolution"])
    result = analyses.cluster_cells(experiment.adata, method=method, **arguments)
    key = cell_set_key or method
    labels = np.asarray(result["labels"], dtype=object)
    ids = analyses.cell_ids(experiment.adata)
    children = []
    for number, label in enumerate(sorted(set(labels.tolist()), key=_natural)):
        children.append(
            {
                "key": f"{key}-{label}",
                "name": f"Cluster {label}",
                "rootNode": False,
                "type": "cellSets",
                "color": _CLUSTER_COLORS[number % len(_CLUSTER_COLORS)],
                "cellIds": ids[labels == label].tolist(),
            }
        )
    return {
        "key": key,
        "name": cell_set_name or f"{method.capitalize()} clusters",
        "rootNode": True,
        "type": "cellSets",
        "children": children,
    }


def _natural(label: str) -> tuple:
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(label)))


def _bare_id(value: str) -> str:
    """A cell set id without the UI's ``group/`` prefix (``louvain/louvain-3`` → ``louvain-3``)."""
    return value.split("/", 1)[1] if isinstance(value, str) and "/" in value else value


def _differential_expression(
    experiment: LoadedExperiment,
    *,
    cell_set: str | list[str],
    versus: str | list[str] = "rest",
    basis: str | None = None,
    max_num: int | None = None,
    **arguments: Any,
) -> Any:
    """DifferentialExpression with the real UI's semantics and row shape.

    ``compareWith``: ``rest`` = the other cells of ``cellSet``'s own group (hierarchy),
    ``background`` = every other cell, else cell set id(s). ``basis``: ``all`` (or none) = every
    cell, else a cell set id or a group (``.obs`` column) restricting both sides. Rows carry the
    fields both UI generations read (``gene_names, zscore, abszscore, log2fc, qval`` and
    ``avg_log2FC, p_val, p_val_adj, pct_1, pct_2``) and the current worker's ``Gene, logFC, auc``,
    ordered by adjusted p-value as the real worker, ``total`` their number; ``maxNum`` keeps the
    strongest by ``abszscore``. This is the SNS-era answer; :func:`present` reshapes it for the
    current envelope."""
    import analyses

    adata = experiment.adata
    cell_set, versus, within = _comparison(adata, cell_set, versus, basis)
    result = analyses.differential_expression(
        adata, cell_set=cell_set, versus=versus, within=within, **arguments
    )
    n1, n2 = result["n_cells_group"], result["n_cells_reference"]
    rows = [_de_row(row, n1, n2) for row in result["rows"]]
    if max_num is not None:
        rows = sorted(rows, key=lambda row: -(row["abszscore"] or 0.0))[:max_num]
    rows.sort(key=lambda row: (row["qval"] is None, row["qval"] if row["qval"] is not None else 0.0))
    return {"rows": rows, "total": len(rows)}


def _comparison(
    adata: Any, cell_set: str | list[str], versus: str | list[str], basis: str | None
) -> tuple[Any, Any, Any]:
    """``(cell_set, versus, within)`` for :func:`analyses.differential_expression` from the real
    UI's ``cellSet``, ``compareWith`` and ``basis`` (see :func:`_differential_expression`)."""
    cell_set = [_bare_id(item) for item in cell_set] if isinstance(cell_set, list) else _bare_id(cell_set)
    if isinstance(versus, str):
        versus = _bare_id(versus)
        lowered = versus.lower()
        if lowered == "background":
            versus = "rest"
        elif lowered == "rest" or lowered.endswith("-rest"):
            versus = _rest_of_group(adata, cell_set)
    else:
        versus = [_bare_id(item) for item in versus]
    within = None
    if isinstance(basis, str) and basis and not basis.lower().startswith("all"):
        basis = _bare_id(basis)
        within = _group_members(adata, basis) or basis
    return cell_set, versus, within


def _de_row(row: Mapping[str, Any], n1: int, n2: int) -> dict[str, Any]:
    score = row["score"]
    # Wilcoxon: the group's rank-sum z-score gives U, and AUC = U / (n1 n2) (the current worker's
    # presto auc column)
    spread = (n1 * n2 * (n1 + n2 + 1) / 12) ** 0.5
    return {
        "gene_names": row["gene"],
        "Gene": row["gene"],
        "logFC": row["log_fold_change"],
        "auc": None if score is None else 0.5 + score * spread / (n1 * n2),
        "zscore": score,
        "abszscore": None if score is None else abs(score),
        "log2fc": row["log_fold_change"],
        "qval": row["adjusted_p_value"],
        "pval": row["p_value"],
        "avg_log2FC": row["log_fold_change"],
        "p_val": row["p_value"],
        "p_val_adj": row["adjusted_p_value"],
        "pct_1": row.get("pct_group"),
        "pct_2": row.get("pct_reference"),
    }


def _group_members(adata: Any, column: str) -> list[str] | None:
    """The cell set ids of a group (categorical ``.obs`` column), or None when it is not one."""
    import analyses

    members = [cell_set["id"] for cell_set in analyses.list_cell_sets(adata) if cell_set["column"] == column]
    return members or None


def _rest_of_group(adata: Any, cell_set: str | list[str]) -> list[str]:
    import analyses

    first = cell_set if isinstance(cell_set, str) else cell_set[0]
    sets = analyses.list_cell_sets(adata)
    column = next((item["column"] for item in sets if item["id"] == first), None)
    if column is None:
        raise analyses.UnknownCellSetError([first], field="cell_set")
    chosen = {cell_set} if isinstance(cell_set, str) else set(cell_set)
    rest = [item["id"] for item in sets if item["column"] == column and item["id"] not in chosen]
    if not rest:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"DifferentialExpression: compareWith 'rest': {first!r} is the only cell set of its group",
        )
    return rest


def _marker_genes(experiment: LoadedExperiment, *, group_by: str | None = None, **arguments: Any) -> Any:
    import analyses

    return analyses.marker_genes(
        experiment.adata, group_by=group_by or default_grouping(experiment.adata), **arguments
    )


def _marker_heatmap(
    experiment: LoadedExperiment,
    *,
    n_genes: float = 5,
    cell_set_key: str | None = None,
    selected_cell_set: str | None = None,
) -> Any:
    """MarkerHeatmap: the top ``nGenes`` markers of every cell set of the group ``cellSetKey``
    (``selectedCellSet`` in the current UI), as the real worker: ``{data: {gene: {rawExpression,
    truncatedExpression}}, order: [gene, ...]}`` with expression arrays indexed by cell id."""
    import numpy as np

    import analyses

    group = _bare_id(cell_set_key or selected_cell_set or default_grouping(experiment.adata))
    if group not in experiment.adata.obs.columns:
        raise ServiceError(
            ErrorCode.UNKNOWN_CELL_SET,
            f"MarkerHeatmap: {group!r} is not a cell set group of experiment {experiment.experiment_id!r}",
        )
    if (
        isinstance(n_genes, bool)
        or not isinstance(n_genes, int | float)
        or n_genes < 1
        or n_genes != int(n_genes)
    ):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"MarkerHeatmap: invalid nGenes: {n_genes!r} is not a whole number >= 1",
        )
    markers = analyses.marker_genes(experiment.adata, group_by=group, n_genes=int(n_genes))
    order: list[str] = []
    for marker_group in markers["groups"]:
        for row in marker_group["genes"]:
            if row["gene"] not in order:
                order.append(row["gene"])
    expression = analyses.gene_expression(experiment.adata, genes=order, index=experiment.index)
    cells = np.asarray(expression["cells"], dtype=np.int64)
    data = {
        gene: _expression_item(experiment, np.asarray(values["expression"], dtype=np.float64), cells, values)
        for gene, values in expression["genes"].items()
    }
    return {"data": data, "order": [gene for gene in order if gene in data]}


def _dot_plot(
    experiment: LoadedExperiment,
    *,
    group_by: str,
    filter_by: Mapping[str, Any] | None = None,
    use_marker_genes: bool = True,
    number_of_markers: int = 3,
    custom_genes_list: list[str] | None = None,
) -> Any:
    """DotPlot as the real worker returns it (Seurat's ``DotPlot`` data, columnar):
    ``{cellSetsIdx, geneNameIdx, avgExpression, cellsPercentage, cellSetsNames, geneNames}``, one
    entry per (cell set of ``groupBy``, gene); ``avgExpression`` is Seurat's ``avg.exp.scaled``
    (per gene, ``log1p`` of the mean of ``expm1`` values, z-scored across cell sets with the sample
    standard deviation, clipped to [-2.5, 2.5]) and ``cellsPercentage`` the percentage of cells
    expressing the gene. ``filterBy {group, key}`` keeps the cells of one cell set (``group: All``:
    every cell); genes are the top ``numberOfMarkers`` markers per cell set or ``customGenesList``."""
    import numpy as np

    import analyses

    adata = experiment.adata
    group_by = _bare_id(group_by)
    if group_by not in adata.obs.columns or not _group_members(adata, group_by):
        raise ServiceError(ErrorCode.UNKNOWN_CELL_SET, f"DotPlot: {group_by!r} is not a cell set group")
    cells = np.arange(adata.n_obs)
    if filter_by and str(filter_by.get("group", "All")).lower() != "all":
        cells = analyses.resolve_cell_sets(adata, [_bare_id(str(filter_by.get("key")))], field="filterBy.key")
    labels = adata.obs[group_by].astype(str).to_numpy()
    groups = [str(c) for c in adata.obs[group_by].cat.categories if np.any(labels[cells] == str(c))]
    if use_marker_genes:
        subset = adata[cells] if len(cells) < adata.n_obs else adata
        markers = analyses.marker_genes(subset, group_by=group_by, n_genes=int(number_of_markers))
        genes: list[str] = []
        for marker_group in markers["groups"]:
            genes += [row["gene"] for row in marker_group["genes"] if row["gene"] not in genes]
    else:
        wanted = {gene.upper() for gene in custom_genes_list or []}
        genes = [name for name in experiment.index.gene_columns if name.upper() in wanted]
        if not genes:
            raise ServiceError(
                ErrorCode.UNKNOWN_GENE, "DotPlot: none of customGenesList is in the experiment"
            )
    table: dict[str, list[Any]] = {
        "cellSetsIdx": [],
        "geneNameIdx": [],
        "avgExpression": [],
        "cellsPercentage": [],
    }
    names = sorted(genes)  # R factor levels: alphabetical
    for gene in genes:
        values = np.asarray(
            experiment.index.column_values(experiment.index.gene_columns[gene]), dtype=np.float64
        )
        means, percentages = [], []
        for group in groups:
            members = cells[labels[cells] == group]
            selected = values[members]
            means.append(float(np.expm1(selected).mean()))
            percentages.append(float((selected > 0).mean() * 100))
        logged = np.log1p(np.asarray(means))
        spread = logged.std(ddof=1) if len(logged) > 1 else 0.0
        scaled = (
            np.clip((logged - logged.mean()) / spread, -2.5, 2.5)
            if spread > 0
            else np.full(len(logged), np.nan)
        )
        for index, _ in enumerate(groups):
            table["cellSetsIdx"].append(index)
            table["geneNameIdx"].append(names.index(gene))
            table["avgExpression"].append(None if not np.isfinite(scaled[index]) else float(scaled[index]))
            table["cellsPercentage"].append(percentages[index])
    order = sorted(range(len(table["cellSetsIdx"])), key=lambda i: table["cellSetsIdx"][i])
    result = {key: [column[i] for i in order] for key, column in table.items()}
    return {**result, "cellSetsNames": groups, "geneNames": names}


def _expression_cell_sets(experiment: LoadedExperiment, *, genes_config: list[Mapping[str, Any]]) -> Any:
    """GetExpressionCellSets: a new cell set of the cells passing every gene filter
    (``{geneName, comparisonType: greaterThan | lessThan, thresholdValue}``), as the real worker:
    ``{key, name: "CST3>1, LYZ<2", rootNode: false, color, cellIds}`` (not cacheable)."""
    import uuid

    import numpy as np

    import analyses

    if not isinstance(genes_config, list) or not genes_config:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, "GetExpressionCellSets: genesConfig must list gene filters"
        )
    keep = np.ones(experiment.adata.n_obs, dtype=bool)
    parts = []
    for item in genes_config:
        gene, comparison, threshold = (
            item.get("geneName"),
            item.get("comparisonType"),
            item.get("thresholdValue"),
        )
        if (
            comparison not in ("greaterThan", "lessThan")
            or isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
        ):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"GetExpressionCellSets: invalid genesConfig item {item!r}: comparisonType must be "
                "greaterThan or lessThan and thresholdValue a number",
            )
        name = gene if gene in experiment.index.gene_columns else None
        if name is None:
            raise ServiceError(
                ErrorCode.UNKNOWN_GENE, f"GetExpressionCellSets: gene {gene!r} is not in the experiment"
            )
        values = np.asarray(experiment.index.column_values(experiment.index.gene_columns[name]))
        keep &= values > threshold if comparison == "greaterThan" else values < threshold
        parts.append(f"{gene}{'>' if comparison == 'greaterThan' else '<'}{threshold:g}")
    ids = analyses.cell_ids(experiment.adata)[keep]
    if not len(ids):
        raise ServiceError(
            ErrorCode.EMPTY_CELL_SET, "GetExpressionCellSets: no cells match the requested filters"
        )
    return {
        "key": str(uuid.uuid4()),
        "name": ", ".join(parts),
        "rootNode": False,
        "color": _CLUSTER_COLORS[len(parts) % len(_CLUSTER_COLORS)],
        "cellIds": ids.tolist(),
    }


def _normalized_expression(
    experiment: LoadedExperiment, *, subset_by: Mapping[str, list[str]] | None = None
) -> str:
    """GetNormalizedExpression: the normalised expression matrix as CSV text, genes x cells (first
    column ``" "`` with the gene names, then one column per cell barcode), as the real worker's
    ``fwrite`` of the Seurat ``data`` layer (without R's row-number column). ``subsetBy``
    ``{group: [cell set ids]}``: the union within each group, intersected across groups."""
    import csv
    import io

    import numpy as np

    import analyses

    adata = experiment.adata
    cells = np.arange(adata.n_obs)
    groups = {group: ids for group, ids in (subset_by or {}).items() if ids}
    for group, ids in groups.items():
        if not isinstance(ids, list):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST, f"GetNormalizedExpression: subsetBy.{group} must be a list"
            )
        members = analyses.resolve_cell_sets(
            adata, [_bare_id(item) for item in ids], field=f"subsetBy.{group}"
        )
        cells = np.intersect1d(cells, members)
    if groups and not len(cells):
        raise ServiceError(
            ErrorCode.EMPTY_CELL_SET, "GetNormalizedExpression: no cells match the requested filters"
        )
    index = experiment.index
    barcodes = adata.obs_names[cells].astype(str).tolist()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([" ", *barcodes])
    for gene, column in index.gene_columns.items():
        values = np.asarray(index.column_values(column), dtype=np.float64)[cells]
        writer.writerow([gene, *(f"{value:.6g}" for value in values)])
    return out.getvalue()


def _cell_values(kind: str) -> Callable[..., Any]:
    """``run`` of a per-cell task: the value of every cell, indexed by cell id (real worker)."""

    def run(experiment: LoadedExperiment) -> Any:
        import analyses

        return analyses.cell_values(experiment.adata, kind)

    return run


def _background_expressed_genes(
    experiment: LoadedExperiment, *, cell_set: str, versus: str, basis: str | None = None
) -> Any:
    """GetBackgroundExpressedGenes (the pathway analysis' background): ``{genes: [...]}``, the genes
    whose total count over the cells compared by the same ``cellSet`` / ``compareWith`` / ``basis``
    as DifferentialExpression exceeds 15, as the real worker (r/R/get_background_genes.R)."""
    import numpy as np

    import analyses

    adata = experiment.adata
    cell_set_, versus_, within = _comparison(adata, cell_set, versus, basis)
    group, reference = analyses.compared_cells(adata, cell_set=cell_set_, versus=versus_, within=within)
    for cells, which in ((group, "1st"), (reference, "2nd")):
        if not len(cells):
            raise ServiceError(
                ErrorCode.EMPTY_CELL_SET, f"GetBackgroundExpressedGenes: no cell is in the {which} cell set"
            )
    return {"genes": analyses.background_expressed_genes(adata, cells=np.union1d(group, reference))}


#: BatchDifferentialExpression's entry for a comparison that could not be made (real worker's text).
NO_COMPARISON_DATA = "No data available for this comparison"

# The columns of a BatchDifferentialExpression table (the real R worker's runWilcoxAUC columns, plus
# the fields our DifferentialExpression rows carry), in this order.
_BATCH_COLUMNS = (
    "gene_names", "Gene", "p_val", "logFC", "pct_1", "pct_2", "p_val_adj", "auc",
    "avg_log2FC", "zscore", "abszscore",
)  # fmt: skip


def _batch_differential_expression(
    experiment: LoadedExperiment,
    *,
    cell_set: list[str],
    basis: list[str],
    versus: str = "background",
) -> Any:
    """BatchDifferentialExpression: one DifferentialExpression per cell set, as the real worker
    (python/src/worker/tasks/batch_differential_expression.py). With one ``basis`` every
    ``cellSet`` is compared (within that basis) with ``compareWith``; with several, ``cellSet[0]`` is
    compared within each basis. The result lists, in request order, ``{total, data}`` with ``data``
    the table by column (``{gene_names: [...], p_val: [...], ...}``, what the UI's ``getArray``
    turns into rows); a comparison that cannot be made is ``{total: 0, data: "No data available
    for this comparison"}`` and the others are still answered."""
    import analyses

    if not isinstance(basis, list) or not basis or not isinstance(cell_set, list) or not cell_set:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            "BatchDifferentialExpression: cellSet and basis must each list at least one cell set",
        )
    pairs = (
        [(basis[0], item) for item in cell_set]
        if len(basis) == 1
        else [(item, cell_set[0]) for item in basis]
    )
    adata = experiment.adata
    out = []
    for basis_id, first in pairs:
        try:
            first_, versus_, within = _comparison(adata, first, versus, basis_id)
            result = analyses.differential_expression(adata, cell_set=first_, versus=versus_, within=within)
        except (ServiceError, analyses.AnalysisError):
            out.append({"total": 0, "data": NO_COMPARISON_DATA})
            continue
        n1, n2 = result["n_cells_group"], result["n_cells_reference"]
        spread = (n1 * n2 * (n1 + n2 + 1) / 12) ** 0.5
        table: dict[str, list[Any]] = {column: [] for column in _BATCH_COLUMNS}
        rows = sorted(
            result["rows"],
            key=lambda row: (row["adjusted_p_value"] is None, row["adjusted_p_value"] or 0.0),
        )
        for row in rows:
            score = row["score"]
            values = {
                "gene_names": row["gene"],
                "Gene": row["gene"],
                "p_val": row["p_value"],
                "logFC": row["log_fold_change"],
                # Percent, as presto's runWilcoxAUC gives them and the current UI shows them.
                "pct_1": None if row.get("pct_group") is None else 100 * row["pct_group"],
                "pct_2": None if row.get("pct_reference") is None else 100 * row["pct_reference"],
                "p_val_adj": row["adjusted_p_value"],
                # Wilcoxon: the group's rank-sum z-score gives U, and AUC = U / (n1 n2)
                "auc": None if score is None else 0.5 + score * spread / (n1 * n2),
                "avg_log2FC": row["log_fold_change"],
                "zscore": score,
                "abszscore": None if score is None else abs(score),
            }
            for column in _BATCH_COLUMNS:
                table[column].append(values[column])
        out.append({"total": len(rows), "data": table})
    return out


def _phase_cell_sets(experiment: LoadedExperiment) -> Any:
    """CellCycleScoring: the cell class ``Phase`` as the real worker (r/R/cell_cycle_scoring.R):
    ``{key: "Phase", name: "Phase", rootNode: true, type: "cellSets", children: [{key:
    "Phase-G1", name: "G1", rootNode: false, type: "cellSets", color, cellIds}]}``, phases in order
    of first appearance; "Undetermined cycle phase" for every cell when scoring is impossible."""
    import numpy as np

    import analyses

    phases = np.asarray(analyses.cell_cycle_phases(experiment.adata)["phase"], dtype=object)
    ids = analyses.cell_ids(experiment.adata)
    children = []
    for number, phase in enumerate(dict.fromkeys(phases.tolist())):
        children.append(
            {
                "key": "Phase-" + phase.replace(" ", "_"),
                "name": phase,
                "rootNode": False,
                "type": "cellSets",
                "color": _CLUSTER_COLORS[number % len(_CLUSTER_COLORS)],
                "cellIds": ids[phases == phase].tolist(),
            }
        )
    return {"key": "Phase", "name": "Phase", "rootNode": True, "type": "cellSets", "children": children}


def _sctype_annotate(experiment: LoadedExperiment, *, species: str, tissue: str) -> Any:
    """ScTypeAnnotate: the clusters of the experiment's clustering (``louvain`` / ``leiden``, as the
    real worker's ``seurat_clusters``) annotated with cell types by ScType's scoring
    (:mod:`analyses.annotation`), as the new cell class the real worker makes
    (r/R/utilities.R format_sctype_cell_sets): ``{key: <uuid>, name: "ScType-<tissue>-<species>",
    rootNode: true, type: "cellSets", children: [{key: <uuid>, name: <cell type>, rootNode: false,
    type: "cellSets", color, cellIds}]}``, types in order of first appearance (not cacheable)."""
    import uuid

    import numpy as np

    import analyses

    if species not in ("human", "mouse"):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"ScTypeAnnotate: species must be 'human' or 'mouse', got {species!r}"
        )
    adata = experiment.adata
    annotation = analyses.annotate_clusters(adata, group_by=default_grouping(adata), tissue=tissue)
    types = np.asarray(annotation["cell_type"], dtype=object)
    ids = analyses.cell_ids(adata)
    children = [
        {
            "key": str(uuid.uuid4()),
            "name": name,
            "rootNode": False,
            "type": "cellSets",
            "color": _CLUSTER_COLORS[number % len(_CLUSTER_COLORS)],
            "cellIds": ids[types == name].tolist(),
        }
        for number, name in enumerate(dict.fromkeys(types.tolist()))
    ]
    return {
        "key": str(uuid.uuid4()),
        "name": f"ScType-{tissue}-{species}",
        "rootNode": True,
        "type": "cellSets",
        "children": children,
    }


def _selected_cells(adata: Any, cell_sets: list[str], task: str) -> Any:
    """Indices of the cells of ``cellSets``: cell set ids, or cell classes (``louvain``: every cell
    of its cell sets), as the real worker's ``subset_cell_sets_dict``."""
    import numpy as np

    import analyses

    if not cell_sets:
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"{task}: cellSets must name at least one cell set")
    selected = np.zeros(adata.n_obs, dtype=bool)
    ids = []
    for item in map(_bare_id, cell_sets):
        members = _group_members(adata, item) if item in adata.obs.columns else None
        if members:
            selected |= adata.obs[item].notna().to_numpy()
        else:
            ids.append(item)
    if ids:
        selected[analyses.resolve_cell_sets(adata, ids, field="cellSets")] = True
    return np.flatnonzero(selected)


def _trajectory_inputs(
    experiment: LoadedExperiment,
    task: str,
    embedding: Mapping[str, Any] | None,
    clustering: Mapping[str, Any] | None,
    cell_sets: list[str],
) -> tuple[Any, Any, dict[str, Any]]:
    """The selected cells, their coordinates in the UI's embedding and the clustering options."""
    import numpy as np

    embedding, clustering = dict(embedding or {}), dict(clustering or {})
    method = embedding.get("method", "umap")
    cells = _selected_cells(experiment.adata, cell_sets, task)
    coordinates = np.asarray(
        _embedding_coordinates(experiment, method=method, config=embedding.get("methodSettings")),
        dtype=np.float64,
    )[cells]
    options = {
        "method": clustering.get("method", "louvain"),
        "resolution": clustering.get("resolution", 0.8),
    }
    return cells, coordinates, options


def _trajectory_starting_nodes(
    experiment: LoadedExperiment,
    *,
    embedding: Mapping[str, Any] | None = None,
    clustering: Mapping[str, Any] | None = None,
    cell_sets: list[str],
) -> Any:
    """GetTrajectoryAnalysisStartingNodes as the real worker (r/R/trajectory_analysis.R):
    ``{connectedNodes: [[j, ...] per node], x: [...], y: [...]}``, node ``i`` listing the nodes
    ``j > i`` it is joined to (0-based); see :mod:`analyses.trajectory` for the graph. The cells are
    placed by the embedding GetEmbedding serves for ``embedding.method`` and
    ``embedding.methodSettings`` (what the UI draws), so ``embedding.ETag`` (the real API's key of
    the stored embedding) is not needed."""
    import analyses

    _, coordinates, options = _trajectory_inputs(
        experiment, "GetTrajectoryAnalysisStartingNodes", embedding, clustering, cell_sets
    )
    graph = analyses.trajectory_graph(coordinates, **options)
    connected: list[list[int]] = [[] for _ in graph["x"]]
    for i, j in graph["edges"]:
        connected[i].append(j)
    return {"connectedNodes": connected, "x": graph["x"], "y": graph["y"]}


def _trajectory_pseudotime(
    experiment: LoadedExperiment,
    *,
    embedding: Mapping[str, Any] | None = None,
    clustering: Mapping[str, Any] | None = None,
    cell_sets: list[str],
    root_nodes: list[int],
) -> Any:
    """GetTrajectoryAnalysisPseudoTime as the real worker: ``{pseudotime: [...]}`` indexed by cell
    id, ``null`` for cells outside ``cellSets``, filtered ones and those no root reaches;
    ``rootNodes`` are node numbers of GetTrajectoryAnalysisStartingNodes for the same body."""
    import numpy as np

    import analyses

    cells, coordinates, options = _trajectory_inputs(
        experiment, "GetTrajectoryAnalysisPseudoTime", embedding, clustering, cell_sets
    )
    values = analyses.trajectory_pseudotime(coordinates, root_nodes=root_nodes, **options)
    numbers = np.asarray([np.nan if value is None else value for value in values], dtype=np.float64)
    return {"pseudotime": analyses.indexed_by_cell_id(experiment.adata, numbers, cells)}


TASKS: dict[str, TaskSpec] = {
    "GetEmbedding": TaskSpec(
        _embedding,
        {
            "type": "method",
            "config": "config",
            "useSaved": "use_saved",
            "computeIfMissing": "compute_if_missing",
            "nNeighbors": "n_neighbors",
            "randomState": "random_state",
        },
        aliases={
            "min_dist": "config.minimumDistance",
            "metric": "config.distanceMetric",
            "perplexity": "config.perplexity",
            "learning_rate": "config.learningRate",
        },
    ),
    "ListGenes": TaskSpec(
        _list_genes,
        {
            "selectFields": "select_fields",
            "orderBy": "order_by",
            "orderDirection": "order_direction",
            "offset": "offset",
            "limit": "limit",
            "geneNamesFilter": "gene_names_filter",
        },
    ),
    "GeneExpression": TaskSpec(_gene_expression, {"genes": "genes", "cellSets": "cell_sets"}),
    "ClusterCells": TaskSpec(
        _cluster_cells,
        {
            "type": "method",
            "config": "config",
            "cellSetKey": "cell_set_key",
            "cellSetName": "cell_set_name",
            "resolution": "resolution",
            "nNeighbors": "n_neighbors",
            "randomState": "random_state",
        },
        aliases={"resolution": "config.resolution"},
    ),
    "DifferentialExpression": TaskSpec(
        _differential_expression,
        {
            "cellSet": "cell_set",
            "compareWith": "versus",
            "basis": "basis",
            "maxNum": "max_num",
            "method": "method",
            "correctionMethod": "corr_method",
            "nGenes": "n_genes",
        },
        aliases={"within": "basis"},
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
    "MarkerHeatmap": TaskSpec(
        _marker_heatmap,
        {"nGenes": "n_genes", "cellSetKey": "cell_set_key", "selectedCellSet": "selected_cell_set"},
    ),
    "DotPlot": TaskSpec(
        _dot_plot,
        {
            "groupBy": "group_by",
            "filterBy": "filter_by",
            "useMarkerGenes": "use_marker_genes",
            "numberOfMarkers": "number_of_markers",
            "customGenesList": "custom_genes_list",
        },
    ),
    "GetExpressionCellSets": TaskSpec(_expression_cell_sets, {"genesConfig": "genes_config"}),
    "GetNormalizedExpression": TaskSpec(_normalized_expression, {"subsetBy": "subset_by"}),
    "GetMitochondrialContent": TaskSpec(_cell_values("mitochondrial_content"), {}),
    "GetDoubletScore": TaskSpec(_cell_values("doublet_score"), {}),
    "GetNGenes": TaskSpec(_cell_values("n_genes"), {}),
    "GetNUmis": TaskSpec(_cell_values("n_umis"), {}),
    "GetBackgroundExpressedGenes": TaskSpec(
        _background_expressed_genes, {"cellSet": "cell_set", "compareWith": "versus", "basis": "basis"}
    ),
    "BatchDifferentialExpression": TaskSpec(
        _batch_differential_expression,
        {"cellSet": "cell_set", "compareWith": "versus", "basis": "basis"},
    ),
    "CellCycleScoring": TaskSpec(_phase_cell_sets, {}),
    "ScTypeAnnotate": TaskSpec(_sctype_annotate, {"species": "species", "tissue": "tissue"}),
    "GetTrajectoryAnalysisStartingNodes": TaskSpec(
        _trajectory_starting_nodes,
        {"embedding": "embedding", "clustering": "clustering", "cellSets": "cell_sets"},
    ),
    "GetTrajectoryAnalysisPseudoTime": TaskSpec(
        _trajectory_pseudotime,
        {
            "embedding": "embedding",
            "clustering": "clustering",
            "cellSets": "cell_sets",
            "rootNodes": "root_nodes",
        },
    ),
}

#: Body fields the real UI sends that a task accepts and deliberately does not use, and why.
IGNORED_FIELDS: dict[str, dict[str, str]] = {
    "GeneExpression": {
        "scale": "the real worker ignores it too: expression is the normalised data, z-scores are the UI's",
        "downsampleSettings": "every cell is returned; the UI picks the cells it draws",
    },
    "GetExpressionCellSets": {
        "config": "the real worker posts the new cell set to its API with it; here it is the result",
    },
    "DifferentialExpression": {
        "experimentId": "the envelope's experimentId names the experiment",
        "comparisonType": "the cells compared follow from cellSet, compareWith and basis alone",
        "genesOnly": "not by the computation: present() cuts the current envelope's page to "
        "gene_names and gene_id, as the current worker",
    },
    "GetBackgroundExpressedGenes": {
        "experimentId": "the envelope's experimentId names the experiment",
        "comparisonType": "the cells compared follow from cellSet, compareWith and basis alone",
    },
    "BatchDifferentialExpression": {
        "experimentId": "the envelope's experimentId names the experiment",
        "comparisonType": "accepted; 'between' is tested per cell as 'within' (no pseudobulk by sample)",
    },
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
    return result if isinstance(result, str) else to_wire(result, spec.result)


def paginate(body: str, pagination: Mapping[str, Any]) -> str:
    """Apply a ``pagination`` to a result body with ``rows`` (as the real API did for the SNS-era
    worker): text ``filters`` on a column (a gene name filter, either dialect of
    :func:`analyses.gene_name_matcher`), numeric ones (``greaterThan`` / ``lessThan`` a value, as
    the current worker's r/R/utilities_filter_and_pagination.R), then order by ``orderBy`` (``ASC``/``DESC``, missing
    values last), then ``offset``/``limit``; ``total`` counts the rows after filtering."""
    import json

    import analyses

    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, "pagination applies to tabular results (with rows) only"
        )
    rows = document["rows"]
    for item in pagination.get("filters") or []:
        column = item["columnName"]
        if item.get("type") == "numeric":  # the real worker's applyNumericFilter
            above, value = item["comparison"] == "greaterThan", item["value"]
            rows = [
                row
                for row in rows
                if isinstance(row.get(column), int | float)
                and (row[column] > value if above else row[column] < value)
            ]
            continue
        try:
            matches = analyses.gene_name_matcher(item["expression"])
        except analyses.InvalidRequestError as error:
            raise ServiceError(ErrorCode.INVALID_REQUEST, f"pagination.filters: {error.message}") from None
        rows = [row for row in rows if isinstance(row.get(column), str) and matches(row[column])]
    order_by = pagination["orderBy"]
    descending = str(pagination["orderDirection"]).upper() == "DESC"
    present = [row for row in rows if row.get(order_by) is not None]
    missing = [row for row in rows if row.get(order_by) is None]
    try:
        present.sort(key=lambda row: row[order_by], reverse=descending)
    except TypeError:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"pagination.orderBy {order_by!r}: its values are not comparable"
        ) from None
    offset, limit = pagination["offset"], pagination["limit"]
    page = (present + missing)[offset : offset + limit]
    return json.dumps({**document, "rows": page, "total": len(rows)}, separators=(",", ":"))


#: The current worker's DifferentialExpression columns (r/R/differential_expression.R: presto's
#: ``p_val, logFC, pct_1, pct_2, p_val_adj, auc`` with ``gene_names`` and the gene id ``Gene``).
CURRENT_DE_COLUMNS = ("gene_names", "Gene", "p_val", "logFC", "pct_1", "pct_2", "p_val_adj", "auc")


def present(task: Task, body: str) -> str:
    """The result body as the asking client reads it, cut from the whole (cached) result.

    SNS-era envelope: the page of ``pagination`` (:func:`paginate`), ``{rows, total}`` for
    DifferentialExpression (ui@cb2189e0d loadDifferentialExpression.js: ``const { rows } = data``).
    Current envelope, DifferentialExpression: as the current worker answers it
    (python/src/worker/tasks/differential_expression.py: ``{total, data}``, ``data`` the table by
    column, which the current UI's loadDifferentialExpression.js turns into rows with ``getArray``):
    the columns :data:`CURRENT_DE_COLUMNS` (``pct_1``/``pct_2`` in percent, as presto's and the UI's
    filters), paged by ``requestProps.pagination`` (:attr:`Task.pagination`); with ``genesOnly``
    and a page only ``{gene_names, gene_id}`` of its first ``limit`` genes, ``total`` their number
    (r/R/differential_expression.R paginateDE).
    """
    pagination = task.pagination
    if not (task.current_envelope and task.name == "DifferentialExpression"):
        return paginate(body, pagination) if pagination else body
    import json

    document = json.loads(body)
    rows = [
        {
            column: (None if row.get(column) is None else row[column] * 100)
            if column in ("pct_1", "pct_2")
            else row.get(column)
            for column in CURRENT_DE_COLUMNS
        }
        for row in document["rows"]
    ]
    total = len(rows)
    if pagination:
        page = json.loads(paginate(json.dumps({"rows": rows, "total": total}), pagination))
        rows, total = page["rows"], page["total"]
        if task.body.get("genesOnly") is True:
            data = {
                "gene_names": [row["gene_names"] for row in rows],
                "gene_id": [row["Gene"] for row in rows],
            }
            return json.dumps({"total": len(rows), "data": data}, separators=(",", ":"))
    data = {column: [row[column] for row in rows] for column in CURRENT_DE_COLUMNS}
    return json.dumps({"total": total, "data": data}, separators=(",", ":"))


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
