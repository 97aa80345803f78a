"""Cell sets: named groups of cells derived from the categorical columns of ``.obs``.

A cell set id is ``"{obs column}-{category}"`` (e.g. ``"louvain-3"``), one per category of every
categorical ``.obs`` column. Cell indices are positions along ``adata.obs_names``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypedDict

import numpy as np
import pandas as pd
from anndata import AnnData

from .errors import InvalidRequestError, UnknownCellSetError

__all__ = ["CellSet", "cell_set_id", "list_cell_sets", "resolve_cell_sets"]


class CellSet(TypedDict):
    """One cell set as listed by :func:`list_cell_sets`."""

    id: str
    column: str
    category: str
    cell_count: int


def cell_set_id(column: str, category: object) -> str:
    """The id of the cell set for ``category`` of ``.obs[column]``."""
    return f"{column}-{category}"


def _categorical_columns(adata: AnnData) -> list[str]:
    return [
        str(column)
        for column in adata.obs.columns
        if isinstance(adata.obs[column].dtype, pd.CategoricalDtype)
    ]


def _locate(adata: AnnData, columns: list[str], cell_set_id_: str) -> tuple[str, int] | None:
    """``(obs column, category code)`` of a cell set id, or ``None`` if it does not exist.

    Looks the category up in its column's categories instead of listing every cell set, so
    resolving stays fast even with high-cardinality categorical columns. When two
    (column, category) pairs spell the same id (possible when column names contain ``-``), the
    first column in ``.obs`` order wins, so resolution is deterministic.
    """
    for column in columns:
        prefix = f"{column}-"
        if not cell_set_id_.startswith(prefix):
            continue
        categories = adata.obs[column].cat.categories
        labels = categories if categories.dtype == object else categories.astype(str)
        try:
            code = labels.get_loc(cell_set_id_[len(prefix) :])
        except KeyError:
            continue
        if isinstance(code, int | np.integer):
            return column, int(code)
        # Distinct categories that print alike (e.g. 1 and "1"): the first one wins.
        return column, int(np.flatnonzero(np.asarray(labels) == cell_set_id_[len(prefix) :])[0])
    return None


def list_cell_sets(adata: AnnData) -> list[CellSet]:
    """List every cell set of ``adata``.

    Parameters
    ----------
    adata
        Annotated data matrix. Every categorical ``.obs`` column contributes one cell set per
        category (including categories with no cells, which get ``cell_count`` 0).

    Returns
    -------
    list of CellSet
        ``{"id", "column", "category", "cell_count"}`` per cell set, in ``.obs`` column order and
        then category order.
    """
    cell_sets: list[CellSet] = []
    for column in _categorical_columns(adata):
        values = adata.obs[column]
        codes = values.cat.codes.to_numpy()
        counts = np.bincount(codes[codes >= 0], minlength=len(values.cat.categories))
        for code, category in enumerate(values.cat.categories):
            cell_sets.append(
                CellSet(
                    id=cell_set_id(column, category),
                    column=column,
                    category=str(category),
                    cell_count=int(counts[code]),
                )
            )
    return cell_sets


def resolve_cell_sets(
    adata: AnnData,
    cell_set_ids: Iterable[str] | None,
    *,
    field: str = "cell_sets",
) -> np.ndarray:
    """Resolve cell set ids to the union of their cells.

    Parameters
    ----------
    adata
        Annotated data matrix.
    cell_set_ids
        Cell set ids (``"{obs column}-{category}"``). ``None`` selects every cell. A single string
        is treated as one id.
    field
        Name of the request field the ids came from; used in error messages.

    Returns
    -------
    numpy.ndarray
        Sorted, unique ``int64`` cell indices (cell order of ``adata``). This is an index for further
        computation rather than a result payload; call ``.tolist()`` for JSON.

    Raises
    ------
    UnknownCellSetError
        If any id is not a cell set of ``adata`` (all unknown ids are named).
    InvalidRequestError
        If ``cell_set_ids`` is not a list of strings.
    """
    if cell_set_ids is None:
        return np.arange(adata.n_obs, dtype=np.int64)
    ids = _as_id_list(cell_set_ids, field=field)
    columns = _categorical_columns(adata)
    located = {cell_set_id_: _locate(adata, columns, cell_set_id_) for cell_set_id_ in dict.fromkeys(ids)}
    unknown = [cell_set_id_ for cell_set_id_, where in located.items() if where is None]
    if unknown:
        raise UnknownCellSetError(unknown, field=field)

    # Group requested categories by column so each column's codes are scanned once.
    codes_by_column: dict[str, list[int]] = {}
    for where in located.values():
        column, code = where  # type: ignore[misc]
        codes_by_column.setdefault(column, []).append(code)
    selected = np.zeros(adata.n_obs, dtype=bool)
    for column, codes in codes_by_column.items():
        selected |= np.isin(adata.obs[column].cat.codes.to_numpy(), codes)
    return np.flatnonzero(selected).astype(np.int64, copy=False)


def _as_id_list(cell_set_ids: Iterable[str], *, field: str) -> list[str]:
    if isinstance(cell_set_ids, str):
        return [cell_set_ids]
    ids: Sequence[object] = list(cell_set_ids)
    bad = [value for value in ids if not isinstance(value, str)]
    if bad:
        raise InvalidRequestError(field, f"{field} must be cell set id strings, got {bad[0]!r}")
    return [str(value) for value in ids]
