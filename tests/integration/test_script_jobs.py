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
def jobs(stack_handle, script_dir, tmp_path_factory, job_events):
    """Submit every job at once through the CLI (they run concurrently on the worker).

    The job-events listener is subscribed first: an event published before its subscription
    exists is never delivered to it (a job that fails fast would otherwise go unheard)."""
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
        # Fault 7 of issue 12: 1 MiB of arguments used to fail at process start (E2BIG), and over
        # 64 KiB the stdin write held the runner before its timed wait.
        "big_timeout": {
            "func": "wait_forever",
            "arguments": {"blob": "x" * (1024 * 1024)},
            "name": "hangs with 1 MiB of arguments",
            "script": "hang.py",
            "timeout_seconds": 3,
        },
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
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"script-job-{job_id}"])), limit=50
        )
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


def test_hung_script_with_one_mib_arguments_is_killed_at_its_timeout(jobs, aws, stack):
    status = _wait(jobs["big_timeout"]["job_id"])
    assert status["state"] == "FAILED"
    assert "timed out after 3 s" in status["state_message"]
    assert "sleeping" in _log(aws, stack, jobs["big_timeout"]["job_id"])


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


# ---- the seed's own R interface, unchanged ---------------------------------------------------------

# The seed README's script template, verbatim (seed 000, "Running a job").
SEED_TEMPLATE = """# these libraries are baked into the docker container
library(interlinker)
library(aws.s3)
library(httr)
library(jsonlite)

myfunc <- function(args) {
  mysum = args$a + args$b
  url <- paste0(interlinker_options("lambda_uri"), "upload")
  result <- POST(url, body = toJSON(list(key = "test/my_results_1",
                                         data = mysum,
                                         bucket = "interlinked"), auto_unbox = TRUE))
  # alternatively, you can just use aws.s3::put_object directly
  logS3(paste0("myfunc completed with result: ", result$result), "INFO", "interlinked")
}
"""
# The seed README's R session, verbatim but for one stray ')' (a syntax error in the README), and
# printing the reply so the test can read the job id.
SEED_SUBMIT = """library(interlinker)
library(jsonlite)
library(httr)

  job <- list(func = "myfunc",
   arguments =  list("a" = 1, "b" = 2),
   name = "Test job",
   script = "test.r")

  url <- paste0(interlinker_options("lambda_uri"), "submitjob")
  reply <- POST(url, body = toJSON(job), auto_unbox = TRUE)
cat(content(reply, as = "text"))
"""
# The seed's /tmp/start.r, verbatim (``UUID`` is undefined there: runJob falls back to LAMBDA_JOB_ID).
SEED_START = """library(interlinker)

job <- Sys.getenv("LAMBDA_JOB_ID")
runJob(UUID, debug = TRUE)
"""


def _r_session(code: str, tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    from interlinked.settings import Settings

    script = tmp_path / "session.R"
    script.write_text(code)
    r_libs = str(Settings().state_dir / "r-lib")
    return subprocess.run(
        [rscript_path(), str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **TEST_ENV, "R_LIBS": r_libs, **env},
    )


def _r_with_httr() -> bool:
    path = rscript_path()
    return bool(path) and subprocess.run([path, "-e", "library(httr)"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not _r_with_httr(), reason="Rscript with httr is not installed (apt-get install r-cran-httr)"
)
def test_the_seeds_r_template_and_session_run_unchanged(stack_handle, aws, stack, tmp_path):
    """The seed's template uploaded to scripts/, its R session POSTs the job to submitjob (one-element
    arrays and all), the script runs with LAMBDA_JOB_ID and POSTs its result to upload; then the
    seed's start.r runs the same job again by LAMBDA_JOB_ID through runJob."""
    from flows.script_jobs.client import wait_for_job

    stack_handle.ensure_up()
    data = stack["buckets"]["data"]
    aws["s3"].put_object(Bucket=data, Key="scripts/test.r", Body=SEED_TEMPLATE.encode())
    aws["s3"].delete_object(Bucket=data, Key="test/my_results_1")

    submitted = _r_session(SEED_SUBMIT, tmp_path, {})
    assert submitted.returncode == 0, submitted.stderr
    reply = json.loads(submitted.stdout)
    job_id = reply["jobId"]
    status = wait_for_job(job_id, timeout=180)
    assert status["state"] == "COMPLETED", status
    # Where the template puts its result: s3://interlinked/test/my_results_1 (the data bucket).
    stored = aws["s3"].get_object(Bucket=data, Key="test/my_results_1")["Body"].read()
    assert json.loads(stored) == 3
    log = aws["s3"].get_object(Bucket=data, Key="log/INFO")["Body"].read().decode()
    assert "INFO myfunc completed with result: " in log
    spec = json.loads(aws["s3"].get_object(Bucket=data, Key=f"jobs/{job_id}.json")["Body"].read())
    assert spec["name"] == "Test job" and spec["script"] == "test.r"
    # The script saw its job id.
    job_log = aws["s3"].get_object(Bucket=data, Key=f"logs/{job_id}.log")["Body"].read().decode()
    assert "exit code 0" in job_log

    aws["s3"].delete_object(Bucket=data, Key="test/my_results_1")
    started = _r_session(SEED_START, tmp_path, {"LAMBDA_JOB_ID": job_id})
    assert started.returncode == 0, started.stderr
    assert json.loads(aws["s3"].get_object(Bucket=data, Key="test/my_results_1")["Body"].read()) == 3
    debug = aws["s3"].get_object(Bucket=data, Key="log/DEBUG")["Body"].read().decode()
    assert f"runJob {job_id}: done" in debug
