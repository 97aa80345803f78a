"""The analysis service end to end on the real local stack.

SQS (FIFO work queue) → the service (`python -m flows.analysis.service`, a subprocess) → SNS → a
test queue subscribed to the topic. Results are compared with scanpy run directly on the same
data. The module uses its own work queue, dead-letter queue and topic, so a service started by
`interlinked up` (which reads the default queue) never interferes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from _cellenics import (
    NOT_CACHEABLE,
    UI_CHECKS,
    check_work_response,
    fixtures,
    materialise,
    read_current_result,
    read_result,
)

from _stack import ROOT, TEST_ENV

pytestmark = pytest.mark.integration

PBMC = "test-pbmc68k"
FUTURE = "2099-12-31 00:00:00"
SERVICE_ENV = {
    "INTERLINKED_ANALYSIS_VISIBILITY_SECONDS": "4",
    "INTERLINKED_ANALYSIS_POLL_SECONDS": "1",
    "INTERLINKED_ANALYSIS_REFRESH_SECONDS": "0.5",
    "INTERLINKED_ANALYSIS_HEARTBEAT_SECONDS": "0.5",
    "INTERLINKED_ANALYSIS_SUMMARY_SECONDS": "2",
    "INTERLINKED_ANALYSIS_PREPARE_POLL_SECONDS": "0.5",
    # Every computed result goes to the S3 cache (by default only slow ones do).
    "INTERLINKED_ANALYSIS_S3_CACHE_MIN_COMPUTE_SECONDS": "0",
    "INTERLINKED_ANALYSIS_WORKERS": "3",
}


# ---- fixtures -----------------------------------------------------------------------------------


class ServiceProcess:
    """The analysis service as its own process group (so it can be killed like a crash)."""

    def __init__(self, directory: Path, queue_url: str, topic_arn: str, env: dict | None = None) -> None:
        self.env = env or {}
        self.status_file = directory / "service-status.json"
        self.log = directory / "service.log"
        self.queue_url, self.topic_arn = queue_url, topic_arn
        self.process: subprocess.Popen | None = None
        self.started_at = datetime.now(UTC).isoformat()

    def start(self, timeout: float = 120) -> ServiceProcess:
        return self.launch().wait_ready(timeout)

    def launch(self) -> ServiceProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flows.analysis.service",
                    "--queue-url",
                    self.queue_url,
                    "--topic-arn",
                    self.topic_arn,
                    "--status-file",
                    str(self.status_file),
                ],
                cwd=ROOT,
                env={**os.environ, **TEST_ENV, **SERVICE_ENV, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 120) -> ServiceProcess:
        from blocks.status import read_status, service_ready

        deadline = time.monotonic() + timeout
        while not service_ready(self.status_file, pid=self.process.pid):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the service did not become ready:\n{self.log_tail()}")
            time.sleep(0.2)
        self.status = read_status(self.status_file)
        return self

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else 0

    def current(self) -> dict:
        from blocks.status import read_status

        return read_status(self.status_file) or {}


@pytest.fixture(scope="module")
def endpoints(stack_handle):
    """A private FIFO work queue (max 5 receives, with a DLQ) and response topic on the test stack."""
    description = stack_handle.ensure_up()
    import boto3

    from flows.analysis.client import Endpoints

    session = boto3.session.Session()
    sqs, sns, s3 = session.client("sqs"), session.client("sns"), session.client("s3")
    tag = uuid.uuid4().hex[:8]
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    dlq = sqs.create_queue(QueueName=f"test-analysis-{tag}-dlq.fifo", Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=f"test-analysis-{tag}.fifo",
        Attributes={
            **fifo,
            "VisibilityTimeout": "4",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        },
    )["QueueUrl"]
    topic = sns.create_topic(Name=f"test-analysis-{tag}")["TopicArn"]
    found = Endpoints(
        queue_url=queue, topic_arn=topic, bucket=description["buckets"]["data"], sqs=sqs, sns=sns, s3=s3
    )
    found.dead_letter_queue_url = dlq
    return found


@pytest.fixture(scope="module")
def listener(endpoints):
    from flows.analysis.client import ResponseListener

    with ResponseListener(endpoints) as listening:
        yield listening


@pytest.fixture(scope="module")
def pbmc(endpoints):
    """pbmc68k_reduced as the ready experiment PBMC (and the same data in memory for scanpy)."""
    import scanpy as sc

    from flows.analysis.experiments import upload_anndata

    adata = sc.datasets.pbmc68k_reduced()
    upload_anndata(endpoints.store(), adata, PBMC)
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture(scope="module")
def prepare_deployment(stack_handle):
    """`prepare-experiment/local` on the test stack (as prefect.yaml declares it)."""
    stack_handle.ensure_up()
    from prefect.client.orchestration import get_client

    from flows.analysis.prepare import prepare_experiment

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("prepare-experiment")
        client.create_deployment(
            flow_id=flow_id,
            name="local",
            entrypoint="flows/analysis/prepare.py:prepare_experiment",
            work_pool_name="local",
            path=str(ROOT),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}],
            parameter_openapi_schema=prepare_experiment.parameters.model_dump(),
        )
    return "prepare-experiment/local"


@pytest.fixture(scope="module")
def service(endpoints, tmp_path_factory, request):
    """The service, started while the experiment, the deployment and a 10x source are set up; a
    PrepareExperiment task is sent at once (it runs in the background while other tests go on)."""
    process = ServiceProcess(tmp_path_factory.mktemp("service"), endpoints.queue_url, endpoints.topic_arn)
    process.launch()
    try:
        request.getfixturevalue("pbmc")
        request.getfixturevalue("prepare_deployment")
        process.prepare_truth = upload_synthetic_source(endpoints, tmp_path_factory.mktemp("source"))
        process.wait_ready()
        request.getfixturevalue("listener")  # subscribed before anything is sent
        process.prepare_task = make_task(
            {
                "name": "PrepareExperiment",
                "sourceBucket": endpoints.bucket,
                "sourceMatrixPath": "test-sources/synthetic/",
                "config": {"minGenes": 20, "nTopGenes": 100, "resolution": 0.5},
            },
            experiment="test-prepared",
        )
        send(endpoints, process.prepare_task)
        yield process
    finally:
        process.stop()


def upload_synthetic_source(endpoints, directory: Path):
    """A small synthetic 10x matrix directory at s3://{data}/test-sources/synthetic/."""
    from analyses import write_10x

    truth = write_10x(
        directory / "matrix", n_cells=400, n_genes=300, n_clusters=3, median_counts=1500, seed=3
    )
    for path in (directory / "matrix").iterdir():
        endpoints.s3.upload_file(str(path), endpoints.bucket, f"test-sources/synthetic/{path.name}")
    return truth


def send(endpoints, task: dict) -> None:
    """Send a task as a web app would (content-based deduplication)."""
    endpoints.sqs.send_message(
        QueueUrl=endpoints.queue_url, MessageBody=json.dumps(task), MessageGroupId=task.get("uuid") or "none"
    )


def make_task(body: dict, experiment: str = PBMC, timeout: str | None = FUTURE, **extra) -> dict:
    task = {
        "uuid": str(uuid.uuid4()),
        "socketId": "test-socket",
        "experimentId": experiment,
        "body": body,
        **extra,
    }
    if timeout is not None:
        task["timeout"] = timeout
    return task


def ask(endpoints, listener, *tasks: dict, timeout: float = 60) -> list[dict]:
    """Send tasks (as a web app would: content-based deduplication) and return their responses."""
    for task in tasks:
        send(endpoints, task)
    responses = listener.wait_for(list(tasks), timeout=timeout)
    missing = [task for task, response in zip(tasks, responses, strict=True) if response is None]
    assert not missing, f"no response to {missing}"
    return responses


def result(response: dict):
    from flows.analysis.client import result_of

    assert not response["response"]["error"], response["response"]
    return result_of(response, response_endpoints())


_ENDPOINTS = {}


def response_endpoints():
    return _ENDPOINTS["endpoints"]


@pytest.fixture(autouse=True, scope="module")
def _remember(endpoints):
    _ENDPOINTS["endpoints"] = endpoints


def responses_to(listener, task: dict) -> list[dict]:
    listener.poll(wait_seconds=0)
    return [response for response in listener.received if response.get("request") == task]


# ---- contract and correctness -------------------------------------------------------------------


def test_seed_gene_expression_shape_and_values(service, endpoints, listener, pbmc):
    sets = [f"louvain-{k}" for k in range(7)]
    task = make_task({"name": "GeneExpression", "cellSets": sets, "genes": ["TGFB1", "CST3"]})
    [response] = ask(endpoints, listener, task)
    assert set(response) == {"type", "request", "response", "results"}
    assert response["type"] == "WorkResponse" and response["request"] == task
    assert response["response"] == {"error": False, "errorCode": None, "userMessage": None, "cacheable": True}
    assert response["results"][0]["type"] == "inline" and len(response["results"]) == 1
    assert response["results"][0]["content-type"] == "application/json"
    assert response["results"][0]["content-encoding"] == "utf-8"
    body = json.loads(response["results"][0]["body"])
    # TGFB1 is not in pbmc68k_reduced: left out (as the real worker does), since CST3 is there.
    assert list(body) == ["CST3"]
    cells = np.flatnonzero(pbmc.obs["louvain"].isin([str(k) for k in range(7)]).to_numpy())
    expected = pbmc.raw[:, "CST3"].X.toarray().ravel()[cells]
    raw = body["CST3"]["rawExpression"]
    values = np.array([np.nan if v is None else v for v in raw["expression"]])
    np.testing.assert_allclose(values[cells], expected, rtol=1e-6)
    np.testing.assert_allclose(raw["mean"], expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(raw["stdev"], expected.std(), rtol=1e-6)
    truncated = body["CST3"]["truncatedExpression"]
    limit = np.quantile(expected, 0.95)
    assert truncated["max"] == pytest.approx(min(limit, expected.max()))
    assert truncated["min"] == pytest.approx(expected.min())


def test_embeddings_match_scanpy(service, endpoints, listener, pbmc):
    import scanpy as sc

    from flows.analysis.experiments import upload_anndata

    # Without a stored PCA the service computes one: it must be scanpy's, up to the sign of each axis.
    bare = pbmc.copy()
    del bare.obsm["X_pca"], bare.varm["PCs"], bare.uns["pca"]
    upload_anndata(endpoints.store(), bare, "test-pbmc-no-pca")
    umap, computed_pca = ask(
        endpoints,
        listener,
        make_task({"name": "GetEmbedding", "type": "umap"}),
        make_task({"name": "GetEmbedding", "type": "pca"}, experiment="test-pbmc-no-pca"),
    )
    np.testing.assert_allclose(result(umap), pbmc.obsm["X_umap"][:, :2], rtol=1e-6)  # stored one, no config
    reference = bare.copy()
    n_comps = min(50, bare.n_obs - 1, int(bare.var["highly_variable"].sum()) - 1)
    sc.pp.pca(reference, n_comps=n_comps, random_state=0)
    ours = np.asarray(result(computed_pca))
    for axis in range(2):
        expected = reference.obsm["X_pca"][:, axis]
        sign = np.sign(np.dot(ours[:, axis], expected))
        np.testing.assert_allclose(sign * ours[:, axis], expected, rtol=1e-3, atol=1e-3)


def test_list_genes_ordering_filtering_paging(service, endpoints, listener, pbmc):
    seed_like = make_task(
        {
            "name": "ListGenes",
            "selectFields": ["highly_variable", "gene_names", "dispersions"],
            "orderBy": "dispersions",
            "orderDirection": "desc",
            "offset": 5,
            "limit": 20,
        }
    )
    filtered = make_task(
        {
            "name": "ListGenes",
            "selectFields": ["gene_names", "means"],
            "geneNamesFilter": "%IN%",
            "orderBy": "gene_names",
        }
    )
    page, matches = (result(response) for response in ask(endpoints, listener, seed_like, filtered))
    var = pbmc.var.assign(gene_names=pbmc.var_names.astype(str))
    expected = var.sort_values("dispersions", ascending=False, kind="stable").iloc[5:25]
    assert page["total"] == pbmc.n_vars
    assert [row["gene_names"] for row in page["rows"]] == expected["gene_names"].tolist()
    assert [row["dispersions"] for row in page["rows"]] == pytest.approx(expected["dispersions"].tolist())
    assert [row["highly_variable"] for row in page["rows"]] == expected["highly_variable"].tolist()
    names = sorted(name for name in pbmc.var_names if "IN" in name.upper())
    assert matches["total"] == len(names) and [row["gene_names"] for row in matches["rows"]] == names


def test_clustering_agrees_with_scanpy(service, endpoints, listener, pbmc):
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    [response] = ask(
        endpoints, listener, make_task({"name": "ClusterCells", "type": "leiden", "resolution": 0.8})
    )
    tree = result(response)
    assert response["response"]["cacheable"] is False  # a new cell set group, as the real worker
    labels = np.empty(pbmc.n_obs, dtype=object)
    for child in tree["children"]:
        labels[child["cellIds"]] = child["key"]
    reference = pbmc.copy()
    sc.tl.leiden(reference, resolution=0.8, random_state=0, n_iterations=2, flavor="igraph", directed=False)
    assert len(tree["children"]) == reference.obs["leiden"].nunique()
    assert adjusted_rand_score(reference.obs["leiden"], labels) == pytest.approx(1.0)


def test_differential_expression_and_markers_match_scanpy(service, endpoints, listener, pbmc):
    import scanpy as sc

    de, markers = ask(
        endpoints,
        listener,
        make_task(
            {
                "name": "DifferentialExpression",
                "cellSet": "louvain-1",
                "compareWith": "background",
                "nGenes": 10,
            }
        ),
        make_task({"name": "MarkerGenes", "groupBy": "louvain", "nGenes": 3}),
    )
    reference = pbmc.copy()
    sc.tl.rank_genes_groups(
        reference, "louvain", groups=["1"], reference="rest", method="wilcoxon", use_raw=True
    )
    table = sc.get.rank_genes_groups_df(reference, group="1").head(10)
    rows = sorted(result(de)["rows"], key=lambda row: -row["zscore"])
    assert [row["gene_names"] for row in rows] == table["names"].tolist()
    np.testing.assert_allclose([row["zscore"] for row in rows], table["scores"], rtol=1e-5)
    np.testing.assert_allclose([row["p_val"] for row in rows], table["pvals"], rtol=1e-4)
    np.testing.assert_allclose([row["qval"] for row in rows], table["pvals_adj"], rtol=1e-4)

    sc.tl.rank_genes_groups(reference, "louvain", method="wilcoxon", use_raw=True, n_genes=3)
    groups = {group["group"]: group for group in result(markers)["groups"]}
    for cluster in reference.obs["louvain"].cat.categories:
        expected = sc.get.rank_genes_groups_df(reference, group=cluster)["names"].head(3).tolist()
        assert [gene["gene"] for gene in groups[cluster]["genes"]] == expected
        assert groups[cluster]["cellSetId"] == f"louvain-{cluster}"


# ---- errors ---------------------------------------------------------------------------------------


ERROR_CASES = {
    "unknown task": ({"name": "MakeCoffee"}, {}, "UNKNOWN_TASK", "MakeCoffee"),
    "missing body field": ({"name": "GeneExpression"}, {}, "INVALID_REQUEST", "'genes' is required"),
    "wrong field type": ({"name": "GeneExpression", "genes": "CST3"}, {}, "INVALID_REQUEST", "string list"),
    "malformed config": (
        {"name": "GetEmbedding", "type": "umap", "config": {"minimumDistance": -1}},
        {},
        "INVALID_REQUEST",
        "config.minimumDistance",
    ),
    "bad pagination": (
        {"name": "ListGenes"},
        {"pagination": {"orderBy": "x", "orderDirection": "UP", "offset": 0, "limit": 5}},
        "INVALID_REQUEST",
        "orderDirection",
    ),
    "bad value": (
        {"name": "ListGenes", "orderDirection": "sideways"},
        {},
        "INVALID_REQUEST",
        "orderDirection",
    ),
    "bad gene field": ({"name": "ListGenes", "selectFields": ["nope"]}, {}, "INVALID_REQUEST", "nope"),
    "missing experiment": (
        {"name": "ListGenes"},
        {"experiment": "no-such-experiment"},
        "EXPERIMENT_NOT_FOUND",
        "no-such-experiment",
    ),
    "bad experiment id": (
        {"name": "ListGenes"},
        {"experiment": "../escape"},
        "INVALID_REQUEST",
        "experimentId",
    ),
    "missing genes": ({"name": "GeneExpression", "genes": ["NOT-A-GENE"]}, {}, "UNKNOWN_GENE", "NOT-A-GENE"),
    "missing cell set": (
        {"name": "GeneExpression", "genes": ["CST3"], "cellSets": ["louvain-99"]},
        {},
        "UNKNOWN_CELL_SET",
        "louvain-99",
    ),
    "unavailable embedding": (
        {"name": "GetEmbedding", "type": "tsne", "computeIfMissing": False},
        {},
        "EMBEDDING_UNAVAILABLE",
        "tsne",
    ),
    "bad timeout": ({"name": "ListGenes"}, {"timeout": "next tuesday"}, "INVALID_REQUEST", "timeout"),
    "source outside the allow-list": (
        {"name": "PrepareExperiment", "sourceBucket": "no-such-bucket-here", "sourceMatrixPath": "x/"},
        {"experiment": "never-prepared"},
        "SOURCE_NOT_ALLOWED",
        "no-such-bucket-here",
    ),
}


def test_every_error_is_a_response_with_a_stable_code(service, endpoints, listener):
    cases = {}
    for name, (body, options, code, words) in ERROR_CASES.items():
        cases[name] = (
            make_task(
                body,
                experiment=options.get("experiment", PBMC),
                timeout=options.get("timeout", FUTURE),
                **{key: value for key, value in options.items() if key not in ("experiment", "timeout")},
            ),
            code,
            words,
        )
    # PrepareExperiment from the data bucket (allowed): a source that is not there, and an experiment
    # id that exists already (not replaced without "overwrite": true).
    for name, body, experiment, code, words in (
        (
            "missing source",
            {"sourceMatrixPath": "no/such/source/"},
            "never-prepared",
            "SOURCE_NOT_FOUND",
            "no/such",
        ),
        (
            "existing experiment",
            {"sourceMatrixPath": "test-sources/synthetic/"},
            PBMC,
            "EXPERIMENT_EXISTS",
            PBMC,
        ),
    ):
        body = {"name": "PrepareExperiment", "sourceBucket": endpoints.bucket, **body}
        cases[name] = (make_task(body, experiment=experiment, timeout=FUTURE), code, words)
    envelope = {"experimentId": PBMC, "body": {"name": "ListGenes"}}  # no uuid
    responses = ask(endpoints, listener, *(task for task, _, _ in cases.values()), envelope)
    for (name, (task, code, words)), response in zip(cases.items(), responses, strict=False):
        details = response["response"]
        assert details["error"] is True and details["errorCode"] == code, (name, details)
        assert words in details["userMessage"], (name, details["userMessage"])
        assert details["cacheable"] is False and response["results"] == [] and response["request"] == task
    assert (
        responses[-1]["response"]["errorCode"] == "INVALID_REQUEST"
        and "uuid" in responses[-1]["response"]["userMessage"]
    )


def test_unreadable_experiment_is_an_error_response(service, endpoints, listener):
    from flows.analysis.protocol import experiment_key

    endpoints.s3.put_object(
        Bucket=endpoints.bucket, Key=experiment_key("test-garbage"), Body=b"not an h5ad file"
    )
    [response] = ask(endpoints, listener, make_task({"name": "ListGenes"}, experiment="test-garbage"))
    assert response["response"]["errorCode"] == "INVALID_EXPERIMENT"


@pytest.mark.parametrize(
    ("timeout", "expired"),
    [
        ("2021-01-01T00:00:00Z", True),
        ("2021-01-01 00:00:00", True),
        ("2099-12-31T00:00:00Z", False),
        (FUTURE, False),
    ],
)
def test_timeouts_in_both_forms(service, endpoints, listener, timeout, expired):
    [response] = ask(endpoints, listener, make_task({"name": "GetEmbedding", "type": "pca"}, timeout=timeout))
    if expired:
        assert response["response"]["errorCode"] == "TASK_EXPIRED" and response["response"]["error"] is True
        assert "2021-01-01T00:00:00Z" in response["response"]["userMessage"]
    else:
        assert response["response"]["error"] is False and len(result(response)) == 700


def test_unparseable_message_goes_to_the_dlq_with_its_reason(service, endpoints, listener):
    endpoints.sqs.send_message(
        QueueUrl=endpoints.queue_url, MessageBody="this is {not json", MessageGroupId="garbage"
    )
    deadline = time.monotonic() + 30
    dead = []
    while not dead and time.monotonic() < deadline:
        dead = endpoints.sqs.receive_message(
            QueueUrl=endpoints.dead_letter_queue_url, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", [])
    assert dead, "the unparseable message did not reach the dead-letter queue"
    assert dead[0]["Body"] == "this is {not json"
    assert "not JSON" in dead[0]["MessageAttributes"]["reason"]["StringValue"]
    # ... and the service keeps answering.
    [response] = ask(endpoints, listener, make_task({"name": "ListGenes", "limit": 1}))
    assert result(response)["total"] == 765


# ---- cache, refresh, large results ------------------------------------------------------------------


def test_result_cache_hits_do_not_recompute(service, endpoints, listener):
    from analyses import ANALYSIS_VERSION
    from flows.analysis.protocol import cache_key, experiment_key

    version = endpoints.s3.head_object(Bucket=endpoints.bucket, Key=experiment_key(PBMC))["ETag"].strip('"')
    # A result already in the S3 cache is served as stored: plant one nobody computed.
    planted_body = {"name": "DifferentialExpression", "cellSet": "louvain-2", "nGenes": 5}
    planted_key = cache_key(
        experiment_id=PBMC, version=version, body=planted_body, analysis_version=ANALYSIS_VERSION
    )
    endpoints.s3.put_object(Bucket=endpoints.bucket, Key=planted_key, Body=b'{"planted": true}')
    body = {"name": "DifferentialExpression", "cellSet": "louvain-3", "nGenes": 5}
    first, second, planted = (make_task(body), make_task(body), make_task(planted_body))
    [first_response] = ask(endpoints, listener, first)
    second_response, planted_response = ask(endpoints, listener, second, planted)
    assert result(planted_response) == {"planted": True}
    assert second_response["results"] == first_response["results"]
    # The computed result was stored under its content address.
    stored_key = cache_key(experiment_id=PBMC, version=version, body=body, analysis_version=ANALYSIS_VERSION)
    deadline = time.monotonic() + 10
    while True:
        try:
            stored = endpoints.s3.get_object(Bucket=endpoints.bucket, Key=stored_key)["Body"].read().decode()
            break
        except endpoints.s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, "the computed result never reached the S3 cache"
            time.sleep(0.2)
    assert stored == first_response["results"][0]["body"]
    recorded = wait_for_events(service, [first["uuid"], second["uuid"], planted["uuid"]])
    assert recorded[first["uuid"]][1]["cache"] == "computed"
    assert recorded[second["uuid"]][1]["cache"] == "memory"
    assert recorded[planted["uuid"]][1]["cache"] == "s3"


def test_changed_experiment_is_reloaded(service, endpoints, listener, pbmc):
    from flows.analysis.experiments import upload_anndata

    renamed = pbmc.copy()
    upload_anndata(endpoints.store(), renamed, "test-refresh")
    body = {"name": "ListGenes", "selectFields": ["gene_names"], "limit": 1}
    [before] = ask(endpoints, listener, make_task(body, experiment="test-refresh"))
    assert result(before)["rows"] == [{"gene_names": "HES4"}]
    renamed.var_names = ["RENAMED-" + name for name in renamed.var_names]
    upload_anndata(endpoints.store(), renamed, "test-refresh")
    deadline = time.monotonic() + 20
    while True:
        [after] = ask(endpoints, listener, make_task(body, experiment="test-refresh"))
        if result(after)["rows"] == [{"gene_names": "RENAMED-HES4"}]:
            break
        assert time.monotonic() < deadline, "the new version of the experiment was never served"
        time.sleep(0.5)


def test_result_too_large_for_sns_goes_to_s3(service, endpoints, listener, pbmc):
    genes = list(pbmc.raw.var_names[:40])
    # An RFC 3339 timeout: the real API's schema (format date-time) refuses the seed's space form.
    task = make_task({"name": "GeneExpression", "genes": genes}, timeout="2099-12-31T00:00:00Z")
    [response] = ask(endpoints, listener, task)
    details = response["response"]
    assert details["error"] is False and len(json.dumps(response)) < 4096
    [item] = response["results"]  # the real worker's form: an s3-path item naming bucket/key
    assert item["type"] == "s3-path" and item["content-type"] == "application/json"
    assert item["body"].startswith(f"{endpoints.bucket}/analysis-cache/{PBMC}/")
    check_work_response(response)
    body = read_result(response, endpoints.s3)  # as the real API fetched it
    assert sorted(body) == sorted(genes)
    assert all(len(body[gene]["rawExpression"]["expression"]) == pbmc.n_obs for gene in genes)


# ---- real Cellenics clients -----------------------------------------------------------------------


def _truth(adata) -> dict:
    return {
        "n_cells": adata.n_obs,
        "n_cell_ids": adata.n_obs,
        "gene_names": [str(name) for name in adata.var_names],
    }


def test_real_cellenics_v1_requests_get_responses_the_real_api_and_ui_accept(
    service, endpoints, listener, pbmc
):
    """Every SNS-era fixture (tests/fixtures/cellenics/requests/v1_*.json, shaped as the real UI
    sent them) through the running service; each response passes our schema of the real API's
    WorkResponse.v1.yaml and the checks of what the real UI reads (tests/_cellenics.py)."""
    named = fixtures("v1")
    requests = {name: materialise(fixture, PBMC) for name, fixture in named.items()}
    # UMAP with the UI's config is computed (numba compiles on the first call): a long timeout.
    responses = ask(endpoints, listener, *requests.values(), timeout=600)
    truth = _truth(pbmc)
    for (name, request), response in zip(requests.items(), responses, strict=True):
        assert response["response"]["error"] is False, (name, response["response"])
        check_work_response(response)
        task = request["body"]["name"]
        assert response["response"]["cacheable"] is (task not in NOT_CACHEABLE), name
        UI_CHECKS[task](read_result(response, endpoints.s3), request, truth)


def test_real_cellenics_v2_requests_store_gzip_results_under_the_etag(service, endpoints, listener, pbmc):
    """The current envelope (ETag, requestProps): the result is stored gzip-compressed under the
    ETag with the experimentId/requestType tags, the notification carries a signedUrl the current UI
    downloads; asking again with the same ETag answers from S3 without computing."""
    named = fixtures("v2")
    requests = {name: materialise(fixture, PBMC) for name, fixture in named.items()}
    responses = ask(endpoints, listener, *requests.values(), timeout=600)
    truth = _truth(pbmc)
    for (name, request), response in zip(requests.items(), responses, strict=True):
        assert response["response"]["error"] is False, (name, response["response"])
        check_work_response(response, generation="v2")
        task = request["body"]["name"]
        UI_CHECKS[task](read_current_result(response), request, truth)
        if task in NOT_CACHEABLE:
            assert response["response"]["cacheable"] is False
            continue
        key = f"worker-results/{request['ETag']}"
        tags = endpoints.s3.get_object_tagging(Bucket=endpoints.bucket, Key=key)["TagSet"]
        assert {tag["Key"]: tag["Value"] for tag in tags} == {"experimentId": PBMC, "requestType": task}
    # The same ETag again (a new request object, e.g. another browser tab): answered from S3.
    again = dict(requests["v2_GetNUmis"], requestProps={"cacheUniquenessKey": None, "tab": 2})
    [response] = ask(endpoints, listener, again)
    assert read_current_result(response) == read_current_result(
        responses[list(requests).index("v2_GetNUmis")]
    )
    assert recorded_caches(service, again["ETag"]).count("s3-etag") == 1


def test_processed_file_download_in_the_sns_era_envelope_names_the_experiments_h5ad(
    service, endpoints, listener, pbmc
):
    """DownloadAnnotSeuratObject (the real UI's processed-matrix download) in the SNS-era envelope:
    an s3-path item naming the experiment's processed .h5ad itself, nothing copied or computed."""
    body = {"name": "DownloadAnnotSeuratObject", "embeddingMethod": "umap", "isObj2s": False}
    task = make_task(body, timeout="2099-12-31T00:00:00Z")  # RFC 3339, as the real API requires
    [response] = ask(endpoints, listener, task)
    assert response["response"]["error"] is False, response["response"]
    check_work_response(response)
    [item] = response["results"]
    assert item["body"] == f"{endpoints.bucket}/experiments/{PBMC}/processed.h5ad"
    UI_CHECKS["DownloadAnnotSeuratObject"](read_result(response, endpoints.s3), task, _truth(pbmc))


# ---- Prefect ---------------------------------------------------------------------------------------


def prefect_events(client, event_filter: dict) -> list[dict]:
    """Every event matching the filter (all pages)."""
    page = client.request("POST", "/events/filter", json={"filter": event_filter, "limit": 50}).json()
    events = list(page["events"])
    while page.get("next_page"):
        page = client.request("GET", page["next_page"]).json()
        events += page["events"]
    return events


def wait_for_events(service, uuids: list[str], timeout: float = 20) -> dict[str, tuple[dict, dict]]:
    """Where the Prefect server recorded these requests: ``uuid -> (batch event, request entry)``."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    found: dict[str, tuple[dict, dict]] = {}
    with get_client(sync_client=True) as client:
        while True:
            for event in prefect_events(
                client,
                {
                    "event": {"name": ["interlinked.analysis.requests"]},
                    "occurred": {"since": service.started_at},
                },
            ):
                for entry in event["payload"]["requests"]:
                    if entry.get("uuid") in uuids:
                        found[entry["uuid"]] = (event, entry)
            if set(uuids) <= set(found) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert set(uuids) <= set(found), f"no Prefect event records {set(uuids) - set(found)}"
    return found


def recorded_caches(service, request_id: str, timeout: float = 20) -> list[str]:
    """Where the results of every recorded request with this id (uuid or ETag) came from."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            caches = [
                entry.get("cache")
                for event in prefect_events(
                    client,
                    {
                        "event": {"name": ["interlinked.analysis.requests"]},
                        "occurred": {"since": service.started_at},
                    },
                )
                for entry in event["payload"]["requests"]
                if entry.get("uuid") == request_id
            ]
            if len(caches) >= 2 or time.monotonic() > deadline:
                return caches
            time.sleep(0.5)


def test_every_request_is_recorded_in_prefect_events_of_the_service_run(service, endpoints, listener):
    tasks = [make_task({"name": "ListGenes", "offset": k, "limit": 2}) for k in range(5)]
    tasks.append(make_task({"name": "Nope"}))
    ask(endpoints, listener, *tasks)
    recorded = wait_for_events(service, [task["uuid"] for task in tasks])
    run_id = service.current()["flow_run_id"]
    for task in tasks:
        event, entry = recorded[task["uuid"]]
        related = {item["prefect.resource.id"] for item in event["related"]}
        assert f"prefect.flow-run.{run_id}" in related and f"interlinked.experiment.{PBMC}" in related
        assert entry["task"] == task["body"]["name"] and entry["messageId"] and "serviceMs" in entry
    assert recorded[tasks[-1]["uuid"]][1]["errorCode"] == "UNKNOWN_TASK"

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        # A failure is also an event of its own, labelled with the request (for alerting).
        failures = prefect_events(
            client,
            {
                "event": {"name": ["interlinked.analysis.request.failed"]},
                "resource": {"labels": {"interlinked.uuid": [tasks[-1]["uuid"]]}},
                "occurred": {"since": service.started_at},
            },
        )
        assert [event["payload"]["errorCode"] for event in failures] == ["UNKNOWN_TASK"]
        run = client.read_flow_run(run_id)
        assert run.state.is_running() and run.flow_id is not None
        deadline = time.monotonic() + 15
        while True:
            artifacts = client.request(
                "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
            ).json()
            if any(artifact["key"] == "analysis-service-summary" for artifact in artifacts):
                break
            assert time.monotonic() < deadline, "no summary artifact on the service's flow run"
            time.sleep(0.5)


# ---- PrepareExperiment --------------------------------------------------------------------------------


def test_prepare_experiment_then_query_it(service, endpoints, listener):
    task = service.prepare_task
    [response] = listener.wait_for([task], timeout=240)
    assert response is not None, f"no PrepareExperiment response:\n{service.log_tail()}"
    summary = result(response)
    assert summary["experimentId"] == "test-prepared" and summary["cells"] > 300
    assert summary["location"].endswith("experiments/test-prepared/processed.h5ad")
    assert {"pca", "umap"} <= set(summary["embeddings"])
    marker = service.prepare_truth.marker_genes[0][0]
    expression, embedding = ask(
        endpoints,
        listener,
        make_task(
            {"name": "GeneExpression", "genes": [marker], "cellSets": ["leiden-0"]},
            experiment="test-prepared",
        ),
        make_task({"name": "GetEmbedding", "type": "umap"}, experiment="test-prepared"),
    )
    values = result(expression)[marker]["rawExpression"]["expression"]
    assert len(values) == summary["cells"] and any(value for value in values)
    assert len(result(embedding)) == summary["cells"]
    # Exactly one response, and the message is deleted once the run's response is published.
    deadline = time.monotonic() + 10
    while service.current().get("prepareRuns", 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert service.current()["prepareRuns"] == 0
    assert len(responses_to(listener, task)) == 1
    _, entry = wait_for_events(service, [task["uuid"]])[task["uuid"]]
    assert entry["task"] == "PrepareExperiment" and "errorCode" not in entry and entry["flowRunId"]


# ---- the CLI ---------------------------------------------------------------------------------------


def test_cli_import_and_request(service, endpoints, tmp_path, capsys, monkeypatch, pbmc):
    import argparse

    from interlinked.commands import register

    parser = argparse.ArgumentParser(prog="interlinked")
    register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return args.func(args)

    path = tmp_path / "small.h5ad"
    pbmc[:50].copy().write_h5ad(path)
    assert run("experiments", "import", str(path), "--id", "test-cli", "--json") == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["cells"] == 50 and imported["uri"].endswith("experiments/test-cli/processed.h5ad")
    assert run("experiments", "import", str(tmp_path / "missing.h5ad"), "--id", "x") == 2

    # `request` talks to the queue and topic of the blocks; point them at this module's service.
    from flows.analysis import client as analysis_client

    monkeypatch.setattr(
        analysis_client.Endpoints,
        "from_blocks",
        classmethod(lambda cls, **_: endpoints),
    )
    task_file = tmp_path / "task.json"
    task_file.write_text(
        json.dumps(
            {"experimentId": "test-cli", "timeout": FUTURE, "body": {"name": "GetEmbedding", "type": "umap"}}
        )
    )
    assert run("request", str(task_file), "--wait", "--timeout", "60") == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(json.loads(printed["results"][0]["body"])) == 50 and printed["request"]["uuid"]
    task_file.write_text(
        json.dumps(
            {"experimentId": "test-cli", "timeout": "2021-01-01T00:00:00Z", "body": {"name": "ListGenes"}}
        )
    )
    assert run("request", str(task_file), "--wait", "--timeout", "60") == 1
    captured = capsys.readouterr()
    assert (
        json.loads(captured.out)["response"]["errorCode"] == "TASK_EXPIRED" and "TASK_EXPIRED" in captured.err
    )
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert run("request", str(tmp_path / "bad.json")) == 2


# ---- crashes and redelivery ---------------------------------------------------------------------------


def test_killed_mid_request_answers_exactly_once_after_restart(service, endpoints, listener, pbmc):
    from flows.analysis.experiments import upload_anndata
    from flows.analysis.protocol import response_record_key

    # t-SNE is not stored: computing it takes a few seconds, the time to kill the service.
    upload_anndata(endpoints.store(), pbmc[:300].copy(), "test-pbmc-300")
    slow = make_task({"name": "GetEmbedding", "type": "tsne"}, experiment="test-pbmc-300")
    endpoints.sqs.send_message(
        QueueUrl=endpoints.queue_url, MessageBody=json.dumps(slow), MessageGroupId=slow["uuid"]
    )
    deadline = time.monotonic() + 20
    while service.current().get("inFlight", 0) < 1:
        assert time.monotonic() < deadline, "the service never picked the request up"
        time.sleep(0.1)
    killed_run = service.current()["flow_run_id"]
    service.kill()
    assert responses_to(listener, slow) == []

    # A message whose response was already published by a previous instance (that died before
    # deleting it) must not be answered again.
    answered = make_task({"name": "ListGenes", "limit": 3})
    endpoints.sqs.send_message(
        QueueUrl=endpoints.queue_url, MessageBody=json.dumps(answered), MessageGroupId=answered["uuid"]
    )
    taken = []
    while not taken:
        taken = [
            message
            for message in endpoints.sqs.receive_message(
                QueueUrl=endpoints.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=2
            ).get("Messages", [])
            if json.loads(message["Body"]) == answered
        ]
    endpoints.s3.put_object(
        Bucket=endpoints.bucket,
        Key=response_record_key(taken[0]["MessageId"]),
        Body=b'{"published": "earlier"}',
    )

    service.start()
    # t-SNE of 300 cells takes about a minute on a loaded 2-core machine (main's code too).
    [response] = listener.wait_for([slow], timeout=240)
    assert response is not None and len(result(response)) == 300
    time.sleep(5)  # longer than the visibility timeout: a second answer would have come by now
    assert len(responses_to(listener, slow)) == 1
    assert responses_to(listener, answered) == []
    depth = endpoints.sqs.get_queue_attributes(
        QueueUrl=endpoints.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert depth == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_flow_run(killed_run).state.is_crashed()


def test_two_services_on_one_queue_answer_once_even_when_one_dies_after_publishing(
    service, endpoints, listener, tmp_path_factory
):
    """Instance A publishes its answer and is killed before deleting the message; instance B (its
    own host: another journal file) receives the redelivery and must not answer it again. Then both
    instances share the queue and every request gets exactly one answer."""
    doomed = ServiceProcess(
        tmp_path_factory.mktemp("service-a"),
        endpoints.queue_url,
        endpoints.topic_arn,
        env={"INTERLINKED_ANALYSIS_FAULT_AFTER": "record"},
    )
    task = make_task({"name": "ListGenes", "limit": 2})
    os.killpg(service.process.pid, signal.SIGSTOP)  # only A receives while B is frozen
    try:
        doomed.start()
        send(endpoints, task)
        assert doomed.process.wait(timeout=60) == -signal.SIGKILL, doomed.log_tail()
    finally:
        os.killpg(service.process.pid, signal.SIGCONT)
    [first] = listener.wait_for([task], timeout=30)
    assert first is not None
    # B receives the redelivery once A's visibility (4 s) lapses, finds the shared record and deletes
    # the message without answering (a "duplicate" event for the request says so).
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while True:
            answers = len(responses_to(listener, task))
            assert answers == 1, f"the request was answered {answers} times"
            duplicates = prefect_events(
                client,
                {
                    "event": {"name": ["interlinked.analysis.request.duplicate"]},
                    "resource": {"labels": {"interlinked.uuid": [task["uuid"]]}},
                    "occurred": {"since": doomed.started_at},
                },
            )
            if duplicates:
                break
            assert time.monotonic() < deadline, "the redelivered message was never recognised as answered"
            time.sleep(0.5)
    time.sleep(5)  # longer than the visibility timeout: a second answer would have come by now
    assert len(responses_to(listener, task)) == 1

    # Two live instances on one queue: each request answered exactly once.
    other = ServiceProcess(tmp_path_factory.mktemp("service-b"), endpoints.queue_url, endpoints.topic_arn)
    other.start()
    try:
        tasks = [make_task({"name": "ListGenes", "limit": 1}) for _ in range(20)]
        for each in tasks:
            send(endpoints, each)
        assert all(response is not None for response in listener.wait_for(tasks, timeout=120))
        time.sleep(5)
        assert [len(responses_to(listener, each)) for each in tasks] == [1] * 20
    finally:
        assert other.stop() == 0, other.log_tail()


def test_sigterm_stops_gracefully_and_completes_the_run(service):
    """(Last: it stops the module's service.)"""
    run_id = service.current()["flow_run_id"]
    assert service.stop() == 0
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.is_completed()
