"""The Cellenics tasks compared with scanpy (or the reference method) on the same data.

Requests are the real UI's bodies (tests/fixtures/cellenics/requests); results must agree with
scanpy run directly on pbmc68k_reduced, and follow the real worker's semantics where it defines them
(cell-id indexing, the 95th-percentile truncation, the gene filter dialects).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _cellenics import fixtures, materialise

from flows.analysis.experiments import prepare_in_memory
from flows.analysis.protocol import parse_task
from flows.analysis.tasks import run_task

FIXTURES = fixtures("v1")


@pytest.fixture(scope="module")
def pbmc():
    import scanpy as sc

    return prepare_in_memory(sc.datasets.pbmc68k_reduced(), "pbmc", "v1")


def run(experiment, body: dict):
    return run_task(parse_task({"uuid": "u", "experimentId": "pbmc", "body": body}), experiment)


def fixture_body(name: str) -> dict:
    return materialise(FIXTURES[name], "pbmc")["body"]


@pytest.mark.parametrize(
    ("task", "column"),
    [("GetMitochondrialContent", "percent_mito"), ("GetNGenes", "n_genes"), ("GetNUmis", "n_counts")],
)
def test_per_cell_values_are_the_stored_qc_metrics_by_cell_id(pbmc, task, column):
    values = run(pbmc, {"name": task})
    np.testing.assert_allclose(values, pbmc.adata.obs[column].to_numpy(), rtol=1e-6)


def test_doublet_scores_are_scrublets(pbmc):
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    ours = run(pbmc, fixture_body("v1_GetDoubletScore"))
    reference = ad.AnnData(X=sp.csr_matrix(pbmc.adata.raw.X.expm1(), dtype=np.float32))
    sc.pp.scrublet(reference, random_state=0, verbose=False, threshold=0.25)
    np.testing.assert_allclose(ours, reference.obs["doublet_score"].to_numpy(), rtol=1e-5)


def test_gene_expression_raw_and_truncated_follow_the_real_worker(pbmc):
    result = run(pbmc, fixture_body("v1_GeneExpression"))  # CST3, TGFB1 (absent), cd79a (lower case)
    assert set(result) == {"CST3", "CD79A"}
    for gene in result:
        values = pbmc.adata.raw[:, gene].X.toarray().ravel()
        raw, truncated = result[gene]["rawExpression"], result[gene]["truncatedExpression"]
        np.testing.assert_allclose(raw["expression"], values, rtol=1e-6)
        assert raw["mean"] == pytest.approx(values.mean()) and raw["stdev"] == pytest.approx(values.std())
        # R: quantile(x, 0.95), raised by 0.01 while it is 0, then pmin(x, limit)
        level, limit = 0.95, np.quantile(values, 0.95)
        while limit == 0 and level < 1:
            level = min(1.0, level + 0.01)
            limit = np.quantile(values, level)
        np.testing.assert_allclose(truncated["expression"], np.minimum(values, limit), rtol=1e-6)
        assert truncated["max"] == pytest.approx(limit) and truncated["min"] == pytest.approx(values.min())


def test_differential_expression_rest_is_scanpys_rest_within_the_group(pbmc):
    import scanpy as sc

    result = run(pbmc, fixture_body("v1_DifferentialExpression_background"))
    reference = pbmc.adata.copy()
    sc.tl.rank_genes_groups(
        reference, "louvain", groups=["1"], reference="rest", method="wilcoxon", use_raw=True
    )
    table = sc.get.rank_genes_groups_df(reference, group="1").set_index("names")
    rows = {row["gene_names"]: row for row in result["rows"]}
    assert set(rows) == set(table.index) and result["total"] == len(table)
    for gene in table.index[:50]:
        assert rows[gene]["zscore"] == pytest.approx(table.loc[gene, "scores"], rel=1e-5)
        assert rows[gene]["qval"] == pytest.approx(table.loc[gene, "pvals_adj"], rel=1e-4)
        assert rows[gene]["log2fc"] == pytest.approx(table.loc[gene, "logfoldchanges"], rel=1e-4, abs=1e-6)
    qvals = [row["qval"] for row in result["rows"]]
    assert qvals == sorted(qvals)  # ordered by adjusted p-value, as the real worker
    in_group = (pbmc.adata.obs["louvain"] == "1").to_numpy()
    cd74 = pbmc.adata.raw[:, "CD74"].X.toarray().ravel() != 0
    assert rows["CD74"]["pct_1"] == pytest.approx(cd74[in_group].mean())
    assert rows["CD74"]["pct_2"] == pytest.approx(cd74[~in_group].mean())


def test_differential_expression_between_two_sets_matches_scanpy_reference_group(pbmc):
    import scanpy as sc

    result = run(pbmc, fixture_body("v1_DifferentialExpression_between_sets"))  # louvain-0 vs louvain-2
    reference = pbmc.adata.copy()
    sc.tl.rank_genes_groups(
        reference, "louvain", groups=["0"], reference="2", method="wilcoxon", use_raw=True
    )
    table = sc.get.rank_genes_groups_df(reference, group="0")
    strongest = table.reindex(table["scores"].abs().sort_values(ascending=False).index).head(100)
    assert {row["gene_names"] for row in result["rows"]} == set(strongest["names"])
    assert result["total"] == 100


def test_tsne_with_the_uis_config_is_scanpys_tsne_with_those_parameters(pbmc):
    import scanpy as sc

    ours = np.asarray(run(pbmc, fixture_body("v1_GetEmbedding_tsne")))  # perplexity 30, learningRate 200
    reference = pbmc.adata.copy()
    sc.tl.tsne(reference, use_rep="X_pca", random_state=0, perplexity=30, learning_rate=200)
    np.testing.assert_allclose(ours, reference.obsm["X_tsne"], rtol=1e-4, atol=1e-4)


def test_cluster_cells_tree_is_the_louvain_partition(pbmc):
    import analyses

    tree = run(pbmc, fixture_body("v1_ClusterCells"))
    expected = analyses.cluster_cells(pbmc.adata, method="louvain", resolution=0.8)["labels"]
    labels = np.empty(pbmc.adata.n_obs, dtype=object)
    for child in tree["children"]:
        labels[child["cellIds"]] = child["key"].removeprefix("louvain-")
    assert labels.tolist() == expected
    assert [child["name"] for child in tree["children"]] == [
        f"Cluster {k}" for k in sorted(set(expected), key=int)
    ]


def test_marker_heatmap_genes_are_scanpys_top_markers_per_cluster(pbmc):
    import scanpy as sc

    result = run(pbmc, fixture_body("v1_MarkerHeatmap"))  # nGenes 5, cellSetKey louvain
    reference = pbmc.adata.copy()
    sc.tl.rank_genes_groups(reference, "louvain", method="wilcoxon", use_raw=True, n_genes=5)
    expected = []
    for cluster in reference.obs["louvain"].cat.categories:
        for gene in sc.get.rank_genes_groups_df(reference, group=cluster)["names"]:
            if gene not in expected:
                expected.append(gene)
    assert result["order"] == expected


@pytest.mark.parametrize("name", ["v1_ListGenes_starts", "v1_ListGenes_ends", "v1_ListGenes_contains"])
def test_gene_filters_are_the_real_workers_case_insensitive_grepl(pbmc, name):
    body = fixture_body(name)
    result = run(pbmc, body)
    pattern = body["geneNamesFilter"]
    expected = pbmc.adata.var.assign(gene_names=pbmc.adata.var_names.astype(str))
    expected = expected[[bool(re.search(pattern, gene, re.IGNORECASE)) for gene in expected["gene_names"]]]
    expected = expected.sort_values("dispersions", ascending=False, kind="stable")
    assert result["total"] == len(expected) > 0
    assert [row["gene_names"] for row in result["rows"]] == expected["gene_names"].tolist()[: body["limit"]]


def test_dot_plot_is_seurats_dot_plot_data(pbmc):
    """Seurat's DotPlot: per gene, log1p(mean(expm1(x))) per cell set, z-scored across cell sets
    (sample sd) and clipped to [-2.5, 2.5]; percentage of expressing cells."""
    body = fixture_body("v1_DotPlot_custom_filtered")  # CST3, cd79a, LYZ in the CD14+ monocytes
    result = run(pbmc, body)
    adata = pbmc.adata
    monocytes = (adata.obs["bulk_labels"] == "CD14+ Monocyte").to_numpy()
    groups = [
        c for c in adata.obs["louvain"].cat.categories if np.any(monocytes & (adata.obs["louvain"] == c))
    ]
    assert result["cellSetsNames"] == groups and result["geneNames"] == ["CD79A", "CST3", "LYZ"]
    for entry in range(len(result["cellSetsIdx"])):
        group = groups[result["cellSetsIdx"][entry]]
        gene = result["geneNames"][result["geneNameIdx"][entry]]
        values = adata.raw[:, gene].X.toarray().ravel()
        means = np.array(
            [np.expm1(values[monocytes & (adata.obs["louvain"] == g).to_numpy()]).mean() for g in groups]
        )
        scaled = np.clip((np.log1p(means) - np.log1p(means).mean()) / np.log1p(means).std(ddof=1), -2.5, 2.5)
        members = values[monocytes & (adata.obs["louvain"] == group).to_numpy()]
        assert result["avgExpression"][entry] == pytest.approx(scaled[groups.index(group)], rel=1e-5)
        assert result["cellsPercentage"][entry] == pytest.approx(100 * (members > 0).mean())


def test_expression_cell_set_holds_the_cells_passing_every_filter(pbmc):
    result = run(pbmc, fixture_body("v1_GetExpressionCellSets"))  # CST3 > 1 and LYZ > 0.5
    cst3 = pbmc.adata.raw[:, "CST3"].X.toarray().ravel()
    lyz = pbmc.adata.raw[:, "LYZ"].X.toarray().ravel()
    assert result["cellIds"] == np.flatnonzero((cst3 > 1) & (lyz > 0.5)).tolist()
    assert result["name"] == "CST3>1, LYZ>0.5"


def test_normalized_expression_csv_is_the_normalised_matrix_of_the_subset(pbmc):
    import csv
    import io

    body = materialise(fixtures("v2")["v2_GetNormalizedExpression"], "pbmc")["body"]
    rows = list(csv.reader(io.StringIO(run(pbmc, body))))
    obs = pbmc.adata.obs
    keep = obs["louvain"].isin(["0", "1"]) & obs["bulk_labels"].isin(["CD14+ Monocyte", "Dendritic"])
    assert rows[0] == [" ", *obs_names(pbmc, keep.to_numpy())]
    cst3 = next(row for row in rows if row[0] == "CST3")
    expected = pbmc.adata.raw[:, "CST3"].X.toarray().ravel()[keep.to_numpy()]
    np.testing.assert_allclose([float(v) for v in cst3[1:]], expected, rtol=1e-5)


def obs_names(pbmc, mask):
    return pbmc.adata.obs_names[mask].astype(str).tolist()
