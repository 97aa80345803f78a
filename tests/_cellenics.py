"""Compatibility checks with the real Cellenics clients (see tests/fixtures/cellenics/README.md).

- :func:`fixtures` loads the request fixtures shaped as the real UI/API send them and fills their
  placeholders (:func:`materialise`);
- :func:`check_work_response` validates a response with our JSON Schema of the real API's
  ``WorkResponse.v1.yaml`` (as the real API's ``validateRequest`` did: every worker message);
- :func:`read_result` reads the result as the real UI does (``JSON.parse(results[0].body)``,
  after the real API fetched an ``s3-path`` item: ``work-response.js`` processS3PathType);
- :data:`UI_CHECKS` per task: the fields the real UI reads, and how (each names its source).
"""

from __future__ import annotations

import gzip
import json
import math
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "cellenics"
SCHEMA = json.loads((FIXTURES / "WorkResponse.v1.schema.json").read_text())


def fixtures(generation: str | None = None) -> dict[str, dict[str, Any]]:
    """The request fixtures by name (``v1_GeneExpression``), optionally of one generation."""
    found = {}
    for path in sorted((FIXTURES / "requests").glob("*.json")):
        if generation is None or path.name.startswith(f"{generation}_"):
            found[path.stem] = json.loads(path.read_text())
    return found


def materialise(fixture: dict[str, Any], experiment_id: str, *, seconds: int = 600) -> dict[str, Any]:
    """The fixture's request with its placeholders filled: a fresh ``uuid`` / ``ETag`` (hex, as
    the real API's MD5), the experiment, and a timeout as the UI computes it (now + seconds,
    ``toISOString()``: milliseconds and ``Z``)."""
    timeout = (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    values = {
        "{uuid}": str(uuid.uuid4()),
        "{ETag}": secrets.token_hex(16),
        "{experimentId}": experiment_id,
        "{timeout}": timeout,
    }

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return values.get(value, value)
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    return fill(fixture["request"])


def check_work_response(response: dict[str, Any], *, generation: str = "v1") -> None:
    """Raise ``jsonschema.ValidationError`` unless the real API's schema accepts ``response``.

    For the current envelope (``ETag``) the request part follows ``WorkRequest.v2.yaml`` (no
    ``uuid``/``socketId``), so only the response and results parts of the schema apply.
    """
    import jsonschema

    schema = SCHEMA
    if generation == "v2":
        schema = {
            **SCHEMA,
            "properties": {**SCHEMA["properties"], "request": {"type": "object", "required": ["ETag"]}},
        }
    jsonschema.validate(response, schema, format_checker=jsonschema.FormatChecker())
    # The real API keeps only items of these types (work-response.js); nothing may be dropped.
    assert all(item["type"] in ("inline", "s3-path") for item in response["results"])


def read_result(response: dict[str, Any], s3: Any) -> Any:
    """The result as the real UI gets it: the API resolves an ``s3-path`` item (``bucket/key``,
    split at the first ``/``), the UI parses ``results[0].body``."""
    item = response["results"][0]
    if item["type"] == "s3-path":
        bucket, _, key = item["body"].partition("/")
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if item.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        if item.get("content-encoding") == "identity":
            return data  # a file (the processed .h5ad), handed over as it is
        body = data.decode("utf-8")
    else:
        body = item["body"]
    return parse_body(body, item["content-type"])


def parse_body(body: str, content_type: str) -> Any:
    """A result body by its media type: JSON, or the text itself (``text/csv``)."""
    return json.loads(body) if content_type == "application/json" else body


# ---- what the real UI reads, per task --------------------------------------------------------------


def read_current_result(response: dict[str, Any]) -> Any:
    """The result as the current UI gets it: download ``response.signedUrl`` (a plain HTTP GET),
    gunzip, parse (ui src/utils/work/fetchWork.js, downloadFromS3.js, unpackResult.js)."""
    import urllib.request

    signed_url = response["response"].get("signedUrl")
    content_type = response["results"][0]["content-type"]
    if signed_url is None:  # not stored (not cacheable): the result is inline
        return parse_body(response["results"][0]["body"], content_type)
    with urllib.request.urlopen(signed_url, timeout=30) as reply:
        data = reply.read()
    if response["results"][0].get("content-encoding") == "identity":
        return data  # unpackResult.js: DownloadAnnotSeuratObject's blob is taken as it is
    return parse_body(gzip.decompress(data).decode("utf-8"), content_type)


def _number_or_null(value: Any) -> bool:
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    )


def check_embedding(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui src/redux/actions/embedding/loadEmbedding.js stores the array; the embedding plots read
    ``data[cellId]`` as ``[x, y]`` (null for filtered cells): api WorkResponseGetEmbedding.v1.yaml."""
    assert isinstance(result, list) and len(result) == truth["n_cell_ids"]
    assert all(point is None or (len(point) == 2 and all(map(_number_or_null, point))) for point in result)
    assert sum(point is not None for point in result) == truth["n_cells"]


def check_list_genes(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui loadPaginatedGeneProperties.js: ``const { rows, total } = data``; each row's
    ``gene_names`` keys the other selected fields. The filter is the real worker's (R ``grepl``,
    ``ignore.case``; the UI's ``^x`` / ``x$`` / ``x``), the seed's ``%`` form is SQL LIKE."""
    body = request["body"]
    assert set(result) == {"rows", "total"} and isinstance(result["total"], int)
    assert len(result["rows"]) <= body["limit"]
    assert all(set(row) == set(body["selectFields"]) for row in result["rows"])
    pattern = body.get("geneNamesFilter")
    names = truth["gene_names"]
    if pattern is None:
        expected = names
    elif "%" in pattern:
        regex = re.compile(re.escape(pattern).replace("%", ".*"), re.IGNORECASE)
        expected = [name for name in names if regex.fullmatch(name)]
    else:
        expected = [name for name in names if re.search(pattern, name, re.IGNORECASE)]
    assert result["total"] == len(expected) > 0
    assert {row["gene_names"] for row in result["rows"]} <= set(expected)
    values = [row[body["orderBy"]] for row in result["rows"]]
    descending = body["orderDirection"].upper() == "DESC"
    assert values == sorted(values, reverse=descending)


def check_gene_expression(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui postRequestProcessing.js calculateZScore walks *every top-level key* as a gene and reads
    ``rawExpression.{mean, stdev, expression}``; the plots read ``truncatedExpression.{min, max,
    expression}``; loadGeneExpression.js checks ``data[firstGene]?.error``."""
    requested = {gene.upper() for gene in request["body"]["genes"]}
    assert result and all(gene.upper() in requested for gene in result)
    for item in result.values():
        assert set(item) == {"rawExpression", "truncatedExpression"}
        raw, truncated = item["rawExpression"], item["truncatedExpression"]
        assert set(raw) == {"mean", "stdev", "expression"} and set(truncated) == {"min", "max", "expression"}
        assert len(raw["expression"]) == len(truncated["expression"]) == truth["n_cell_ids"]
        assert all(map(_number_or_null, raw["expression"] + truncated["expression"]))
        assert max(v for v in truncated["expression"] if v is not None) == truncated["max"]
        # calculateZScore: (x - mean) / stdev for every value
        assert raw["stdev"] > 0 and [
            (x - raw["mean"]) / raw["stdev"] for x in raw["expression"] if x is not None
        ]


def check_differential_expression(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """The DifferentialExpression result each generation's UI reads: the current envelope
    (``ETag``) by :func:`check_current_differential_expression`; the SNS-era one as ui@cb2189e0d
    (2021) loadDifferentialExpression.js: ``let { total } = data; const { rows } = data``; its
    table and volcano plot read ``gene_names, zscore, abszscore, log2fc, qval`` (and later
    ``avg_log2FC, p_val_adj, pct_1, pct_2``). Pagination (envelope) as the real API's
    handlePagination.js: filters, orderBy, offset/limit, total."""
    if "uuid" not in request:
        check_current_differential_expression(result, request, truth)
        return
    assert set(result) >= {"rows", "total"} and isinstance(result["total"], int)
    fields = {
        "gene_names",
        "zscore",
        "abszscore",
        "log2fc",
        "qval",
        "avg_log2FC",
        "p_val_adj",
        "pct_1",
        "pct_2",
    }
    assert result["rows"] and all(fields <= set(row) for row in result["rows"])
    pagination = request.get("pagination")
    if pagination:
        _check_page(result["rows"], result["total"], pagination)
    else:
        assert result["total"] == len(result["rows"])
    if request["body"].get("maxNum"):
        assert len(result["rows"]) <= request["body"]["maxNum"]


def get_array(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The current UI's ``getArray`` (ui src/utils/arrayUtils.js): a table by column into rows,
    row ``i`` taking every column's ``i``-th value."""
    rows: list[dict[str, Any]] = []
    for name, values in columns.items():
        for i, value in enumerate(values):
            if i == len(rows):
                rows.append({})
            rows[i][name] = value
    return rows


def check_current_differential_expression(
    result: Any, request: dict[str, Any], truth: dict[str, Any]
) -> None:
    """The current UI, ui@c4a2eb517 src/redux/actions/differentialExpression/loadDifferentialExpression.js:
    ``let { total, data: diffExprData } = data; const rows = getArray(diffExprData)`` (the current
    worker's python/src/worker/tasks/differential_expression.py ``{total, data}``, ``data`` by
    column). DiffExprResults.jsx shows ``gene_names, logFC, p_val_adj, pct_1, pct_2`` (percent),
    ``auc``; getDiffExprGenes.js (``genesOnly``) gets ``{gene_names, gene_id}`` (r/R/
    differential_expression.R paginateDE). The page follows ``requestProps.pagination``, where
    fetchWork.js puts it and the current worker reads it."""
    assert set(result) == {"total", "data"} and isinstance(result["total"], int)
    columns = result["data"]
    assert isinstance(columns, dict) and all(isinstance(values, list) for values in columns.values())
    assert len({len(values) for values in columns.values()}) == 1  # getArray needs equal columns
    rows = get_array(columns)
    assert rows and {row["gene_names"] for row in rows} <= set(truth["gene_names"])
    pagination = (request.get("requestProps") or {}).get("pagination") or request.get("pagination")
    if request["body"].get("genesOnly") and pagination:
        assert set(columns) == {"gene_names", "gene_id"}
        assert result["total"] == len(rows) <= pagination["limit"]
        return
    assert {"gene_names", "logFC", "p_val_adj", "pct_1", "pct_2", "auc"} <= set(columns)
    assert all(v is None or 0 <= v <= 100 for v in columns["pct_1"] + columns["pct_2"])
    assert all(v is None or 0 <= v <= 1 for v in columns["p_val_adj"] + columns["auc"])
    if pagination:
        _check_page(rows, result["total"], pagination)
    else:
        assert result["total"] == len(rows)


def _check_page(rows: list[dict[str, Any]], total: int, pagination: dict[str, Any]) -> None:
    """A page as the pagination asks: at most ``limit`` rows, ordered by ``orderBy``, every row
    passing the text (case-insensitive regex) and numeric (greaterThan / lessThan) filters."""
    assert len(rows) <= pagination["limit"] and total >= len(rows)
    values = [row[pagination["orderBy"]] for row in rows]
    assert values == sorted(values, reverse=pagination["orderDirection"] == "DESC")
    for item in pagination.get("filters") or []:
        column = item["columnName"]
        if item["type"] == "numeric":
            above = item["comparison"] == "greaterThan"
            assert all(
                (row[column] > item["value"]) if above else (row[column] < item["value"]) for row in rows
            )
        else:
            assert all(re.search(item["expression"], row[column], re.I) for row in rows)


def check_cluster_cells(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """The real worker's cluster_cells.py result (the UI merges it into the cell sets tree):
    ``{key, name, rootNode: true, type: "cellSets", children: [{key, name, rootNode, type, color,
    cellIds}]}``; every cell in exactly one child."""
    body = request["body"]
    assert result["key"] == body["cellSetKey"] and result["name"] == body["cellSetName"]
    assert result["rootNode"] is True and result["type"] == "cellSets"
    ids = []
    for child in result["children"]:
        assert child["key"].startswith(f"{body['cellSetKey']}-") and child["rootNode"] is False
        assert re.fullmatch(r"#[0-9a-fA-F]{6}", child["color"]) and child["type"] == "cellSets"
        ids += child["cellIds"]
    assert sorted(ids) == list(range(truth["n_cells"]))


def check_cell_values(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui loadCellMeta.js stores the array; plots index it by cell id (api
    WorkResponse{MitochondrialContent,DoubletScores}.v1.yaml: sorted by cell id)."""
    assert isinstance(result, list) and len(result) == truth["n_cell_ids"]
    assert all(map(_number_or_null, result)) and sum(v is not None for v in result) == truth["n_cells"]


def check_marker_heatmap(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """The real worker's marker_heatmap.py: ``{data: {gene: {rawExpression, truncatedExpression}},
    order: [gene, ...]}``; the heatmap draws ``order``."""
    assert set(result) == {"data", "order"} and result["order"]
    assert set(result["order"]) == set(result["data"])
    check_gene_expression(result["data"], {"body": {"genes": result["order"]}}, truth)


def check_dot_plot(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """The real worker's r/R/dotplot.R: columnar ``cellSetsIdx, geneNameIdx, avgExpression,
    cellsPercentage`` (one entry per cell set and gene, indexes into ``cellSetsNames`` /
    ``geneNames``), as the UI's dot plot spec reads them."""
    columns = ("cellSetsIdx", "geneNameIdx", "avgExpression", "cellsPercentage")
    assert set(result) == {*columns, "cellSetsNames", "geneNames"}
    lengths = {len(result[column]) for column in columns}
    assert len(lengths) == 1 and lengths.pop() == len(result["cellSetsNames"]) * len(result["geneNames"]) > 0
    assert all(0 <= i < len(result["cellSetsNames"]) for i in result["cellSetsIdx"])
    assert all(0 <= i < len(result["geneNames"]) for i in result["geneNameIdx"])
    assert all(v is None or -2.5 <= v <= 2.5 for v in result["avgExpression"])
    assert all(0 <= v <= 100 for v in result["cellsPercentage"])


def check_expression_cell_set(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """The real worker's r/R/get_expression_cellsets.R: ``{key, name, rootNode: false, color,
    cellIds}``, named after the filters (``CST3>1, LYZ>0.5``)."""
    assert set(result) == {"key", "name", "rootNode", "color", "cellIds"} and result["rootNode"] is False
    expected = ", ".join(
        f"{item['geneName']}{'>' if item['comparisonType'] == 'greaterThan' else '<'}{item['thresholdValue']:g}"
        for item in request["body"]["genesConfig"]
    )
    assert (
        result["name"] == expected
        and result["cellIds"]
        and all(isinstance(i, int) for i in result["cellIds"])
    )


def check_normalized_expression(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """The real worker's normalized_matrix.R: a CSV of the normalised data, genes x cells, the first
    column (``" "``) the gene names; cells are those in every subsetBy group."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(result)))
    assert rows[0][0] == " " and len(rows) - 1 == len(truth["gene_names"])
    assert {row[0] for row in rows[1:]} == set(truth["gene_names"])
    assert all(len(row) == len(rows[0]) > 1 for row in rows)
    assert all(float(value) >= 0 or float(value) < 0 for value in rows[1][1:])


def check_background_genes(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui getBackgroundExpressedGenes.js: ``const { genes } = data``, handed to the pathway
    analysis as the background list (worker r/R/get_background_genes.R: ``list(genes = ...)``)."""
    assert set(result) == {"genes"} and result["genes"]
    assert set(result["genes"]) <= set(truth["gene_names"]) and len(set(result["genes"])) == len(
        result["genes"]
    )


def check_batch_differential_expression(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui getBatchDiffExpr.js: one entry per comparison; ``row.total`` falsy → ``{error: row.data}``,
    else ``getArray(row.data)`` (a table by column, every column as long) written as CSV (worker
    batch_differential_expression.py: ``{total: full_count, data: gene_results}``)."""
    body = request["body"]
    expected = len(body["cellSet"]) if len(body["basis"]) == 1 else len(body["basis"])
    assert isinstance(result, list) and len(result) == expected
    assert any(entry["total"] for entry in result)
    for entry in result:
        assert set(entry) == {"total", "data"}
        if not entry["total"]:
            assert isinstance(entry["data"], str) and entry["data"]
            continue
        columns = entry["data"]
        assert {"gene_names", "p_val", "p_val_adj", "pct_1", "pct_2"} <= set(columns)
        assert {len(values) for values in columns.values()} == {entry["total"]}
        assert set(columns["gene_names"]) <= set(truth["gene_names"])


def check_cell_class(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """A new cell class as the UI merges it into the cell sets tree (worker r/R/cell_cycle_scoring.R
    format_phase_cellsets, like ClusterCells): ``{key, name, rootNode: true, type: "cellSets",
    children: [{key, name, rootNode: false, type, color, cellIds}]}``, every cell in one child."""
    assert result["rootNode"] is True and result["type"] == "cellSets" and result["children"]
    ids = []
    for child in result["children"]:
        assert child["key"] and child["name"] and child["rootNode"] is False
        assert re.fullmatch(r"#[0-9a-fA-F]{6}", child["color"]) and child["type"] == "cellSets"
        ids += child["cellIds"]
    assert sorted(ids) == list(range(truth["n_cells"]))


def check_starting_nodes(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui generateTrajectoryAnalysisSpec.js generateStartingNodesData: for each node index of
    ``x``, ``connectedNodes[i]`` lists node indexes read as ``x[j]``, ``y[j]`` (worker
    trajectory_analysis.R: 0-based, only ``j > i``)."""
    assert set(result) == {"connectedNodes", "x", "y"}
    n_nodes = len(result["x"])
    assert n_nodes == len(result["y"]) == len(result["connectedNodes"]) > 0
    assert all(map(_number_or_null, result["x"] + result["y"]))
    for i, connected in enumerate(result["connectedNodes"]):
        assert all(isinstance(j, int) and i < j < n_nodes for j in connected)


def check_pseudotime(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui getTrajectoryPlotPseudoTime.js stores ``data.pseudotime``; generatePseudotimeData reads
    ``pseudotime[cellId]`` (worker trajectory_analysis.R fillNullForFilteredCells: by cell id)."""
    assert set(result) == {"pseudotime"}
    values = result["pseudotime"]
    assert len(values) == truth["n_cell_ids"] and all(map(_number_or_null, values))
    assert any(value for value in values)


def check_processed_file(result: Any, request: dict[str, Any], truth: dict[str, Any]) -> None:
    """ui downloadProcessedMatrix.js: ``downloadFromUrl(writeToFileURL(data), ...)`` saves the
    bytes as they come (unpackResult.js / parseResult.js pass them through). Ours are the processed
    ``.h5ad``: an HDF5 file that anndata reads back with every cell and gene."""
    import tempfile

    import anndata

    assert isinstance(result, bytes) and result.startswith(b"\x89HDF\r\n\x1a\n")
    with tempfile.NamedTemporaryFile(suffix=".h5ad") as handle:
        handle.write(result)
        handle.flush()
        adata = anndata.read_h5ad(handle.name)
    assert adata.n_obs == truth["n_cells"] and [str(name) for name in adata.var_names] == truth["gene_names"]


UI_CHECKS: dict[str, Callable[[Any, dict[str, Any], dict[str, Any]], None]] = {
    "GetEmbedding": check_embedding,
    "ListGenes": check_list_genes,
    "GeneExpression": check_gene_expression,
    "DifferentialExpression": check_differential_expression,
    "ClusterCells": check_cluster_cells,
    "GetMitochondrialContent": check_cell_values,
    "GetDoubletScore": check_cell_values,
    "GetNGenes": check_cell_values,
    "GetNUmis": check_cell_values,
    "MarkerHeatmap": check_marker_heatmap,
    "DotPlot": check_dot_plot,
    "GetExpressionCellSets": check_expression_cell_set,
    "GetNormalizedExpression": check_normalized_expression,
    "GetBackgroundExpressedGenes": check_background_genes,
    "BatchDifferentialExpression": check_batch_differential_expression,
    "CellCycleScoring": check_cell_class,
    "ScTypeAnnotate": check_cell_class,
    "DownloadAnnotSeuratObject": check_processed_file,
    "GetTrajectoryAnalysisStartingNodes": check_starting_nodes,
    "GetTrajectoryAnalysisPseudoTime": check_pseudotime,
}

#: Tasks the service answers with a stored file instead of computing (not runnable in process).
FILE_TASKS = {"DownloadAnnotSeuratObject"}

#: Tasks whose responses the real worker marks ``cacheable: false``.
NOT_CACHEABLE = {"ClusterCells", "GetExpressionCellSets", "CellCycleScoring", "ScTypeAnnotate"}
