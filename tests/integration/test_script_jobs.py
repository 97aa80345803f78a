"""Script jobs end to end: CLI → S3 → Prefect deployment → worker → script → S3 + SNS."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from _stack import INTERLINKED, TEST_ENV, run_cli
from flows.script_jobs.runners import rscript_path

pytestmark = pytest.mark.integration

SCRIPTS = {
    "add.py": """
        def myfunc(args):
            mysum = args["a"] + args["b"]
            print(f"myfunc completed with result: {mysum}")
            return mysum
    """,
    "fail.py": """
        def explode(args):
            print("about to fail")
            return helper(args)

        def helper(args):
            raise RuntimeError("deliberate failure for " + args["who"])
    """,
    "hang.py": """
        import time

        def wait_forever(args):
            print("sleeping", flush=True)
            time.sleep(600)
    """,
    "flaky.py": """
        from pathlib import Path

        def once_broken(args):
            marker = Path(args["marker"])
            if not marker.exists():
                marker.write_text("first attempt")
                raise ConnectionError("flaky the first time")
            return "recovered"
    """,
    "stats.sh": """
        echo "computing" >&2
        stats() {
          python3 -c 'import json,sys; d=json.load(sys.stdin); xs=d["values"]; print(json.dumps({"n": len(xs), "sum": sum(xs)}))'
        }
    """,
    "test.r": """
        myfunc <- function(args) {
          mysum <- args$a + args$b
          cat(paste0("myfunc completed with result: ", mysum, "\\n"))
          mysum
        }
    """,
}


@pytest.fixture(scope="module")
def script_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scripts")
    for name, source in SCRIPTS.items():
        (directory / name).write_text(textwrap.dedent(source).lstrip())
    return directory


@pytest.fixture(scope="module")
def jobs(stack_handle, script_dir, tmp_path_factory):
    """Submit every job at once through the CLI (they run concurrently on the worker)."""
    stack_handle.ensure_up()
    marker = tmp_path_factory.mktemp("flaky") / "marker"
    descriptions = {
        "seed": {"func": "myfunc", "arguments": {"a": 1, "b": 2}, "name": "Test job", "script": "add.py"},
        "failing": {
            "func": "explode",
            "arguments": {"who": "tests"},
            "name": "fails on purpose",
            "script": "fail.py",
        },
        "timeout": {"func": "wait_forever", "name": "hangs", "script": "hang.py", "timeout_seconds": 3},
        "retried": {
            "func": "once_broken",
            "arguments": {"marker": str(marker)},
            "name": "flaky",
            "script": "flaky.py",
            "retries": 1,
            "retry_delay_seconds": 0,
        },
        "shell": {
            "func": "stats",
            "arguments": {"values": [1, 2, 3, 4]},
            "name": "shell stats",
            "script": "stats.sh",
        },
    }
    if rscript_path():
        descriptions["r"] = {
            "func": "myfunc",
            "arguments": {"a": 1, "b": 2},
            "name": "R seed",
            "script": "test.r",
        }
    processes = {}
    for key, description in descriptions.items():
        path = script_dir / f"{key}.json"
        path.write_text(json.dumps(description))
        processes[key] = subprocess.Popen(
            [INTERLINKED, "submit", str(path), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**__import__("os").environ, **TEST_ENV},
        )
    submitted = {}
    for key, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"submit {key} failed: {err}"
        submitted[key] = json.loads(out)
    return submitted


def _wait(job_id: str) -> dict:
    result = run_cli("status", job_id, "--json")
    from flows.script_jobs.client import wait_for_job

    status = wait_for_job(job_id, timeout=180)
    assert status["state"] in ("COMPLETED", "FAILED"), (
        f"job {job_id} did not finish: {status} {result.stderr}"
    )
    return status


def _log(aws, stack, job_id: str) -> str:
    return (
        aws["s3"]
        .get_object(Bucket=stack["buckets"]["data"], Key=f"logs/{job_id}.log")["Body"]
        .read()
        .decode()
    )


def test_seed_example_yields_3_at_the_fixed_key(jobs, aws, stack, job_events):
    job_id = jobs["seed"]["job_id"]
    status = _wait(job_id)
    assert status["state"] == "COMPLETED" and status["result_value"] == 3
    body = (
        aws["s3"]
        .get_object(Bucket=stack["buckets"]["data"], Key=f"results/{job_id}/result.json")["Body"]
        .read()
    )
    assert json.loads(body) == 3
    spec = json.loads(
        aws["s3"].get_object(Bucket=stack["buckets"]["data"], Key=f"jobs/{job_id}.json")["Body"].read()
    )
    assert spec["func"] == "myfunc" and spec["script"] == f"{job_id}/add.py"
    assert "myfunc completed with result: 3" in _log(aws, stack, job_id)
    event = job_events.wait_for(lambda message: message.get("job_id") == job_id)
    assert event["state"] == "COMPLETED"
    assert event["result"] == f"s3://{stack['buckets']['data']}/results/{job_id}/result.json"


def test_seed_run_is_completed_in_prefect_with_tag_name_and_artifact(jobs):
    from prefect.client.orchestration import get_client

    job_id = jobs["seed"]["job_id"]
    _wait(job_id)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(jobs["seed"]["flow_run_id"])
        assert run.state.is_completed()
        assert run.name == "Test job" and f"job:{job_id}" in run.tags
        artifacts = client.read_artifacts(limit=50)
    summary = [a for a in artifacts if a.key == f"script-job-{job_id}"]
    assert summary, "the run has no summary artifact"
    assert "COMPLETED" in summary[0].data and "result.json" in summary[0].data


def test_failing_script_fails_once_with_traceback_in_log(jobs, aws, stack, job_events):
    job_id = jobs["failing"]["job_id"]
    status = _wait(job_id)
    assert status["state"] == "FAILED"
    assert "RuntimeError: deliberate failure for tests" in status["state_message"]
    log = _log(aws, stack, job_id)
    assert "Traceback (most recent call last)" in log and "in helper" in log
    assert log.count("attempt ") == 1, "a user bug must not be retried blindly"
    event = job_events.wait_for(lambda message: message.get("job_id") == job_id)
    assert event["state"] == "FAILED" and "deliberate failure" in event["error"]
    assert status["result"] is None


def test_hung_script_is_killed_at_its_timeout(jobs, aws, stack):
    status = _wait(jobs["timeout"]["job_id"])
    assert status["state"] == "FAILED"
    assert "timed out after 3 s" in status["state_message"]
    assert "sleeping" in _log(aws, stack, jobs["timeout"]["job_id"])


def test_job_asking_for_retries_is_retried(jobs, aws, stack):
    status = _wait(jobs["retried"]["job_id"])
    assert status["state"] == "COMPLETED" and status["result_value"] == "recovered"
    log = _log(aws, stack, jobs["retried"]["job_id"])
    assert "attempt 1" in log and "attempt 2" in log and "flaky the first time" in log


def test_shell_job_returns_json_stdout(jobs, aws, stack):
    status = _wait(jobs["shell"]["job_id"])
    assert status["state"] == "COMPLETED" and status["result_value"] == {"n": 4, "sum": 10}
    assert "computing" in _log(aws, stack, jobs["shell"]["job_id"])


@pytest.mark.skipif(
    rscript_path() is None, reason="Rscript is not installed (apt-get install r-base-core r-cran-jsonlite)"
)
def test_r_seed_job_yields_3(jobs):
    status = _wait(jobs["r"]["job_id"])
    assert status["state"] == "COMPLETED" and status["result_value"] == 3


def test_status_command_shows_state_links_and_ui(jobs, stack):
    job_id = jobs["seed"]["job_id"]
    _wait(job_id)
    result = run_cli("status", job_id)
    assert result.returncode == 0, result.stderr
    assert "COMPLETED" in result.stdout
    assert f"results/{job_id}/result.json" in result.stdout and f"logs/{job_id}.log" in result.stdout
    assert f"{stack['prefect_ui_url']}/runs/flow-run/{jobs['seed']['flow_run_id']}" in result.stdout
    missing = run_cli("status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 2 and "no job" in missing.stderr


def test_submit_wait_prints_the_result(stack, script_dir):
    path = script_dir / "wait.json"
    path.write_text(
        json.dumps({"func": "myfunc", "arguments": {"a": 20, "b": 22}, "name": "wait", "script": "add.py"})
    )
    result = run_cli("submit", str(path), "--wait")
    assert result.returncode == 0, result.stderr
    job_id, value = result.stdout.strip().splitlines()
    assert value == "42" and len(job_id) == 36


def _counts(aws, stack) -> tuple[int, int]:
    from prefect.client.orchestration import get_client

    listing = aws["s3"].list_objects_v2(Bucket=stack["buckets"]["data"], Prefix="jobs/")
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    # Runs of this flow only: the stack's scheduled job sweeper adds runs of its own meanwhile.
    with get_client(sync_client=True) as client:
        runs = client.count_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["script-job"])))
    return listing.get("KeyCount", 0), runs


@pytest.mark.parametrize(
    ("description", "words"),
    [
        ({"func": "myfunc", "arguments": {"a": 1}, "script": "add.py"}, "name: missing"),
        ({"func": "myfunc", "arguments": [1, 2], "name": "x", "script": "add.py"}, "arguments:"),
        ({"func": "myfunc", "name": "x", "script": "add.py", "timeout": 5}, "timeout: unknown field"),
        ({"name": "x", "script": "add.py"}, "func: required for python"),
        ({"func": "f", "name": "x", "script": "not-there-anywhere.py"}, "neither a local file nor an object"),
    ],
)
def test_invalid_description_is_refused_and_creates_nothing(stack, aws, script_dir, description, words):
    before = _counts(aws, stack)
    path = script_dir / "invalid.json"
    path.write_text(json.dumps(description))
    result = run_cli("submit", str(path))
    assert result.returncode == 2
    assert words in result.stderr and result.stdout == ""
    assert _counts(aws, stack) == before
