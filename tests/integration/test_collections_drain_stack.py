"""Task collections drained by the `drain-collection` flow on the local stack: `interlinked tasks
drain --wait` starts runs of `drain-collection/local` on the warm pool, the tasks' logs land in the
data bucket, the runs keep their progress and status table artifacts, and cancelling a run (the
worker's SIGTERM) gives its tasks back to todo at once."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from _stack import run_cli

pytestmark = pytest.mark.integration


def _status(collection: str) -> dict:
    result = run_cli("tasks", "status", collection, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["collections"][collection]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached within {timeout} s")


def _add(collection: str, tasks: list[dict], tmp_path) -> None:
    path = tmp_path / f"{collection}.jsonl"
    path.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    added = run_cli("tasks", "add", collection, "--file", str(path), "--json")
    assert added.returncode == 0, added.stderr


def test_two_drains_run_a_collection_with_logs_and_artifacts(stack, aws, tmp_path):
    collection = f"it-{uuid.uuid4().hex[:8]}"
    tasks = [
        {"id": f"t{i}", "command": 'echo "out $TASK_ID of $COLLECTION"', "attributes": {"sample": f"S{i}"}}
        for i in range(40)
    ]
    tasks += [{"id": "bad", "command": "echo broken >&2; exit 3"}]
    _add(collection, tasks, tmp_path)

    result = run_cli(
        "tasks", "drain", collection, "--workers", "2", "--concurrency", "4", "--wait", "--json", timeout=600
    )
    assert result.returncode == 1, result.stderr  # one task failed on purpose
    document = json.loads(result.stdout)
    assert document["reason"] == "drained"
    assert document["deployment"] == "drain-collection/local"
    status = document["status"]
    assert (status["done"], status["failed"], status["todo"], status["locked"]) == (40, 1, 0, 0)
    assert status["failures"][0]["error"] == "exit code 3: broken"

    bucket = stack["buckets"]["data"]
    log = aws["s3"].get_object(Bucket=bucket, Key=f"collections/{collection}/logs/t7.log")
    assert log["Body"].read().decode() == f"out t7 of {collection}\n"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_ids = [uuid.UUID(run["id"]) for run in document["flow_runs"]]
    with get_client(sync_client=True) as client:

        def ended():
            runs = [client.read_flow_run(i) for i in run_ids]
            return runs if all(run.state.is_final() for run in runs) else None

        finals = _wait(ended, 120, "both drain runs to end")
        assert all(run.state.is_completed() for run in finals), [run.state for run in finals]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
        )
    kinds = {(a.type, a.key) for a in artifacts}
    assert ("progress", None) in kinds
    assert ("table", f"collection-{collection}-status") in kinds
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 2 and all(float(a.data) == 100.0 for a in progress)
    table = json.loads(next(a for a in artifacts if a.type == "table").data)
    assert table[0]["done"] == 40 and table[0]["failed"] == 1
    # Throughput and ETA as `tasks status` computes them (the same per-minute finish counts).
    status = json.loads(run_cli("tasks", "status", collection, "--json").stdout)["collections"][collection]
    assert table[0]["tasks/s"] > 0 and status["throughput"] > 0
    assert table[0]["eta seconds"] == status["eta_seconds"] == 0.0

    samples = run_cli("tasks", "status", collection, "--samples", "--json")
    assert json.loads(samples.stdout)["samples"]["S3"] == {collection: "done"}


def test_cancelling_a_drain_gives_its_tasks_back_at_once(stack, tmp_path):
    collection = f"it-{uuid.uuid4().hex[:8]}"
    _add(collection, [{"id": f"t{i}", "command": "sleep 600"} for i in range(2)], tmp_path)
    started = run_cli("tasks", "drain", collection, "--concurrency", "2", "--json")
    assert started.returncode == 0, started.stderr
    [run] = json.loads(started.stdout)["flow_runs"]
    _wait(lambda: _status(collection)["locked"] == 2, 180, "both tasks running")

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(run["id"]), Cancelling(), force=True)
    # The lease is 300 s: todo again within the wait means released by the drain, not expired.
    _wait(lambda: _status(collection)["todo"] == 2, 60, "the tasks back in todo")
    with get_client(sync_client=True) as client:
        final = _wait(
            lambda: (r := client.read_flow_run(uuid.UUID(run["id"]))).state.is_final() and r,
            60,
            "the drain run to end",
        )
    assert final.state.is_cancelled(), final.state
    deleted = run_cli("tasks", "delete", collection)
    assert deleted.returncode == 0, deleted.stderr


def test_a_drain_of_two_collections_in_priority_order(stack, aws, tmp_path):
    # `tasks drain HIGH LOW` (PiCaS's prioritized views) through the drain-collection deployment:
    # one run drains both, HIGH first (the claim order itself is tested in
    # tests/collections/test_collections_drain.py); its artifacts cover both collections.
    high, low = f"it-high-{uuid.uuid4().hex[:6]}", f"it-low-{uuid.uuid4().hex[:6]}"
    _add(high, [{"id": f"t{i}", "command": "echo $COLLECTION"} for i in range(6)], tmp_path)
    _add(low, [{"id": f"t{i}", "command": "echo $COLLECTION"} for i in range(6)], tmp_path)
    _add(low, [{"id": "bad", "command": "exit 4"}], tmp_path)

    result = run_cli("tasks", "drain", high, low, "--concurrency", "2", "--wait", "--json", timeout=600)
    assert result.returncode == 1, result.stderr  # one task failed on purpose
    document = json.loads(result.stdout)
    assert document["reason"] == "drained" and document["lower_priority"] == [low]
    status = document["status"]
    assert (status["done"], status["failed"], status["todo"], status["locked"]) == (12, 1, 0, 0)
    assert [(f["collection"], f["id"]) for f in status["failures"]] == [(low, "bad")]
    assert _status(high)["done"] == 6 and _status(low)["done"] == 6
    bucket = stack["buckets"]["data"]
    log = aws["s3"].get_object(Bucket=bucket, Key=f"collections/{low}/logs/t2.log")
    assert log["Body"].read().decode() == f"{low}\n"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    [run] = document["flow_runs"]
    with get_client(sync_client=True) as client:
        _wait(
            lambda: client.read_flow_run(uuid.UUID(run["id"])).state.is_final(), 120, "the drain run to end"
        )
        assert client.read_flow_run(uuid.UUID(run["id"])).parameters["lower_priority"] == [low]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run["id"])]))
        )
    table = json.loads(next(a for a in artifacts if a.type == "table").data)
    rows = {row["collection"]: row for row in table}
    assert rows[high]["done"] == 6 and rows[low]["done"] == 6 and rows[low]["failed"] == 1
    assert f"failed: {low}/bad" in rows
    assert float(next(a for a in artifacts if a.type == "progress").data) == 100.0
