"""Parts of the analysis service that need no server: task handlers, memory layout, caches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

from flows.analysis.experiments import matrix_bytes, prepare_in_memory
from flows.analysis.protocol import (
    DOWNLOAD_PROCESSED,
    PREPARE_EXPERIMENT,
    TASK_FIELDS,
    ServiceError,
    parse_task,
)
from flows.analysis.service import Journal, MemoryResults, SingleFlight
from flows.analysis.tasks import IGNORED_FIELDS, TASKS, default_grouping, run_task


@pytest.fixture(scope="module")
def pbmc():
    import scanpy as sc

    return prepare_in_memory(sc.datasets.pbmc68k_reduced(), "pbmc", "v1")


def _run(experiment, body):
    return run_task(parse_task({"uuid": "u", "experimentId": "pbmc", "body": body}), experiment)


def test_handlers_map_camel_case_fields(pbmc):
    page = _run(
        pbmc, {"name": "ListGenes", "selectFields": ["gene_names"], "orderBy": "gene_names", "limit": 3}
    )
    assert (
        page["total"] == 765
        and [row["gene_names"] for row in page["rows"]] == sorted(pbmc.adata.var_names)[:3]
    )
    embedding = _run(pbmc, {"name": "GetEmbedding", "type": "umap"})
    assert np.allclose(embedding, pbmc.adata.obsm["X_umap"][:, :2])
    expression = _run(pbmc, {"name": "GeneExpression", "genes": ["CST3", "NOPE"], "cellSets": ["louvain-0"]})
    assert set(expression) == {"CST3"}  # unknown genes are left out, as the real worker does
    values = expression["CST3"]["rawExpression"]["expression"]
    in_set = (pbmc.adata.obs["louvain"] == "0").to_numpy()
    assert len(values) == pbmc.adata.n_obs and sum(v is not None for v in values) == in_set.sum() == 130


def test_every_body_field_of_an_interactive_task_maps_to_a_parameter():
    assert set(TASKS) == set(TASK_FIELDS) - {
        PREPARE_EXPERIMENT,
        DOWNLOAD_PROCESSED,
    }  # answered by the service
    for name, spec in TASKS.items():
        ignored = set(IGNORED_FIELDS.get(name, {}))
        assert set(spec.parameters) | ignored == set(TASK_FIELDS[name]), name


def test_results_have_the_shapes_the_real_ui_reads(pbmc):
    clusters = _run(
        pbmc,
        {"name": "ClusterCells", "cellSetName": "Louvain clusters", "type": "louvain", "cellSetKey": "louvain",
         "config": {"resolution": 0.5}},
    )  # fmt: skip
    assert {key: clusters[key] for key in ("key", "name", "rootNode", "type")} == {
        "key": "louvain", "name": "Louvain clusters", "rootNode": True, "type": "cellSets"
    }  # fmt: skip
    child = clusters["children"][0]
    assert set(child) == {"key", "name", "rootNode", "type", "color", "cellIds"}
    assert sorted(i for c in clusters["children"] for i in c["cellIds"]) == list(range(pbmc.adata.n_obs))
    de = _run(
        pbmc,
        {"name": "DifferentialExpression", "experimentId": "pbmc", "cellSet": "louvain-1", "compareWith": "rest",
         "basis": "all", "comparisonType": "within", "maxNum": 2},
    )  # fmt: skip
    assert set(de) == {"rows", "total"} and de["total"] == 2
    assert {"gene_names", "zscore", "abszscore", "log2fc", "qval"} <= set(de["rows"][0])
    markers = _run(pbmc, {"name": "MarkerGenes", "nGenes": 1})
    assert markers["groupBy"] == "louvain"
    assert set(markers["groups"][0]) == {"group", "cellSetId", "cellCount", "genes"}
    expression = _run(pbmc, {"name": "GeneExpression", "genes": ["CST3"]})
    assert set(expression) == {"CST3"}
    assert set(expression["CST3"]) == {"rawExpression", "truncatedExpression"}
    assert set(expression["CST3"]["rawExpression"]) == {"mean", "stdev", "expression"}
    assert set(expression["CST3"]["truncatedExpression"]) == {"min", "max", "expression"}
    # Keys that are data (.var columns chosen by the request) keep their own spelling.
    page = _run(pbmc, {"name": "ListGenes", "selectFields": ["gene_names", "n_counts"], "limit": 1})
    assert set(page["rows"][0]) == {"gene_names", "n_counts"}


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"name": "GeneExpression", "genes": []}, "INVALID_REQUEST", "at least one gene"),
        ({"name": "GeneExpression", "genes": ["NOPE", "ALSO-NOPE"]}, "UNKNOWN_GENE", "'NOPE', 'ALSO-NOPE'"),
        (
            {"name": "GeneExpression", "genes": ["CST3"], "cellSets": ["phase-X"]},
            "UNKNOWN_CELL_SET",
            "phase-X",
        ),
        ({"name": "ListGenes", "orderDirection": "up"}, "INVALID_REQUEST", "invalid orderDirection"),
        ({"name": "GetEmbedding", "type": "mds"}, "INVALID_REQUEST", "invalid type"),
        (
            {"name": "GetEmbedding", "type": "tsne", "computeIfMissing": False},
            "EMBEDDING_UNAVAILABLE",
            "tsne",
        ),
        ({"name": "ClusterCells", "type": "kmeans"}, "INVALID_REQUEST", "invalid type"),
        (
            {"name": "DifferentialExpression", "cellSet": "louvain-0", "compareWith": ["nope-1"]},
            "UNKNOWN_CELL_SET",
            "nope-1",
        ),
        ({"name": "MarkerGenes", "groupBy": "n_genes_nope"}, "INVALID_REQUEST", "groupBy"),
        ({"name": "MarkerGenes", "method": "magic"}, "INVALID_REQUEST", "invalid method"),
        (
            {"name": "DifferentialExpression", "cellSet": "louvain-0", "correctionMethod": "none"},
            "INVALID_REQUEST",
            "invalid correctionMethod",
        ),
    ],
)
def test_analysis_errors_keep_their_codes(pbmc, body, code, words):
    with pytest.raises(ServiceError) as caught:
        _run(pbmc, body)
    assert caught.value.code == code and words in caught.value.message


def test_marker_genes_default_to_a_clustering(pbmc):
    assert default_grouping(pbmc.adata) == "louvain"


def test_one_copy_of_the_matrix_when_x_equals_raw():
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    counts = sp.random(200, 50, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    adata = ad.AnnData(X=counts.copy(), obs=pd.DataFrame(index=[f"c{i}" for i in range(200)]))
    adata.var_names = [f"g{i}" for i in range(50)]
    adata.raw = adata.copy()  # after an .h5ad round trip .X and .raw.X are separate equal copies
    loaded = prepare_in_memory(adata, "e", "v")
    assert loaded.index.matrix.format == "csc"
    assert np.shares_memory(loaded.adata.X.data, loaded.index.matrix.data)
    assert np.shares_memory(loaded.adata.raw.X.data, loaded.index.matrix.data)
    assert loaded.nbytes == matrix_bytes(loaded.index.matrix)
    assert np.allclose(loaded.adata.X.toarray(), counts.toarray())


def test_single_flight_runs_once_for_concurrent_callers():
    calls = []
    flight = SingleFlight()

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(flight.do("k", slow))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and sorted(leader for _, leader in results) == [False, False, False, True]
    assert {value for value, _ in results} == {"value"}


def test_memory_results_stay_within_budget():
    cache = MemoryResults(budget=10)
    cache.put("a", "12345")
    cache.put("b", "12345")
    assert cache.get("a") == "12345"  # now most recently used
    cache.put("c", "123")
    assert cache.get("b") is None and cache.get("a") == "12345" and cache.get("c") == "123"
    cache.put("huge", "x" * 11)
    assert cache.get("huge") is None and cache.size == (2, 8)


def test_journal_survives_a_restart_and_stays_bounded(tmp_path):
    path = tmp_path / "answered.journal"
    journal = Journal(path, keep=3)
    for message_id in ("m1", "m2"):
        journal.add(message_id)
    # No close(): a killed process never gets to; each id was already written.
    again = Journal(path, keep=3)
    assert "m1" in again and "m2" in again and "m3" not in again
    for index in range(3, 10):
        again.add(f"m{index}")
    again.close()
    reopened = Journal(path, keep=3)
    assert "m9" in reopened and "m1" not in reopened
    assert len(path.read_text().splitlines()) <= 6
    assert "anything" not in Journal(None)


def test_the_recorder_survives_a_failing_status_write(tmp_path):
    """A status write that raises (a psutil read of /proc once did, under load) must not end the
    recorder thread: later heartbeats still land and counting goes on."""
    import time

    from blocks.status import read_status
    from flows.analysis.service import Recorder, ServiceSettings

    calls = {"n": 0}

    def ready() -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise AttributeError("'NoneType' object has no attribute 'rfind'")
        return True

    status = tmp_path / "status.json"
    recorder = Recorder(
        ServiceSettings(status_file=status, heartbeat_seconds=0.05, summary_seconds=3600),
        gauges=lambda: {},
        ready=ready,
    )
    recorder.start()
    try:
        deadline = time.monotonic() + 20
        while not (status.exists() and (read_status(status) or {}).get("ready")):
            assert recorder._thread.is_alive(), "the recorder thread died"
            assert time.monotonic() < deadline, "no heartbeat after the failing one"
            time.sleep(0.05)
        assert recorder.emit_failures == 1
    finally:
        recorder.stop()
