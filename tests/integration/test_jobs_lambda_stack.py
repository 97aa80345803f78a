"""The jobs Lambda's handler (``interlinked.jobs_lambda.handler``) in-process on the local stack.

moto without Docker cannot run Lambda code, so the handler is called in this process, configured only
by the environment variables ``modules/jobs_api`` gives the function (here the local stack's
PostgreSQL URL instead of the RDS template and secret), with ``aws lambda invoke``-shaped JSON: the
job store is the stack's real PostgreSQL, DISPATCH creates real flow runs through the Prefect REST
API (no Prefect client), and each change's copy lands in the stack's data bucket on moto.

- a script job created and dispatched through the Lambda runs on the local pool and ends SUCCEEDED;
- "another language's" work (EXECUTE with its own infrastructure id, progress, metrics, a
  checkpoint, outputs, FAILURE with a reason), retry and cancel, on a deployment whose pool no
  worker polls; refused requests leave the row in PostgreSQL as it was.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time

import pytest

from _stack import put_scripts

pytestmark = pytest.mark.integration

IDLE_FLOW, IDLE_DEPLOYMENT, IDLE_POOL = "jobs-lambda-idle", "idle", "jobs-lambda-idle"
SCRIPTS = {
    "jobs-lambda-test/add.py": """
        from interlinked import jobs

        def add(args):
            jobs.progress(0.5, {"stage": "adding"})
            return args["a"] + args["b"]
    """,
}


def invoke(event: dict) -> dict:
    """What ``aws lambda invoke --payload JSON out.json`` gives: JSON in, JSON out."""
    from interlinked import jobs_lambda

    class Context:
        aws_request_id = "test-request"

    return json.loads(json.dumps(jobs_lambda.handler(json.loads(json.dumps(event)), Context())))


def ok(action: str, **payload) -> dict:
    reply = invoke({"action": action, "payload": payload})
    assert reply["ok"] is True, reply
    return reply


@pytest.fixture(scope="module")
def lambda_env(stack_handle, aws, tmp_path_factory):
    """The function's environment on the local stack, and an idle deployment (a pool no worker polls)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from blocks.postgres import database
    from interlinked import jobs_lambda

    description = stack_handle.ensure_up()
    bucket = description["buckets"]["data"]
    put_scripts(aws["s3"], bucket, SCRIPTS)
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):  # from an earlier module run on this stack
            client.create_work_pool(WorkPoolCreate(name=IDLE_POOL, type="process"))
        flow_id = client.create_flow_from_name(IDLE_FLOW)
        client.create_deployment(flow_id=flow_id, name=IDLE_DEPLOYMENT, work_pool_name=IDLE_POOL)
    types = tmp_path_factory.mktemp("jobs-lambda") / "job_types.json"
    types.write_text(json.dumps({"node-work": {"deployment": f"{IDLE_FLOW}/{IDLE_DEPLOYMENT}"}}))
    env = {
        "INTERLINKED_DATABASE_URL": database().dsn(),
        "INTERLINKED_DATA_BUCKET": bucket,
        "INTERLINKED_DEPLOYMENT_SET": "local",
        "INTERLINKED_JOB_TYPES_FILE": str(types),
    }
    mp = pytest.MonkeyPatch()
    for name, value in env.items():
        mp.setenv(name, value)
    mp.delenv("INTERLINKED_DATABASE_URL_TEMPLATE", raising=False)
    jobs_lambda.use_service(None)
    yield env
    jobs_lambda.use_service(None)
    mp.undo()


def stored_row(job_id: str) -> tuple[int, dict]:
    """(version, document) of the job's row in PostgreSQL."""
    import psycopg

    from blocks.postgres import database

    with psycopg.connect(database().dsn()) as connection:
        version, document = connection.execute(
            "SELECT version, document FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    return version, document


def s3_copy(aws, bucket: str, job_id: str) -> dict:
    return json.loads(aws["s3"].get_object(Bucket=bucket, Key=f"results/{job_id}/job.json")["Body"].read())


def test_a_script_job_created_and_dispatched_through_the_lambda_runs(lambda_env, aws):
    from prefect.client.orchestration import get_client

    job = ok(
        "create",
        jobType="script",
        inputData={
            "name": "lambda add",
            "script": "jobs-lambda-test/add.py",
            "func": "add",
            "arguments": {"a": 2, "b": 3},
        },
        estimations={"memoryMiB": 256},
    )["job"]
    dispatched = ok("signal", jobId=job["id"], state="DISPATCH")["job"]
    assert dispatched["state"] == "DISPATCHED" and dispatched["flowRunId"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(dispatched["flowRunId"])
    assert run.parameters == {"id": job["id"]}
    assert {f"job:{job['id']}", "job-type:script", "interlinked-job"} <= set(run.tags)

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = ok("get", jobId=job["id"])["job"]
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(1)
    assert job["state"] == "SUCCEEDED", json.dumps(job, indent=2)
    assert job["currentExecution"]["flowRunId"] == dispatched["flowRunId"]
    assert job["currentExecution"]["metrics"].get("stage") == "adding"
    # the store is the truth, and its copy in S3 is the same version
    version, document = stored_row(job["id"])
    assert document["state"] == "SUCCEEDED"
    assert s3_copy(aws, lambda_env["INTERLINKED_DATA_BUCKET"], job["id"])["version"] == version


def test_another_languages_work_through_the_lambda(lambda_env, aws):
    from prefect.client.orchestration import get_client

    from flows.jobs.client import JobService
    from flows.jobs.postgres import PostgresJobStore
    from flows.jobs.sweeper import sweep_once

    job = ok("create", jobType="node-work", inputData={"n": 1}, estimations={"heartbeatTimeoutSeconds": 600})[
        "job"
    ]
    dispatched = ok("signal", jobId=job["id"], state="DISPATCH")["job"]
    flow_run_id = dispatched["flowRunId"]
    assert dispatched["placement"]["deployment"] == f"{IDLE_FLOW}/{IDLE_DEPLOYMENT}"

    # the Node program: its own process is the infrastructure the sweeper checks
    program = subprocess.Popen(["sleep", "600"])
    try:
        infrastructure = f"process:{socket.gethostname()}:{program.pid}"
        job = ok(
            "signal", jobId=job["id"], state="EXECUTE", flowRunId=flow_run_id, infrastructureId=infrastructure
        )["job"]
        execution_id = job["currentExecution"]["executionId"]
        assert job["currentExecution"]["infrastructureId"] == infrastructure
        job = ok(
            "updateExecution",
            jobId=job["id"],
            executionId=execution_id,
            progress=0.25,
            metrics={"cpu": 1234, "memory": 5678},
            checkpoint={"offset": 100},
        )["job"]
        assert job["currentExecution"]["progress"] == 0.25

        # one sweep of the real sweeper over the stack's jobs: this one is healthy (alive, reporting)
        store = PostgresJobStore.from_dsn(lambda_env["INTERLINKED_DATABASE_URL"])
        report = sweep_once(JobService(store))
        assert not [a for a in report.actions if a.get("jobId") == job["id"]], report.actions

        # a refused request leaves the row as it was
        before = stored_row(job["id"])
        reply = invoke(
            {
                "action": "updateExecution",
                "payload": {"jobId": job["id"], "executionId": execution_id, "progress": 2},
            }
        )
        assert reply["error"]["code"] == "JOB_REFUSED" and "[0, 1]" in reply["error"]["reason"]
        reply = invoke(
            {
                "action": "signalExecution",
                "payload": {"jobId": job["id"], "executionId": "x", "state": "SUCCESS"},
            }
        )
        assert reply["error"]["code"] == "JOB_REFUSED" and "no execution 'x'" in reply["error"]["reason"]
        assert stored_row(job["id"]) == before

        ok("update", jobId=job["id"], outputData={"rows": 100}, outputFiles={"out": "s3://b/o"})
        job = ok(
            "signalExecution",
            jobId=job["id"],
            executionId=execution_id,
            state="FAILURE",
            failureReason="CODE_ERROR: TypeError in worker.js:12",
        )["job"]
        assert job["state"] == "FAILED"
        assert job["currentExecution"]["failureCode"] == "CODE_ERROR"
        assert job["outputData"] == {"rows": 100}
    finally:
        program.kill()
        program.wait()

    retried = ok("retry", jobId=job["id"])["job"]
    assert retried["state"] == "DISPATCHED" and retried["flowRunId"] not in (None, flow_run_id)
    assert ok("getCheckpoint", jobId=job["id"])["checkpoint"] == {"offset": 100}
    cancelled = ok("cancel", jobId=job["id"])["job"]
    assert cancelled["state"] == "CANCELLED"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(retried["flowRunId"])
    assert run.state.type.value in ("CANCELLING", "CANCELLED"), run.state
    listed = ok("list", jobType="node-work", state="CANCELLED", limit=1000)["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    copy = s3_copy(aws, lambda_env["INTERLINKED_DATA_BUCKET"], job["id"])
    assert copy["state"] == "CANCELLED" and len(copy["executions"]) == 1
