"""Analyses a submission's config can name (``{"analysis": "<name>", "params": {...}}``).

Each analysis declares the inputs it reads, its parameters (a pydantic model: unknown or bad
parameters are refused before anything runs, naming the field), a default duration estimate (for
the budget) and a ``run(input_path, params, output_dir, progress)`` function that writes its
outputs into ``output_dir`` and returns a JSON summary.

- ``describe``: tabular data (CSV, TSV, JSON, JSON lines) → pandas summary (``describe.csv``,
  ``summary.json``).
- ``single-cell``: h5ad, 10x HDF5 (``.h5``) or a 10x matrix directory (a dataname ending in ``/``)
  → QC, normalisation, PCA, neighbours, clusters, UMAP and marker genes with :mod:`analyses`
  (``clusters.csv``, ``markers.csv``, ``summary.json``, ``embedding.png``).

Heavy libraries (scanpy, matplotlib) are imported when an analysis runs, not when this module is
imported (the warm worker pre-imports every flow module into its fork server).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Progress = Callable[[str, float], None]


class ConfigRefused(ValueError):
    """The analysis config is invalid; the message names the field."""


@dataclass(frozen=True)
class RegisteredAnalysis:
    name: str
    description: str
    input_kinds: tuple[str, ...]
    params: type[BaseModel]
    default_duration_hours: float
    run: Callable[[Path, BaseModel, Path, Progress], dict[str, Any]]


REGISTRY: dict[str, RegisteredAnalysis] = {}


def register(analysis: RegisteredAnalysis) -> RegisteredAnalysis:
    REGISTRY[analysis.name] = analysis
    return analysis


def input_kind(key: str) -> str:
    """``10x-dir`` for a key ending in '/', else the lower-case extension (``.csv``, ``.h5ad``...)."""
    if key.endswith("/"):
        return "10x-dir"
    name = key.rsplit("/", 1)[-1].lower()
    for compound in (".csv.gz", ".tsv.gz", ".json.gz", ".jsonl.gz"):
        if name.endswith(compound):
            return compound
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


# NeuroCAAS's reserved config keys (read by its job manager, not by the analysis): ``__duration__``
# in minutes (time limit and cost bound), ``__dataset_size__`` in GB (extra storage), and for
# ensembles ``ensemble_size`` (N runs of one dataset, each config getting ``jobnb`` 1..N) and ``mode``.
RESERVED_KEYS = ("__duration__", "__dataset_size__", "ensemble_size", "mode", "jobnb")
# interlinked's own keys: the analysis (in the shared bucket), strict params, our duration, a note.
OWN_KEYS = ("analysis", "params", "duration_hours", "description")
MAX_ENSEMBLE = 100
MAX_DATASET_SIZE_GB = 16 * 1024


@dataclass(frozen=True)
class AnalysisConfig:
    """A parsed config: which analysis, its parameters and NeuroCAAS's reserved keys."""

    analysis: RegisteredAnalysis
    params: BaseModel
    duration_hours: float
    chosen_by: str = "config"  # how the analysis was chosen: config | bucket | inputs
    duration_minutes: float | None = None  # __duration__ as given
    dataset_size_gb: float | None = None  # __dataset_size__ as given
    ensemble_size: int | None = None
    mode: Any = None
    ignored: tuple[str, ...] = ()  # free-form keys the analysis does not read
    document: dict[str, Any] = field(default_factory=dict)  # the config as uploaded

    def estimated_cost(self, *, datasets: int, price_per_hour: float) -> float:
        return round(self.duration_hours * datasets * price_per_hour, 6)

    def run_params(self, jobnb: int | None) -> BaseModel:
        """The parameters of one run: an ensemble run ``jobnb`` > 1 gets its own random seed."""
        if jobnb is None or jobnb == 1 or "random_state" not in type(self.params).model_fields:
            return self.params
        return self.params.model_copy(update={"random_state": self.params.random_state + jobnb - 1})

    def run_config(self, jobnb: int | None) -> dict[str, Any]:
        """The config document of one run, as NeuroCAAS writes it for an ensemble (``jobnb`` set)."""
        return dict(self.document) if jobnb is None else {**self.document, "jobnb": jobnb}


class _Config(BaseModel):
    model_config = ConfigDict(extra="ignore")

    analysis: str | None = None
    params: dict[str, Any] | None = None
    duration_hours: float | None = Field(default=None, gt=0, le=24 * 14)
    description: str | None = None
    duration_minutes: float | None = Field(default=None, alias="__duration__", gt=0, le=60 * 24 * 14)
    dataset_size_gb: float | None = Field(
        default=None, alias="__dataset_size__", ge=0, le=MAX_DATASET_SIZE_GB
    )
    ensemble_size: int | None = Field(default=None, ge=1, le=MAX_ENSEMBLE, strict=True)
    mode: Any = None


def parse_config_text(text: str | bytes, name: str) -> Any:
    """Decode a config file as NeuroCAAS does: YAML for ``.yaml``/``.yml``, JSON otherwise."""
    import yaml

    if name.lower().endswith((".yaml", ".yml")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigRefused(f"config {name} is not valid YAML: {error}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise ConfigRefused(f"config {name} is not valid JSON: {error}") from None


def choose_analysis(
    named: str | None, *, bucket_analysis: str | None = None, kinds: list[str] | None = None
) -> tuple[RegisteredAnalysis, str]:
    """The analysis of a submission and how it was chosen.

    In a bucket of its own the bucket is the analysis (NeuroCAAS's model): a config needs no
    ``analysis`` key, and one naming another analysis is refused. In the shared bucket the
    config's ``analysis`` names it; without one, the analysis is the only registered one that
    reads every dataset's kind (``.csv`` → describe, ``.h5ad`` → single-cell), or the config is
    refused naming the choices."""
    registered = ", ".join(sorted(REGISTRY))
    if bucket_analysis is not None:
        if named is not None and named != bucket_analysis:
            raise ConfigRefused(
                f"config: analysis {named!r}, but this bucket is the analysis {bucket_analysis!r} "
                "(drop the analysis key, or submit to that analysis's bucket)"
            )
        analysis = REGISTRY.get(bucket_analysis)
        if analysis is None:
            raise ConfigRefused(
                f"this bucket's analysis {bucket_analysis!r} is not registered ({registered})"
            )
        return analysis, "bucket"
    if named is not None:
        analysis = REGISTRY.get(named)
        if analysis is None:
            raise ConfigRefused(f"config: analysis {named!r} is not registered (registered: {registered})")
        return analysis, "config"
    kinds = kinds or []
    readers = [a for a in REGISTRY.values() if kinds and all(kind in a.input_kinds for kind in kinds)]
    if len(readers) == 1:
        return readers[0], "inputs"
    shown = ", ".join(sorted(set(kinds))) or "no datasets"
    raise ConfigRefused(
        "config: no analysis key, this is the shared bucket, and "
        + (f"several analyses read {shown}" if readers else f"no registered analysis reads {shown}")
        + f': add "analysis": one of {registered}'
    )


def parse_config(
    document: Any, *, bucket_analysis: str | None = None, kinds: list[str] | None = None
) -> AnalysisConfig:
    """Validate a decoded config file; raise :class:`ConfigRefused` naming the problem.

    Configs are free-form, as in NeuroCAAS: top-level keys that are parameters of the analysis
    are used (and checked), the reserved keys are read, anything else is reported in
    ``ignored``. A ``params`` object (interlinked's form) is checked strictly instead."""
    if not isinstance(document, dict):
        raise ConfigRefused(f"the config must be a JSON or YAML mapping, got {type(document).__name__}")
    try:
        config = _Config.model_validate(document)
    except ValidationError as error:
        raise ConfigRefused(_first_error("config", error)) from None
    analysis, chosen_by = choose_analysis(config.analysis, bucket_analysis=bucket_analysis, kinds=kinds)
    fields = analysis.params.model_fields
    if config.params is not None:
        given = config.params
        free = [k for k in document if k not in OWN_KEYS and k not in RESERVED_KEYS]
    else:
        given = {k: v for k, v in document.items() if k in fields}
        free = [k for k in document if k not in OWN_KEYS and k not in RESERVED_KEYS and k not in fields]
    try:
        params = analysis.params.model_validate(given)
    except ValidationError as error:
        raise ConfigRefused(_first_error(f"config: params of {analysis.name!r}", error)) from None
    if config.duration_minutes is not None:
        duration_hours = config.duration_minutes / 60
    else:
        duration_hours = config.duration_hours or analysis.default_duration_hours
    return AnalysisConfig(
        analysis=analysis,
        params=params,
        duration_hours=duration_hours,
        chosen_by=chosen_by,
        duration_minutes=config.duration_minutes,
        dataset_size_gb=config.dataset_size_gb,
        ensemble_size=config.ensemble_size,
        mode=config.mode,
        ignored=tuple(str(k) for k in free),
        document={k: v for k, v in document.items() if k != "jobnb"},
    )


def check_inputs(config: AnalysisConfig, keys: list[str]) -> None:
    for key in keys:
        kind = input_kind(key)
        if kind not in config.analysis.input_kinds:
            raise ConfigRefused(
                f"dataset {key!r} ({kind or 'no extension'}) cannot be read by {config.analysis.name!r}, "
                f"which reads {', '.join(config.analysis.input_kinds)}"
            )


def _first_error(where: str, error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "missing (required)"
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_json_default, allow_nan=False))


# ---- describe ------------------------------------------------------------------------------------


class DescribeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include: Literal["all", "number", "object"] = Field(default="all", description="Columns to summarise.")
    percentiles: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75])
    fail_on_empty: bool = Field(default=True, description="An empty table is an error.")

    @field_validator("percentiles")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if not all(0 < p < 1 for p in value):
            raise ValueError("percentiles must be between 0 and 1")
        return value


def _read_table(path: Path):
    import pandas as pd

    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path)
    if name.endswith((".tsv", ".tsv.gz")):
        return pd.read_csv(path, sep="\t")
    if name.endswith((".jsonl", ".jsonl.gz")):
        return pd.read_json(path, lines=True)
    if name.endswith((".json", ".json.gz")):
        document = json.loads(path.read_bytes())
        if isinstance(document, list):
            return pd.DataFrame.from_records(document)
        if isinstance(document, dict):
            if all(isinstance(value, list) for value in document.values()):
                return pd.DataFrame(document)
            return pd.DataFrame.from_records([document])
        raise ValueError("a JSON table must be a list of records or an object of columns")
    raise ValueError(f"cannot read {path.name} as a table")


def run_describe(path: Path, params: DescribeParams, output_dir: Path, progress: Progress) -> dict[str, Any]:
    import pandas as pd

    try:
        table = _read_table(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path.name} as a table: {error}") from None
    progress("read", 0.4)
    if params.fail_on_empty and table.empty:
        raise ValueError(f"{path.name} has no rows")
    include = {"all": "all", "number": "number", "object": "object"}[params.include]
    try:
        described = table.describe(include=include, percentiles=params.percentiles)
    except ValueError as error:
        raise ValueError(f"nothing to describe with include={params.include!r}: {error}") from None
    described.to_csv(output_dir / "describe.csv")
    progress("describe", 0.8)
    summary = {
        "rows": int(table.shape[0]),
        "columns": int(table.shape[1]),
        "dtypes": {str(name): str(dtype) for name, dtype in table.dtypes.items()},
        "missing": {str(name): int(count) for name, count in table.isna().sum().items()},
        # pandas' own JSON writer turns numpy values and NaN into JSON (null)
        "describe": json.loads(described.to_json()),
    }
    write_json(output_dir / "summary.json", summary)
    return {
        "rows": summary["rows"],
        "columns": summary["columns"],
        "outputs": ["describe.csv", "summary.json"],
    }


register(
    RegisteredAnalysis(
        name="describe",
        description="pandas summary of a table (CSV, TSV, JSON, JSON lines)",
        input_kinds=(".csv", ".tsv", ".json", ".jsonl", ".csv.gz", ".tsv.gz", ".json.gz", ".jsonl.gz"),
        params=DescribeParams,
        default_duration_hours=0.05,
        run=run_describe,
    )
)


# ---- single cell -----------------------------------------------------------------------------------


class SingleCellParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_genes: int = Field(default=200, ge=0)
    min_cells: int = Field(default=3, ge=0)
    max_pct_mito: float = Field(default=20.0, ge=0, le=100)
    mito_prefix: str = Field(default="MT-", min_length=1)
    n_top_genes: int = Field(default=2000, ge=3, le=20_000)
    n_pcs: int = Field(default=50, ge=2, le=200)
    n_neighbors: int = Field(default=15, ge=2, le=200)
    clustering_method: Literal["leiden", "louvain"] = "leiden"
    resolution: float = Field(default=1.0, gt=0)
    embedding: Literal["umap", "pca"] = "umap"
    n_marker_genes: int = Field(default=5, ge=0, le=100)
    random_state: int = Field(default=0, ge=0)


def _read_single_cell(path: Path):
    import scanpy as sc

    from analyses import read_10x_matrix_dir

    if path.is_dir():
        return read_10x_matrix_dir(path)
    if path.suffix.lower() == ".h5ad":
        import anndata

        return anndata.read_h5ad(path)
    if path.suffix.lower() == ".h5":
        adata = sc.read_10x_h5(path)
        adata.var_names_make_unique()
        return adata
    raise ValueError(f"cannot read {path.name} as single-cell data")


# markers.csv keeps the column names it has always had (analyses' rows are snake_case).
_MARKER_COLUMNS = {
    "log_fold_change": "logFoldChange",
    "p_value": "pValue",
    "adjusted_p_value": "adjustedPValue",
}


def run_single_cell(
    path: Path, params: SingleCellParams, output_dir: Path, progress: Progress
) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from analyses import marker_genes, prepare_anndata

    progress("read", 0.02)
    adata = _read_single_cell(path)
    progress("read", 0.1)
    prepared = prepare_anndata(
        adata,
        min_genes=params.min_genes,
        min_cells=params.min_cells,
        max_pct_mito=params.max_pct_mito,
        mito_prefix=params.mito_prefix,
        n_top_genes=params.n_top_genes,
        n_pcs=params.n_pcs,
        n_neighbors=params.n_neighbors,
        clustering_method=params.clustering_method,
        resolution=params.resolution,
        compute_umap=params.embedding == "umap",
        random_state=params.random_state,
        progress=lambda step, fraction: progress(step, 0.1 + 0.75 * fraction),
    )
    info = prepared.uns["interlinked"]
    method = params.clustering_method
    coordinates = np.asarray(prepared.obsm[f"X_{params.embedding}"])[:, :2]
    clusters = prepared.obs[method].astype(str)
    table = pd.DataFrame(
        {
            "cell": prepared.obs_names,
            "cluster": clusters.values,
            f"{params.embedding}_1": coordinates[:, 0],
            f"{params.embedding}_2": coordinates[:, 1],
            "n_genes": prepared.obs["n_genes_by_counts"].values,
            "total_counts": prepared.obs["total_counts"].values,
            "pct_counts_mt": prepared.obs["pct_counts_mt"].values,
        }
    )
    table.to_csv(output_dir / "clusters.csv", index=False)
    outputs = ["clusters.csv"]

    markers_rows = []
    if params.n_marker_genes and info["n_clusters"] > 1:
        result = marker_genes(prepared, group_by=method, n_genes=params.n_marker_genes)
        for group in result["groups"]:
            for rank, row in enumerate(group["genes"], start=1):
                columns = {_MARKER_COLUMNS.get(key, key): value for key, value in row.items()}
                markers_rows.append({"cluster": group["group"], "rank": rank, **columns})
        pd.DataFrame(markers_rows).to_csv(output_dir / "markers.csv", index=False)
        outputs.append("markers.csv")
    progress("markers", 0.9)

    _plot_embedding(coordinates, clusters.values, output_dir / "embedding.png", params.embedding, method)
    outputs.append("embedding.png")
    sizes = clusters.value_counts().sort_index(key=lambda index: index.astype(int))
    summary = {
        "cells": int(prepared.n_obs),
        "genes": int(prepared.n_vars),
        "n_clusters": int(info["n_clusters"]),
        "cluster_sizes": {str(name): int(count) for name, count in sizes.items()},
        "qc": info["qc"],
        "parameters": info["parameters"],
        "embedding": params.embedding,
        "timings_seconds": {step: round(float(value), 3) for step, value in info["timings"].items()},
    }
    write_json(output_dir / "summary.json", summary)
    outputs.append("summary.json")
    return {"cells": summary["cells"], "n_clusters": summary["n_clusters"], "outputs": outputs}


def _plot_embedding(coordinates, labels, path: Path, embedding: str, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(6, 5), dpi=100)
    categories = sorted(set(labels), key=lambda value: int(value) if value.isdigit() else value)
    colours = plt.get_cmap("tab20")
    for index, category in enumerate(categories):
        mask = np.asarray(labels) == category
        axes.scatter(
            coordinates[mask, 0], coordinates[mask, 1], s=4, color=colours(index % 20), label=category
        )
    axes.set_xlabel(f"{embedding.upper()} 1")
    axes.set_ylabel(f"{embedding.upper()} 2")
    axes.set_title(f"{len(categories)} {method} clusters, {len(labels)} cells")
    if len(categories) <= 20:
        axes.legend(markerscale=3, fontsize=7, frameon=False, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


register(
    RegisteredAnalysis(
        name="single-cell",
        description="single-cell QC, normalisation, PCA, clusters, UMAP and marker genes (h5ad, 10x .h5 or 10x directory)",
        input_kinds=(".h5ad", ".h5", "10x-dir"),
        params=SingleCellParams,
        default_duration_hours=0.25,
        run=run_single_cell,
    )
)
