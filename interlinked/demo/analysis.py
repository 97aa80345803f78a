"""Demo section of the analysis service (seed 001): the seed's four sample tasks, and a bit more.

Imports pbmc68k_reduced (ships with scanpy) as a ready experiment, writes a synthetic 10x count
matrix to S3 for PrepareExperiment, sends the seed's sample tasks (``experimentId``,
``sourceBucket`` and ``sourceMatrixPath`` adapted; the two with a 2021 ``timeout`` must come back
``TASK_EXPIRED``), then the same two with a future timeout and a query on the freshly prepared
experiment, and reports what came back.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from interlinked.demo.rows import Row, say
from interlinked.settings import Settings

EXPERIMENT_ID = "pbmc68k_reduced"
PREPARED_ID = "synthetic-3k"
SOURCE_PREFIX = "source-matrices/synthetic-3k/"
SEED_UUID = "509520fe-d329-437d-8752-b5868ad59425"
SOCKET_ID = "Y1poEygzBfrDmIWpAAAA"


def seed_tasks(bucket: str) -> list[tuple[str, dict, str]]:
    """The seed README's four sample tasks, adapted to this stack: (title, task, expected)."""
    common = {"uuid": SEED_UUID, "socketId": SOCKET_ID}
    return [
        (
            "GetEmbedding (seed, 2021 timeout)",
            {**common, "experimentId": EXPERIMENT_ID, "timeout": "2021-01-01T00:00:00Z",
             "body": {"name": "GetEmbedding", "type": "pca"}},
            "TASK_EXPIRED",
        ),
        (
            "ListGenes (seed, 2021 timeout)",
            {**common, "experimentId": EXPERIMENT_ID, "timeout": "2021-01-01T00:00:00Z",
             "body": {"name": "ListGenes", "selectFields": ["highly_variable", "gene_names", "dispersions"],
                      "orderBy": "dispersions", "orderDirection": "desc", "offset": 0, "limit": 20}},
            "TASK_EXPIRED",
        ),
        (
            "GeneExpression (seed)",
            {**common, "experimentId": EXPERIMENT_ID, "timeout": "2099-12-31 00:00:00",
             "body": {"name": "GeneExpression",
                      "cellSets": ["louvain-0", "louvain-1", "louvain-2", "louvain-3", "louvain-4", "louvain-5", "louvain-6"],
                      "genes": ["TGFB1", "CST3"]}},
            "OK",
        ),
        (
            "PrepareExperiment (seed)",
            {**common, "experimentId": PREPARED_ID, "timeout": "2099-12-31 00:00:00",
             # + overwrite: the stack keeps its data, and a second `make demo` prepares it again.
             "body": {"name": "PrepareExperiment", "sourceBucket": bucket, "sourceMatrixPath": SOURCE_PREFIX,
                      "overwrite": True}},
            "OK",
        ),
    ]  # fmt: skip


def fresh_tasks() -> list[tuple[str, dict, str]]:
    """The two expired seed tasks again, with a timeout that has not passed."""
    return [
        (
            "GetEmbedding (fresh timeout)",
            {"uuid": SEED_UUID, "socketId": SOCKET_ID, "experimentId": EXPERIMENT_ID,
             "timeout": "2099-12-31 00:00:00", "body": {"name": "GetEmbedding", "type": "pca"}},
            "OK",
        ),
        (
            "ListGenes (fresh timeout)",
            {"uuid": SEED_UUID, "socketId": SOCKET_ID, "experimentId": EXPERIMENT_ID,
             "timeout": "2099-12-31 00:00:00",
             "body": {"name": "ListGenes", "selectFields": ["highly_variable", "gene_names", "dispersions"],
                      "orderBy": "dispersions", "orderDirection": "desc", "offset": 0, "limit": 20}},
            "OK",
        ),
    ]  # fmt: skip


def _describe(task: dict, response: dict, endpoints) -> str:
    from flows.analysis.client import result_of

    details = response["response"]
    if details["error"]:
        return f"{details['errorCode']}: {details['userMessage']}"
    value = result_of(response, endpoints)
    name = task["body"]["name"]
    if name == "GetEmbedding":
        return f"{len(value)} cells, first at ({value[0][0]:.2f}, {value[0][1]:.2f})"
    if name == "ListGenes":
        return f"{value['total']} genes; top: " + ", ".join(row["gene_names"] for row in value["rows"][:5])
    if name == "GeneExpression":  # Cellenics' shape: {gene: {rawExpression, truncatedExpression}}
        parts = []
        for gene, item in value.items():
            raw = item["rawExpression"]
            cells = sum(v is not None for v in raw["expression"])
            parts.append(f"{gene} mean {raw['mean']:.3f} over {cells} cells")
        missing = [gene for gene in task["body"]["genes"] if gene.upper() not in {g.upper() for g in value}]
        if missing:
            parts.append(f"not in the data: {', '.join(missing)}")
        return "; ".join(parts)
    if name == "PrepareExperiment":
        return f"{value['cells']} cells x {value['genes']} genes, {value['clusters']} clusters in {value['seconds']} s"
    return json.dumps(value)[:100]


def _row(title: str, task: dict, expected: str, response: dict | None, seconds: float, endpoints) -> Row:
    if response is None:
        return Row(title, "analysis task", expected, "NO RESPONSE", seconds,
                   "no WorkResponse in time: is the analysis service running? (interlinked up)")  # fmt: skip
    details = response["response"]
    state = details["errorCode"] if details["error"] else "OK"
    try:
        detail = _describe(task, response, endpoints)
    except Exception as error:  # a demo line must never hide the others
        detail = f"(could not summarise: {error})"
    where = ""
    results = response.get("results") or []
    if results and results[0].get("type") == "s3-path":
        where = f"s3://{results[0]['body']}"
    elif task["body"]["name"] == "PrepareExperiment" and not details["error"]:
        where = json.loads(response["results"][0]["body"])["location"]
    return Row(title, "analysis task", expected, state, seconds, detail, where)


def _upload_source(endpoints) -> None:
    """A realistic synthetic 10x v3 matrix (3,000 cells x 2,000 genes) for PrepareExperiment."""
    from analyses import write_10x

    with tempfile.TemporaryDirectory(prefix="interlinked-demo-10x-") as directory:
        write_10x(Path(directory), n_cells=3000, n_genes=2000, n_clusters=6, median_counts=2500, seed=1)
        store = endpoints.store()
        for path in Path(directory).iterdir():
            store.upload(path, SOURCE_PREFIX + path.name)


def _send_and_wait(endpoints, batch: list[tuple[str, dict, str]], timeout: float):
    from flows.analysis.client import ResponseListener, send_task

    with ResponseListener(endpoints, uuids=[task["uuid"] for _, task, _ in batch]) as listener:
        started = {}
        for title, task, _ in batch:
            send_task(endpoints, task)
            started[title] = time.monotonic()
        pending = {title: task for title, task, _ in batch}
        arrived: dict[str, tuple[dict, float]] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            listener.poll(wait_seconds=1)
            for response in listener.received:
                for title, task in list(pending.items()):
                    if response.get("request") == task:
                        arrived[title] = (response, time.monotonic() - started[title])
                        del pending[title]
        return [
            (title, task, expected, *arrived.get(title, (None, timeout))) for title, task, expected in batch
        ]


def section(settings: Settings, stack: dict) -> list[Row]:
    """Import pbmc68k_reduced, send the seed's tasks (and a few more) and report the responses."""
    from flows.analysis.client import Endpoints, import_example

    endpoints = Endpoints.from_blocks()
    imported = import_example("pbmc68k_reduced", EXPERIMENT_ID, endpoints=endpoints)
    say(
        f"  imported {imported.experiment_id}: {imported.cells} cells x {imported.genes} genes at {imported.uri}"
    )
    _upload_source(endpoints)
    say(f"  wrote a synthetic 10x matrix to s3://{endpoints.bucket}/{SOURCE_PREFIX}")

    rows: list[Row] = []
    # The four seed tasks at once (PrepareExperiment runs as a flow run meanwhile), then two fresh ones.
    batch = seed_tasks(endpoints.bucket) + fresh_tasks()
    for title, task, expected, response, seconds in _send_and_wait(endpoints, batch, timeout=600):
        rows.append(_row(title, task, expected, response, seconds, endpoints))
        say(f"  {title}: {rows[-1].state}")

    prepared = next((row for row in rows if row.what.startswith("PrepareExperiment")), None)
    if prepared is not None and prepared.state == "OK":
        follow_up = [
            (
                "GeneExpression on the prepared experiment",
                {"uuid": f"{SEED_UUID}-follow-up", "socketId": SOCKET_ID, "experimentId": PREPARED_ID,
                 "timeout": "2099-12-31 00:00:00",
                 "body": {"name": "GeneExpression", "genes": ["GENE1", "MT-CO1"], "cellSets": ["leiden-0"]}},
                "OK",
            )
        ]  # fmt: skip
        for title, task, expected, response, seconds in _send_and_wait(endpoints, follow_up, timeout=120):
            rows.append(_row(title, task, expected, response, seconds, endpoints))
    return rows
