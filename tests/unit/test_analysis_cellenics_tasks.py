"""The Cellenics tasks compared with scanpy (or the reference method) on the same data.

Requests are the real UI's bodies (tests/fixtures/cellenics/requests); results must agree with
scanpy run directly on pbmc68k_reduced, and follow the real worker's semantics where it defines them
(cell-id indexing, the 95th-percentile truncation, the gene filter dialects).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from _cellenics import UI_CHECKS, fixtures, get_array, materialise

from flows.analysis.experiments import prepare_in_memory
from flows.analysis.protocol import encode, parse_task
from flows.analysis.tasks import CURRENT_DE_COLUMNS, present, run_task

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


def v2_body(name: str) -> dict:
    return materialise(fixtures("v2")[name], "pbmc")["body"]


def test_background_genes_are_those_counted_over_15_in_the_compared_cells(pbmc):
    import analyses

    body = {**v2_body("v2_GetBackgroundExpressedGenes"), "compareWith": "louvain-2"}
    result = run(pbmc, body)  # louvain-1 vs louvain-2: only their cells count
    louvain = pbmc.adata.obs["louvain"].to_numpy()
    cells = np.flatnonzero((louvain == "1") | (louvain == "2"))
    counts, names = analyses.estimated_counts(pbmc.adata, cells)
    totals = np.asarray(counts.sum(axis=0)).ravel()
    assert result == {"genes": [str(name) for name in names[totals > 15]]}
    everyone = run(pbmc, v2_body("v2_GetBackgroundExpressedGenes"))["genes"]  # rest: every cell
    assert set(result["genes"]) < set(everyone)


def test_batch_differential_expression_full_list_is_scanpys_one_vs_rest_per_cell_set(pbmc):
    import scanpy as sc
    from sklearn.metrics import roc_auc_score

    body = v2_body("v2_BatchDifferentialExpression_fullList")  # louvain-0, -3, -7 vs background
    result = run(pbmc, body)
    assert [entry["total"] for entry in result] == [pbmc.adata.raw.n_vars] * 3
    louvain = pbmc.adata.obs["louvain"]
    for cell_set, entry in zip(body["cellSet"], result, strict=True):
        cluster = cell_set.removeprefix("louvain-")
        reference = pbmc.adata.copy()
        sc.tl.rank_genes_groups(
            reference, "louvain", groups=[cluster], reference="rest", method="wilcoxon", use_raw=True
        )
        table = sc.get.rank_genes_groups_df(reference, group=cluster).set_index("names")
        columns = entry["data"]
        rows = {gene: i for i, gene in enumerate(columns["gene_names"])}
        assert set(rows) == set(table.index)
        assert columns["p_val_adj"] == sorted(columns["p_val_adj"])
        in_group = (louvain == cluster).to_numpy()
        for gene in table.index[:20]:
            i = rows[gene]
            assert columns["p_val_adj"][i] == pytest.approx(table.loc[gene, "pvals_adj"], rel=1e-4)
            assert columns["zscore"][i] == pytest.approx(table.loc[gene, "scores"], rel=1e-5)
            values = pbmc.adata.raw[:, gene].X.toarray().ravel()
            assert columns["auc"][i] == pytest.approx(roc_auc_score(in_group, values), abs=1e-3)
            # pct_1 / pct_2 in percent (presto's runWilcoxAUC; the UI filters them on 0-100)
            assert columns["pct_1"][i] == pytest.approx(100 * (values[in_group] > 0).mean())
            assert columns["pct_2"][i] == pytest.approx(100 * (values[~in_group] > 0).mean())


def test_batch_differential_expression_per_basis_answers_every_comparison_it_can(pbmc):
    import scanpy as sc

    body = v2_body("v2_BatchDifferentialExpression_compareForCellSets")
    result = run(pbmc, body)  # CD14+ Monocyte vs Dendritic within louvain-0, -1 and -3
    obs = pbmc.adata.obs
    assert len(result) == len(body["basis"])
    for basis, entry in zip(body["basis"], result, strict=True):
        within = obs[obs["louvain"] == basis.removeprefix("louvain-")]
        counts = within["bulk_labels"].value_counts()
        if counts.get("CD14+ Monocyte", 0) < 2 or counts.get("Dendritic", 0) < 2:
            assert entry == {"total": 0, "data": "No data available for this comparison"}
            continue
        subset = pbmc.adata[within.index].copy()
        sc.tl.rank_genes_groups(
            subset,
            "bulk_labels",
            groups=["CD14+ Monocyte"],
            reference="Dendritic",
            method="wilcoxon",
            use_raw=True,
        )
        table = sc.get.rank_genes_groups_df(subset, group="CD14+ Monocyte").set_index("names")
        columns = entry["data"]
        assert entry["total"] == len(table)
        for i, gene in enumerate(columns["gene_names"][:20]):
            assert columns["p_val_adj"][i] == pytest.approx(table.loc[gene, "pvals_adj"], rel=1e-4)
    assert any(entry["total"] for entry in result) and not all(entry["total"] for entry in result)


def test_cell_cycle_phases_are_scanpys_with_seurats_gene_lists(pbmc):
    import anndata as ad
    import scanpy as sc

    import analyses

    result = run(pbmc, v2_body("v2_CellCycleScoring"))
    reference = ad.AnnData(X=pbmc.adata.raw.X, obs=pbmc.adata.obs[[]], var=pbmc.adata.raw.var[[]])
    s_genes = [gene for gene in analyses.S_GENES if gene in reference.var_names]
    g2m_genes = [gene for gene in analyses.G2M_GENES if gene in reference.var_names]
    sc.tl.score_genes_cell_cycle(reference, s_genes=s_genes, g2m_genes=g2m_genes, random_state=0)
    phases = reference.obs["phase"].astype(str).to_numpy()
    assert [child["name"] for child in result["children"]] == list(dict.fromkeys(phases.tolist()))
    for child in result["children"]:
        assert child["key"] == f"Phase-{child['name']}"
        assert child["cellIds"] == np.flatnonzero(phases == child["name"]).tolist()


def test_cell_cycle_without_marker_genes_is_undetermined_for_every_cell(pbmc):
    from flows.analysis.experiments import prepare_in_memory

    keep = [gene for gene in pbmc.adata.raw.var_names if gene not in ("PCNA", "HMGB2")]
    adata = pbmc.adata.raw.to_adata()[:, keep].copy()
    result = run(prepare_in_memory(adata, "pbmc", "v2"), {"name": "CellCycleScoring"})
    assert [(child["key"], child["name"]) for child in result["children"]] == [
        ("Phase-Undetermined_cycle_phase", "Undetermined cycle phase")
    ]
    assert len(result["children"][0]["cellIds"]) == adata.n_obs


@pytest.fixture(scope="module")
def trajectory_reference(pbmc):
    """The trajectory of the fixtures' cells computed with scanpy directly: neighbours (k = 25) on
    the UMAP the UI shows for the same settings, Louvain at the requested resolution, PAGA."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    import analyses

    body = v2_body("v2_GetTrajectoryAnalysisStartingNodes")
    settings = body["embedding"]["methodSettings"]
    shown = np.asarray(
        run(pbmc, {"name": "GetEmbedding", "type": "umap", "config": settings}), dtype=np.float64
    )
    clusters = [item.removeprefix("louvain-") for item in body["cellSets"]]
    cells = np.flatnonzero(pbmc.adata.obs["louvain"].isin(clusters).to_numpy())
    scratch = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(cells))]))
    scratch.obsm["X_shown"] = shown[cells]
    sc.pp.neighbors(scratch, n_neighbors=25, use_rep="X_shown", random_state=0)
    labels = analyses.cluster_cells(scratch, method="louvain", resolution=0.8)["labels"]
    scratch.obs["node"] = pd.Categorical(labels, categories=[str(k) for k in range(len(set(labels)))])
    sc.tl.paga(scratch, groups="node")
    return {"body": body, "cells": cells, "scratch": scratch, "coordinates": shown[cells]}


def test_trajectory_nodes_are_pagas_tree_over_the_clusters_of_the_shown_umap(pbmc, trajectory_reference):
    result = run(pbmc, trajectory_reference["body"])
    scratch, coordinates = trajectory_reference["scratch"], trajectory_reference["coordinates"]
    codes = scratch.obs["node"].cat.codes.to_numpy()
    n_nodes = len(scratch.obs["node"].cat.categories)
    assert len(result["x"]) == n_nodes > 1
    for node in range(n_nodes):
        mean = coordinates[codes == node].mean(axis=0)
        assert [result["x"][node], result["y"][node]] == pytest.approx(mean.tolist(), rel=1e-9)
    tree = scratch.uns["paga"]["connectivities_tree"].toarray()
    expected = {(min(i, j), max(i, j)) for i, j in zip(*np.nonzero(tree), strict=True)}
    assert {(i, j) for i, connected in enumerate(result["connectedNodes"]) for j in connected} == expected


def test_trajectory_pseudotime_is_scanpys_dpt_from_the_root_nodes_cell(pbmc, trajectory_reference):
    import scanpy as sc

    body = {**trajectory_reference["body"], "name": "GetTrajectoryAnalysisPseudoTime", "rootNodes": [1]}
    result = run(pbmc, body)["pseudotime"]
    scratch, coordinates = trajectory_reference["scratch"].copy(), trajectory_reference["coordinates"]
    members = np.flatnonzero(scratch.obs["node"].cat.codes.to_numpy() == 1)
    root = members[np.argmin(((coordinates[members] - coordinates[members].mean(axis=0)) ** 2).sum(axis=1))]
    sc.tl.diffmap(scratch, n_comps=15, random_state=0)
    scratch.uns["iroot"] = int(root)
    sc.tl.dpt(scratch, n_dcs=10)
    expected = scratch.obs["dpt_pseudotime"].to_numpy()
    cells = trajectory_reference["cells"]
    outside = np.setdiff1d(np.arange(pbmc.adata.n_obs), cells)
    assert all(result[i] is None for i in outside)
    ours = np.array([np.nan if result[i] is None else result[i] for i in cells])
    np.testing.assert_allclose(ours, np.where(np.isfinite(expected), expected, np.nan), rtol=1e-6)
    assert result[cells[root]] == 0.0


def test_trajectory_pseudotime_without_root_nodes_is_refused(pbmc, trajectory_reference):
    from flows.analysis.protocol import ServiceError

    body = {**trajectory_reference["body"], "name": "GetTrajectoryAnalysisPseudoTime", "rootNodes": []}
    with pytest.raises(ServiceError, match="root") as caught:
        run(pbmc, body)
    assert caught.value.code == "INVALID_REQUEST"
    with pytest.raises(ServiceError, match="root nodes must be node numbers") as caught:
        run(pbmc, {**body, "rootNodes": [99]})


def test_sctype_annotation_is_sctypes_scoring_of_the_marker_table(pbmc):
    """ScType's score, written out: markers z-scored across cells (clipped at 10), positive ones
    weighted (K - n) / (K - 1) (n: types listing the marker, K: types), sum / sqrt(count), minus the
    negative ones' sum / sqrt(count); per cluster the type with the largest summed score, Unknown
    below a quarter of the cluster's cells."""
    import analyses

    body = v2_body("v2_ScTypeAnnotate")
    result = run(pbmc, body)
    assert result["name"] == "ScType-Immune system-human"
    markers = analyses.MARKERS["Immune system"]
    genes = {str(name).upper(): i for i, name in enumerate(pbmc.adata.raw.var_names)}
    values = pbmc.adata.raw.X.toarray()

    def z(gene):
        column = values[:, genes[gene]]
        return np.minimum((column - column.mean()) / column.std(ddof=1), 10)

    listed = [gene for positive, _ in markers.values() for gene in positive]
    scores = {}
    for cell_type, (positive, negative) in markers.items():
        found = [gene for gene in positive if gene in genes]
        if not found:
            continue
        weights = [(len(markers) - listed.count(gene)) / (len(markers) - 1) for gene in found]
        score = sum(w * z(gene) for w, gene in zip(weights, found, strict=True)) / np.sqrt(len(found))
        against = [gene for gene in negative if gene in genes]
        if against:
            score = score - sum(z(gene) for gene in against) / np.sqrt(len(against))
        scores[cell_type] = score
    louvain = pbmc.adata.obs["louvain"].astype(str).to_numpy()
    expected = {}
    for cluster in dict.fromkeys(louvain):
        members = louvain == cluster
        totals = {cell_type: score[members].sum() for cell_type, score in scores.items()}
        best = max(totals, key=totals.get)
        expected[cluster] = best if totals[best] >= members.sum() / 4 else "Unknown"
    got = {}
    for child in result["children"]:
        for cluster in set(louvain[child["cellIds"]]):
            got[cluster] = child["name"]
        assert len(child["key"]) == 36 and child["rootNode"] is False
    assert got == expected
    # the clusters the sorted populations of pbmc68k_reduced label unambiguously
    assert (got["2"], got["4"]) == ("Myeloid dendritic cells", "B cells")


def test_sctype_for_a_tissue_without_markers_is_refused_by_name(pbmc):
    from flows.analysis.protocol import ServiceError

    with pytest.raises(ServiceError, match="No marker set for tissue 'Liver'") as caught:
        run(pbmc, {**v2_body("v2_ScTypeAnnotate"), "tissue": "Liver"})
    assert caught.value.code == "INVALID_REQUEST"


# ---- DifferentialExpression as each generation's client reads it ----------------------------------


def truth_of(experiment) -> dict:
    """What the UI checks compare with."""
    names = [str(name) for name in experiment.adata.var_names]
    return {"n_cells": experiment.adata.n_obs, "n_cell_ids": experiment.adata.n_obs, "gene_names": names}


def answered(experiment, fixture: str) -> tuple[dict, Any]:
    """The fixture's request and its result body as the service sends it (compute, then
    :func:`present` the page in the asking client's shape)."""
    request = materialise(fixtures()[fixture], "pbmc")
    task = parse_task(request)
    return request, json.loads(present(task, encode(run_task(task, experiment))))


def test_current_envelope_differential_expression_is_the_current_workers_table_by_column(pbmc):
    """v2_DifferentialExpression: ``{total, data}`` by column with the current worker's names, the
    page of ``requestProps.pagination`` (p_val_adj ASC, 20 rows), the same numbers as the SNS-era
    rows (pct in percent)."""
    request, result = answered(pbmc, "v2_DifferentialExpression")
    UI_CHECKS["DifferentialExpression"](result, request, truth_of(pbmc))
    assert set(result["data"]) == set(CURRENT_DE_COLUMNS) and result["total"] == pbmc.adata.raw.n_vars
    _, whole = answered(pbmc, "v1_DifferentialExpression_background")  # same cells: louvain-1 vs the rest
    expected = sorted(whole["rows"], key=lambda row: row["qval"])[:20]
    rows = get_array(result["data"])
    assert [row["gene_names"] for row in rows] == [row["gene_names"] for row in expected]
    for row, old in zip(rows, expected, strict=True):
        assert row["logFC"] == old["log2fc"] and row["p_val_adj"] == old["qval"]
        assert row["pct_1"] == pytest.approx(100 * old["pct_1"]) and row["Gene"] == old["gene_names"]


def test_current_envelope_differential_expression_applies_the_uis_numeric_advanced_filters(pbmc):
    """AdvancedFilteringModal's filters (logFC > 0, p_val_adj < 0.05, pct_1 > 20 percent), then
    logFC DESC, second page of 10: ``total`` counts every gene passing the filters."""
    request, result = answered(pbmc, "v2_DifferentialExpression_advanced_filters")
    UI_CHECKS["DifferentialExpression"](result, request, truth_of(pbmc))
    _, whole = answered(pbmc, "v1_DifferentialExpression_background")
    passing = [
        row for row in whole["rows"] if row["log2fc"] > 0 and row["qval"] < 0.05 and 100 * row["pct_1"] > 20
    ]
    passing.sort(key=lambda row: -row["log2fc"])
    assert result["total"] == len(passing) > 20
    assert result["data"]["gene_names"] == [row["gene_names"] for row in passing[10:20]]


def test_current_envelope_genes_only_answers_the_first_genes_names_and_ids(pbmc):
    request, result = answered(pbmc, "v2_DifferentialExpression_genesOnly")
    UI_CHECKS["DifferentialExpression"](result, request, truth_of(pbmc))
    _, whole = answered(pbmc, "v1_DifferentialExpression_background")
    top = [row["gene_names"] for row in sorted(whole["rows"], key=lambda row: -row["log2fc"])[:5]]
    assert result == {"total": 5, "data": {"gene_names": top, "gene_id": top}}


def test_sns_era_envelope_differential_expression_keeps_rows_and_total(pbmc):
    request, result = answered(pbmc, "v1_DifferentialExpression_rest_paginated")
    UI_CHECKS["DifferentialExpression"](result, request, truth_of(pbmc))
    assert set(result) == {"rows", "total"} and len(result["rows"]) == 50


def test_the_current_ui_check_refuses_the_sns_era_shape_for_the_current_envelope(pbmc):
    """The check follows the current UI: ``{rows, total}`` (what we answered before) is unreadable."""
    request = materialise(fixtures()["v2_DifferentialExpression"], "pbmc")
    old = run_task(parse_task(request), pbmc)
    with pytest.raises(AssertionError):
        UI_CHECKS["DifferentialExpression"](old, request, truth_of(pbmc))
