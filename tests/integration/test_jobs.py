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


# -- prepare-experiment runs are jobs ---------------------------------------------------------------
def _prepare_task(bucket: str, source: str, experiment: str) -> dict:
    """A PrepareExperiment task (the seed's JSON) reading ``s3://bucket/source``."""
    import uuid

    return {
        "uuid": str(uuid.uuid4()),
        "socketId": "jobs-test",
        "experimentId": experiment,
        "timeout": "2099-12-31 00:00:00",
        "body": {
            "name": "PrepareExperiment",
            "sourceBucket": bucket,
            "sourceMatrixPath": source,
            "config": {"minGenes": 20, "nTopGenes": 100, "resolution": 0.5},
        },
    }


def _jobs_of_run(job_type: str, flow_run_id: str, timeout: float = 60) -> list[dict]:
    """The jobs of ``job_type`` whose executions ran in ``flow_run_id``."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = cli_json("jobs", "list", "--type", job_type)["jobs"]
        found = [j for j in jobs if any(e["flowRunId"] == flow_run_id for e in j["executions"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_a_prepare_experiment_run_is_a_job_that_fails_with_the_analysis_reason(data_bucket):
    from prefect.deployments import run_deployment

    task = _prepare_task(data_bucket, "jobs-test/no-such-source/", f"jobs-missing-{int(time.time())}")
    run = run_deployment("prepare-experiment/local", parameters={"request": task}, timeout=240)
    assert run.state is not None and run.state.is_failed(), run.state
    [job] = _jobs_of_run("prepare-experiment", str(run.id))
    assert job["state"] == "FAILED" and job["flowRunId"] == str(run.id)
    assert job["inputData"]["request"] == task
    [execution] = job["executions"]
    assert execution["state"] == "FAILURE" and execution["failureCode"] == "CODE_ERROR"
    assert execution["failureReason"].startswith("SOURCE_NOT_FOUND: ")
    assert "jobs-test/no-such-source" in execution["failureReason"]
    assert execution["infrastructureId"].startswith("process:")

    # `interlinked status JOB_ID` shows the job and its executions, as for a script job.
    status = cli_json("status", job["id"])
    assert status["job_type"] == "prepare-experiment" and status["state"] == "FAILED"
    assert [e["executionId"] for e in status["executions"]] == [execution["executionId"]]
    assert status["flow_run_id"] == str(run.id) and status["error"].startswith("SOURCE_NOT_FOUND")
    text = run_cli("status", job["id"])
    assert text.returncode == 0 and "SOURCE_NOT_FOUND" in text.stdout and "prepare-experiment" in text.stdout


def test_a_dispatched_prepare_experiment_job_prepares_with_progress_and_outputs(data_bucket, aws, tmp_path):
    from analyses import write_10x

    write_10x(tmp_path / "matrix", n_cells=400, n_genes=300, n_clusters=3, median_counts=1500, seed=5)
    for path in (tmp_path / "matrix").iterdir():
        aws["s3"].upload_file(str(path), data_bucket, f"jobs-test/source/{path.name}")
    task = _prepare_task(data_bucket, "jobs-test/source/", f"jobs-prepared-{int(time.time())}")
    created = cli_json(
        "jobs", "create", "prepare-experiment", "--input", json.dumps({"request": task}), "--dispatch"
    )
    assert created["state"] == "DISPATCHED" and created["flowRunId"]
    job = wait_for_job(created["id"], timeout=300)
    assert job["state"] == "SUCCEEDED", json.dumps(job, indent=2)
    [execution] = job["executions"]
    assert execution["flowRunId"] == created["flowRunId"] and execution["progress"] == 1.0
    assert execution["metrics"]["cells"] == job["outputData"]["cells"] > 300
    assert execution["metrics"]["step"]  # the analysis step last reported
    assert job["outputFiles"]["experiment"].endswith(f"experiments/{task['experimentId']}/processed.h5ad")

    artifacts = _wait_for_artifacts(created["flowRunId"], lambda found: found.get("progress") == 100.0)
    rows = {row["field"]: row["value"] for row in artifacts["table"]}
    assert rows["state"] == "SUCCESS" and rows["metric: cells"] == job["outputData"]["cells"]
    status = cli_json("status", job["id"])
    assert status["state"] == "SUCCEEDED" and len(status["executions"]) == 1


def test_jobs_a_flow_makes_for_itself_are_refused_by_hand(data_bucket):
    result = run_cli("jobs", "create", "submission-dataset", "--input", "{}")
    assert result.returncode == 2 and "by hand" in result.stderr and "process-submission" in result.stderr
