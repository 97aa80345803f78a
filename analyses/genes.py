"""Listing genes (the ``.var`` table) with selection, filtering, ordering and paging."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

import numpy as np
import pandas as pd
from anndata import AnnData

from ._utils import check_choice, check_int, json_value
from .errors import InvalidRequestError

__all__ = ["GENE_NAMES_FIELD", "GeneTable", "gene_name_matcher", "like_pattern_to_regex", "list_genes"]

#: The pseudo-field selecting the gene names (the ``.var`` index).
GENE_NAMES_FIELD = "gene_names"


class GeneTable(TypedDict):
    """Result of :func:`list_genes`."""

    rows: list[dict[str, object]]
    total: int


def like_pattern_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile an SQL ``LIKE`` pattern to an equivalent case-insensitive regular expression.

    ``%`` matches any run of characters (including none) and ``_`` exactly one character; the
    pattern must match the whole name. A backslash makes the next character literal (``\\%``,
    ``\\_``, ``\\\\``), as with ``LIKE ... ESCAPE '\\'``; a trailing lone backslash is literal. Every
    other character, regex metacharacters included, matches itself.

    Parameters
    ----------
    pattern
        The ``LIKE`` pattern, e.g. ``"%IN%"``.

    Returns
    -------
    re.Pattern
        A compiled pattern to use with :meth:`re.Pattern.fullmatch`.
    """
    parts: list[str] = []
    escaped = False
    for character in pattern:
        if escaped:
            parts.append(re.escape(character))
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == "%":
            parts.append(".*")
        elif character == "_":
            parts.append(".")
        else:
            parts.append(re.escape(character))
    if escaped:
        parts.append(re.escape("\\"))
    return re.compile("".join(parts), flags=re.IGNORECASE | re.DOTALL)


# Characters the real Cellenics worker removes from a gene name filter before using it as a
# regular expression (against catastrophic backtracking); ``^`` and ``$`` stay, they are how its UI
# asks for "starts with" and "ends with".
_REGEX_HAZARDS = "{}|()?¿*+/.<>"


def gene_name_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate on gene names for a gene name filter, in either of its two dialects.

    - With a ``%`` or ``_`` the filter is an SQL ``LIKE`` pattern (the seed's ``"%IN%"``), matched
      against the whole name; see :func:`like_pattern_to_regex`.
    - Otherwise it is what the real Cellenics UI sends (``"^CST"`` starts with, ``"CST$"`` ends
      with, ``"CST"`` contains) and is matched as the real worker does: a case-insensitive regular
      expression searched in the name, after removing the characters ``{}|()?¿*+/.<>``.

    Raises
    ------
    InvalidRequestError
        If the remaining regular expression does not compile (e.g. an unclosed ``[``).
    """
    if "%" in pattern or "_" in pattern:
        regex = like_pattern_to_regex(pattern)
        return lambda name: regex.fullmatch(name) is not None
    cleaned = "".join(character for character in pattern if character not in _REGEX_HAZARDS)
    try:
        regex = re.compile(cleaned, flags=re.IGNORECASE)
    except re.error as error:
        raise InvalidRequestError(
            "gene_names_filter", f"gene name filter {pattern!r} is not a valid pattern ({error})"
        ) from None
    return lambda name: regex.search(name) is not None


def list_genes(
    adata: AnnData,
    *,
    select_fields: Sequence[str] = (GENE_NAMES_FIELD,),
    order_by: str | None = None,
    order_direction: Literal["asc", "desc"] = "asc",
    offset: int = 0,
    limit: int | None = None,
    gene_names_filter: str | None = None,
) -> GeneTable:
    """A page of the gene table, filtered by name and ordered by a field.

    Parameters
    ----------
    adata
        Annotated data matrix; genes are ``adata.var``.
    select_fields
        Fields to return per gene: any ``.var`` column, plus ``"gene_names"`` for the ``.var``
        index (which takes precedence over a ``.var`` column of that name).
    order_by
        Field to sort by (any selectable field, not necessarily selected); ``None`` keeps the
        ``.var`` order. Sorting is stable and missing values (NaN) come last in both directions.
    order_direction
        ``"asc"`` or ``"desc"`` (case-insensitive).
    offset
        Number of rows to skip after filtering and ordering.
    limit
        Maximum number of rows to return; ``None`` for all.
    gene_names_filter
        Gene name filter, case-insensitive: an SQL ``LIKE`` pattern when it has a ``%``, else a
        regular expression as the real Cellenics worker reads it; see :func:`gene_name_matcher`.

    Returns
    -------
    GeneTable
        ``{"rows": [{field: value, ...}, ...], "total": N}`` where ``total`` counts the genes that
        pass the filter (before ``offset``/``limit``). Values are JSON builtins; NaN is ``None``.

    Raises
    ------
    InvalidRequestError
        Naming the bad field for an unknown field, a bad direction, offset, limit or filter.
    """
    fields = _check_fields(adata, select_fields)
    if order_by is not None:
        _check_fields(adata, [order_by], field="order_by")
    direction = order_direction.lower() if isinstance(order_direction, str) else order_direction
    check_choice("order_direction", direction, ("asc", "desc"))
    offset_ = check_int("offset", offset, minimum=0)
    limit_ = check_int("limit", limit, minimum=0, allow_none=True)
    if gene_names_filter is not None and not isinstance(gene_names_filter, str):
        raise InvalidRequestError(
            "gene_names_filter", f"gene_names_filter must be a string, got {gene_names_filter!r}"
        )

    gene_names = adata.var_names.astype(str)
    positions = np.arange(adata.n_vars)
    if gene_names_filter is not None:
        matches = gene_name_matcher(gene_names_filter)
        positions = np.fromiter((i for i, name in enumerate(gene_names) if matches(name)), dtype=np.intp)
    total = len(positions)

    if order_by is not None:
        keys = _field_values(adata, order_by).iloc[positions].reset_index(drop=True)
        try:
            # Stable sort with NaN last in both directions (pandas' na_position applies to both).
            order = keys.sort_values(ascending=direction == "asc", kind="stable", na_position="last")
        except TypeError as error:
            raise InvalidRequestError(
                "order_by", f"Cannot order by {order_by!r}: its values are not comparable ({error})"
            ) from error
        positions = positions[order.index.to_numpy()]

    stop = None if limit_ is None else offset_ + limit_
    page = positions[offset_:stop]
    columns = {field: _field_values(adata, field).iloc[page].tolist() for field in fields}
    rows = [{field: json_value(columns[field][i]) for field in fields} for i in range(len(page))]
    return GeneTable(rows=rows, total=total)


def _check_fields(adata: AnnData, fields: Sequence[str], *, field: str = "select_fields") -> list[str]:
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise InvalidRequestError(field, f"{field} must be a list of field names, got {fields!r}")
    known = {GENE_NAMES_FIELD, *map(str, adata.var.columns)}
    for name in fields:
        if not isinstance(name, str) or name not in known:
            available = ", ".join(sorted(known))
            raise InvalidRequestError(
                field, f"Unknown gene field {name!r} in {field}; available fields: {available}"
            )
    return list(fields)


def _field_values(adata: AnnData, field: str) -> pd.Series:
    if field == GENE_NAMES_FIELD:
        return pd.Series(adata.var_names.astype(str), copy=False)
    values = adata.var[field]
    if isinstance(values.dtype, pd.CategoricalDtype):
        # Order categories by their labels, not by category code.
        values = values.astype(values.cat.categories.dtype)
    return values.reset_index(drop=True)
