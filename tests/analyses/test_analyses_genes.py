from __future__ import annotations

import json
import re
import sqlite3

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyses import InvalidRequestError, like_pattern_to_regex, list_genes


def _genes_named(names: list[str], **columns: list[object]) -> ad.AnnData:
    return ad.AnnData(var=pd.DataFrame(columns, index=pd.Index(names, dtype=object)))


def test_ordering_offset_and_limit_match_pandas(pbmc: ad.AnnData) -> None:
    result = list_genes(
        pbmc,
        select_fields=["highly_variable", "gene_names", "dispersions"],
        order_by="dispersions",
        order_direction="desc",
        offset=5,
        limit=20,
    )

    expected = pbmc.var.sort_values("dispersions", ascending=False, kind="stable").iloc[5:25]
    assert result["total"] == pbmc.n_vars
    assert [row["gene_names"] for row in result["rows"]] == expected.index.tolist()
    np.testing.assert_allclose([row["dispersions"] for row in result["rows"]], expected["dispersions"])
    assert [row["highly_variable"] for row in result["rows"]] == expected["highly_variable"].tolist()
    assert all(list(row) == ["highly_variable", "gene_names", "dispersions"] for row in result["rows"])
    json.dumps(result, allow_nan=False)


def test_ascending_order_by_gene_names_and_default_order(pbmc: ad.AnnData) -> None:
    ascending = list_genes(pbmc, select_fields=["gene_names"], order_by="gene_names", order_direction="ASC")
    assert [row["gene_names"] for row in ascending["rows"]] == sorted(pbmc.var_names)

    unordered = list_genes(pbmc, select_fields=["means"], limit=3)
    np.testing.assert_allclose([row["means"] for row in unordered["rows"]], pbmc.var["means"].iloc[:3])


def test_filter_is_like_with_percent_case_insensitive_and_total_counts_matches(pbmc: ad.AnnData) -> None:
    result = list_genes(pbmc, select_fields=["gene_names"], gene_names_filter="%in%", limit=5)

    matching = [name for name in pbmc.var_names if "in" in name.lower()]
    assert result["total"] == len(matching) > 5
    assert [row["gene_names"] for row in result["rows"]] == matching[:5]


def test_underscore_matches_exactly_one_character(pbmc: ad.AnnData) -> None:
    result = list_genes(pbmc, select_fields=["gene_names"], gene_names_filter="cd_")
    expected = [name for name in pbmc.var_names if re.fullmatch(r"CD.", name, flags=re.IGNORECASE)]
    assert [row["gene_names"] for row in result["rows"]] == expected
    assert result["total"] == len(expected) > 0


def test_like_dialect_metacharacters_are_literal_and_backslash_escapes_wildcards() -> None:
    adata = _genes_named(["A.B", "AXB", "A+B", "AAB", "A(1)", "a%b", "a_b", "azb", "A[B]", "^A$"])

    def names(pattern: str) -> list[str]:
        return [row["gene_names"] for row in list_genes(adata, gene_names_filter=pattern)["rows"]]

    assert names("%(1)") == ["A(1)"]
    assert names("a.b%") == ["A.B"]
    assert names("a[b]%") == ["A[B]"]
    assert names("^a$%") == ["^A$"]
    assert names("a%b") == ["A.B", "AXB", "A+B", "AAB", "a%b", "a_b", "azb"]
    assert names(r"a\%b") == ["a%b"]
    assert names(r"a\_b") == ["a_b"]
    assert names("a_b") == ["A.B", "AXB", "A+B", "AAB", "a%b", "a_b", "azb"]


def test_cellenics_dialect_is_a_case_insensitive_regex_as_the_real_worker_reads_it() -> None:
    """Without ``%``/``_`` the filter is what the real Cellenics UI sends: ``^X`` starts with, ``X$``
    ends with, ``X`` contains; the real worker strips ``{}|()?¿*+/.<>`` and searches case-insensitively."""
    adata = _genes_named(["CST3", "CST7", "CSTB", "ACST", "XCSTX", "cst-like", "A.B", "AAB"])

    def names(pattern: str) -> list[str]:
        return [row["gene_names"] for row in list_genes(adata, gene_names_filter=pattern)["rows"]]

    assert names("^CST") == ["CST3", "CST7", "CSTB", "cst-like"]
    assert names("CST$") == ["ACST"]
    assert names("cst") == ["CST3", "CST7", "CSTB", "ACST", "XCSTX", "cst-like"]
    assert names("a.b") == ["AAB"]  # '.' is stripped, as the real worker does (no regex DoS)
    assert names("(((b+)+)+)$") == ["CSTB", "A.B", "AAB"]  # nested quantifiers cannot be expressed
    with pytest.raises(InvalidRequestError, match="not a valid pattern"):
        list_genes(adata, gene_names_filter="[CST")


def test_nan_values_are_ordered_last_in_both_directions_and_serialised_as_null() -> None:
    adata = _genes_named(["g1", "g2", "g3", "g4"], score=[2.0, np.nan, 1.0, 3.0])

    ascending = list_genes(
        adata, select_fields=["gene_names", "score"], order_by="score", order_direction="asc"
    )
    descending = list_genes(
        adata, select_fields=["gene_names", "score"], order_by="score", order_direction="desc"
    )

    assert [row["gene_names"] for row in ascending["rows"]] == ["g3", "g1", "g4", "g2"]
    assert [row["gene_names"] for row in descending["rows"]] == ["g4", "g1", "g3", "g2"]
    assert descending["rows"][-1]["score"] is None
    json.dumps(descending, allow_nan=False)


def test_offset_beyond_the_end_gives_no_rows_but_the_total() -> None:
    adata = _genes_named(["g1", "g2"])
    assert list_genes(adata, offset=10, limit=5) == {"rows": [], "total": 2}


@pytest.mark.parametrize(
    ("arguments", "field", "mentioned"),
    [
        ({"select_fields": ["gene_names", "nonsense"]}, "select_fields", "nonsense"),
        ({"order_by": "nonsense"}, "order_by", "nonsense"),
        ({"order_direction": "sideways"}, "order_direction", "sideways"),
        ({"offset": -1}, "offset", "-1"),
        ({"limit": 2.5}, "limit", "2.5"),
        ({"gene_names_filter": 5}, "gene_names_filter", "5"),
        ({"select_fields": "gene_names"}, "select_fields", "gene_names"),
    ],
)
def test_invalid_arguments_name_the_bad_field(
    pbmc: ad.AnnData, arguments: dict, field: str, mentioned: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        list_genes(pbmc, **arguments)
    assert raised.value.field == field
    assert mentioned in str(raised.value)
    assert raised.value.code == "INVALID_REQUEST"


# --- LIKE semantics against SQLite's LIKE ... ESCAPE '\' (case-insensitive for ASCII) ------------

_ALPHABET = "aAbB1.*+?()[]{}^$|%_\\-"
_names = st.lists(st.text(alphabet=_ALPHABET, min_size=0, max_size=6), min_size=1, max_size=15)
_pattern_tokens = st.one_of(
    st.just("%"),
    st.just("_"),
    st.sampled_from(_ALPHABET).map(lambda c: "\\" + c if c in "%_\\" else c),
    st.sampled_from("ab.").map(lambda c: "\\" + c),  # escaping an ordinary character is allowed
)
_patterns = st.lists(_pattern_tokens, max_size=6).map("".join)


@settings(max_examples=200, deadline=None)
@given(names=_names, pattern=_patterns)
def test_like_filter_agrees_with_sqlite(names: list[str], pattern: str) -> None:
    with sqlite3.connect(":memory:") as connection:
        connection.execute("CREATE TABLE genes (position INTEGER, name TEXT)")
        connection.executemany("INSERT INTO genes VALUES (?, ?)", list(enumerate(names)))
        expected = [
            position
            for (position,) in connection.execute(
                "SELECT position FROM genes WHERE name LIKE ? ESCAPE '\\' ORDER BY position", (pattern,)
            )
        ]
    regex = like_pattern_to_regex(pattern)
    assert [i for i, name in enumerate(names) if regex.fullmatch(name)] == expected
