"""Jobs (seed 004) end to end on the local stack: `interlinked jobs create --dispatch` → the script-job
deployment run with ``{"id": JOB_ID}`` → EXECUTE, progress from inside the user's script, outputs,
SUCCESS/FAILURE → the job in PostgreSQL and its copy at ``s3://{data}/results/{id}/job.json``."""

from __future__ import annotations

import json
import time

import pytest

from _stack import cli_json, put_scripts, run_cli, wait_for_job

pytestmark = pytest.mark.integration

SCRIPTS = {
    "jobs-test/add.py": """
        from interlinked import jobs

        def add(args):
            jobs.progress(0.5, {"stage": "adding"})
            return args["a"] + args["b"]
    """,
    "jobs-test/fail.py": """
        def explode(args):
            raise RuntimeError("deliberate failure for " + args["who"])
    """,
}


@pytest.fixture(scope="module")
def data_bucket(stack_handle, aws):
    bucket = stack_handle.ensure_up()["buckets"]["data"]
    put_scripts(aws["s3"], bucket, SCRIPTS)
    return bucket


def _create(description: dict) -> dict:
    return cli_json(
        "jobs",
        "create",
        "script",
        "--input",
        json.dumps(description),
        "--estimations",
        '{"memoryMiB": 256}',
        "--dispatch",
    )


def test_a_script_job_runs_as_a_job_with_progress_and_outputs(data_bucket, aws):
    created = _create(
        {"name": "jobs add", "script": "jobs-test/add.py", "func": "add", "arguments": {"a": 1, "b": 2}}
    )
    assert created["state"] == "DISPATCHED" and created["flowRunId"]
    job = wait_for_job(created["id"])
    assert job["state"] == "SUCCEEDED", json.dumps(job, indent=2)
    assert len(job["executions"]) == 1
    execution = job["currentExecution"]
    assert execution["state"] == "SUCCESS" and execution["progress"] == 1.0 and execution["finishedAt"]
    assert execution["flowRunId"] == created["flowRunId"]
    assert execution["infrastructureId"].startswith("process:")
    assert execution["metrics"] == {"stage": "adding"}  # reported by the user's script through the SDK
    assert job["outputData"] == {"result": 3}
    assert job["outputFiles"]["result"] == f"s3://{data_bucket}/results/{job['id']}/result.json"

    copy = json.loads(
        aws["s3"].get_object(Bucket=data_bucket, Key=f"results/{job['id']}/job.json")["Body"].read()
    )
    assert copy == job

    listed = cli_json("jobs", "list", "--state", "SUCCEEDED")["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    # The script job under the same id: `interlinked status` sees the run too.
    status = cli_json("status", job["id"])
    assert status["state"] == "COMPLETED" and status["result_value"] == 3

    # The Prefect UI shows the execution on its flow run: progress at 100 % with the latest metrics,
    # and the metrics table (its last update comes right after SUCCESS).
    artifacts = _wait_for_artifacts(created["flowRunId"], lambda found: found.get("progress") == 100.0)
    assert "stage adding" in artifacts["progress_description"]
    table = {row["field"]: row["value"] for row in artifacts["table"]}
    assert table["state"] == "SUCCESS" and table["metric: stage"] == "adding" and table["attempt"] == 1
    assert artifacts["table_key"] == f"job-{job['id']}-execution"


def _wait_for_artifacts(flow_run_id: str, ready, timeout: float = 60) -> dict:
    """The progress and table artifacts of a flow run, once ``ready(found)`` holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
        found: dict = {}
        for artifact in artifacts:
            if artifact.type == "progress":
                found["progress"], found["progress_description"] = artifact.data, artifact.description
            elif artifact.type == "table" and (artifact.key or "").endswith("-execution"):
                data = artifact.data
                found["table"] = json.loads(data) if isinstance(data, str) else data
                found["table_key"] = artifact.key
        if ready(found) or time.monotonic() > deadline:
            assert ready(found), f"the run's artifacts did not get there: {found}"
            return found
        time.sleep(0.5)


def test_a_failing_script_fails_the_execution_with_its_reason_and_retry_makes_another(data_bucket):
    created = _create(
        {"name": "jobs fail", "script": "jobs-test/fail.py", "func": "explode", "arguments": {"who": "jobs"}}
    )
    job = wait_for_job(created["id"])
    assert job["state"] == "FAILED", json.dumps(job, indent=2)
    assert job["currentExecution"]["state"] == "FAILURE"
    assert "deliberate failure for jobs" in job["currentExecution"]["failureReason"]

    retried = cli_json("jobs", "retry", job["id"])
    assert retried["state"] == "DISPATCHED" and retried["flowRunId"] != created["flowRunId"]
    job = wait_for_job(job["id"])
    assert job["state"] == "FAILED" and [e["attempt"] for e in job["executions"]] == [1, 2]
    assert [e["flowRunId"] for e in job["executions"]] == [created["flowRunId"], retried["flowRunId"]]
    # Each attempt's run shows its own execution and why it failed.
    table = _wait_for_artifacts(
        retried["flowRunId"],
        lambda found: any(row["field"] == "failure reason" for row in found.get("table", [])),
    )["table"]
    rows = {row["field"]: row["value"] for row in table}
    assert rows["attempt"] == 2 and rows["state"] == "FAILURE"
    assert "deliberate failure for jobs" in rows["failure reason"]


def test_an_invalid_description_fails_the_execution_not_the_stack(data_bucket):
    job = wait_for_job(_create({"name": "no script field"})["id"])
    assert job["state"] == "FAILED"
    assert "script" in job["currentExecution"]["failureReason"]


def test_bad_input_on_the_stack_exits_2(data_bucket):
    result = run_cli("jobs", "create", "no-such-type", "--input", "{}")
    assert result.returncode == 2 and "unknown job type 'no-such-type'" in result.stderr
    result = run_cli("jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 2 and "no job" in result.stderr
