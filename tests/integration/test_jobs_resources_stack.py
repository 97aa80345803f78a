"""Checkpoints, memory escalation and cost on the local stack: real dispatch (job variables through
`run_deployment`), the warm worker, the script runner's enforced memory limit, PostgreSQL and the
job's S3 copy.

- a script that checkpoints, crashes and is retried resumes from its last checkpoint;
- a script that allocates past its memory limit fails OUT_OF_MEMORY (killed, exit 137), the job is
  dispatched again at once with twice the memory and completes;
- each execution's cost is recorded and `jobs cost` sums it per group; a group over its budget is
  refused before anything is dispatched.
"""

from __future__ import annotations

import json

import pytest

from _stack import cli_json, put_scripts, run_cli, wait_for_job

pytestmark = pytest.mark.integration

SCRIPTS = {
    "jobs-resources/resume.py": """
        from interlinked import jobs

        def steps(args):
            start = (jobs.get_checkpoint() or {}).get("done", 0)
            for step in range(start, 4):
                jobs.progress((step + 1) / 4, {"step": step + 1}, checkpoint={"done": step + 1})
                if step + 1 == 2 and start == 0:
                    raise RuntimeError("crash after step 2")
            return {"resumedAt": start}
    """,
    "jobs-resources/hog.py": """
        import time

        def hog(args):
            blocks = [bytearray(b"1") * (16 << 20) for _ in range(args["mib"] // 16)]
            time.sleep(1.5)
            return len(blocks) * 16
    """,
}


@pytest.fixture(scope="module")
def data_bucket(stack_handle, aws):
    bucket = stack_handle.ensure_up()["buckets"]["data"]
    put_scripts(aws["s3"], bucket, SCRIPTS)
    return bucket


def _create(description: dict, estimations: dict, *extra: str) -> dict:
    return cli_json(
        "jobs",
        "create",
        "script",
        "--input",
        json.dumps(description),
        "--estimations",
        json.dumps(estimations),
        *extra,
        "--dispatch",
    )


def test_a_retried_execution_resumes_from_the_last_checkpoint(data_bucket, aws):
    created = _create(
        {"name": "resume", "script": "jobs-resources/resume.py", "func": "steps"}, {"maxAttempts": 2}
    )
    job = wait_for_job(created["id"], timeout=240)
    assert job["state"] == "FAILED", json.dumps(job, indent=2)
    first = job["currentExecution"]
    assert "crash after step 2" in first["failureReason"] and first["checkpoint"] == {"done": 2}

    cli_json("jobs", "retry", job["id"])
    job = wait_for_job(job["id"], timeout=240)
    assert job["state"] == "SUCCEEDED", json.dumps(job, indent=2)
    assert job["outputData"] == {"result": {"resumedAt": 2}}  # steps 3 and 4 only
    assert [e["checkpoint"] for e in job["executions"]] == [{"done": 2}, {"done": 4}]
    assert job["executions"][1]["metrics"] == {"step": 4}
    copy = json.loads(
        aws["s3"].get_object(Bucket=data_bucket, Key=f"results/{job['id']}/job.json")["Body"].read()
    )
    assert copy["currentExecution"]["checkpoint"] == {"done": 4}


def test_out_of_memory_is_retried_with_twice_the_memory_and_completes(data_bucket):
    created = _create(
        {"name": "hog", "script": "jobs-resources/hog.py", "func": "hog", "arguments": {"mib": 160}},
        {"memoryMiB": 128, "maxAttempts": 3},
        "--group",
        "oom-test",
    )
    assert created["placement"]["jobVariables"]["env"] == {"INTERLINKED_MEMORY_LIMIT_MIB": "128"}
    job = wait_for_job(
        created["id"],
        lambda job: job["state"] in ("SUCCEEDED", "CANCELLED") or len(job["executions"]) > 2,
        timeout=240,
    )
    assert job["state"] == "SUCCEEDED", json.dumps(job, indent=2)
    first, second = job["executions"]
    assert first["state"] == "FAILURE" and "OUT_OF_MEMORY" in first["failureReason"]
    assert "memory limit of 128 MiB" in first["failureReason"] and "exit code 137" in first["failureReason"]
    assert first["resources"]["memoryMiB"] == 128 and second["resources"]["memoryMiB"] == 256
    assert second["flowRunId"] != first["flowRunId"]  # a new flow run, dispatched with the new limit
    assert job["outputData"] == {"result": 160}

    # Cost: recorded on both executions when they ended (the local pool priced as Fargate), summed.
    for execution in job["executions"]:
        assert execution["cost"]["amount"] > 0 and execution["cost"]["seconds"] > 0
    summary = cli_json("jobs", "cost", "--group", "oom-test")
    lines = [line for line in summary["executions"] if line["jobId"] == job["id"]]
    assert [line["memoryMiB"] for line in lines] == [128, 256]
    assert summary["groups"]["oom-test"] == pytest.approx(sum(e["cost"]["amount"] for e in job["executions"]))


def test_a_group_over_its_budget_is_refused_before_dispatch(data_bucket, monkeypatch):
    monkeypatch.setenv("INTERLINKED_JOBS_BUDGETS", '{"broke": 0}')
    result = run_cli(
        "jobs",
        "create",
        "script",
        "--group",
        "broke",
        "--input",
        json.dumps(
            {"name": "broke", "script": "jobs-resources/hog.py", "func": "hog", "arguments": {"mib": 16}}
        ),
        "--dispatch",
    )
    assert result.returncode == 2 and "group 'broke' is over its budget" in result.stderr
    created = [
        job for job in cli_json("jobs", "list", "--state", "CREATED")["jobs"] if job["group"] == "broke"
    ]
    assert created and all(job["flowRunId"] is None and not job["executions"] for job in created)
