"""Failure reasons (flows.jobs.failures): stable codes read from local exit statuses, exceptions,
Prefect states and recorded ECS DescribeTasks / Batch DescribeJobs responses
(tests/fixtures/aws/*.json, shaped as the APIs return them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.jobs.failures import (
    FailureCode,
    code_of,
    from_batch_job,
    from_ecs_task,
    from_exception,
    from_exit,
    from_prefect_state,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "aws"


def ecs_task(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())["tasks"][0]


def batch_job(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())["jobs"][0]


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("ecs_oom_exit_0", FailureCode.OUT_OF_MEMORY),  # exit code 0, the reason says OOM
        ("ecs_oom_137", FailureCode.OUT_OF_MEMORY),
        ("ecs_spot_interruption", FailureCode.SPOT_RECLAIM),
        ("ecs_host_terminated", FailureCode.KILLED),
        ("ecs_failed_to_start", FailureCode.INFRASTRUCTURE_NEVER_STARTED),
        ("ecs_code_error", FailureCode.CODE_ERROR),
        ("ecs_user_stopped", FailureCode.CANCELLED),
    ],
)
def test_ecs_task_reasons(fixture, code):
    failure = from_ecs_task(ecs_task(fixture))
    assert failure is not None and failure.code == code, failure
    assert failure.reason.startswith(f"{code.value}: ")
    assert failure.evidence["source"] == "ecs:DescribeTasks"
    assert failure.evidence["taskArn"].startswith("arn:aws:ecs:")


def test_ecs_oom_with_exit_code_0_keeps_the_evidence():
    failure = from_ecs_task(ecs_task("ecs_oom_exit_0"))
    assert failure.evidence["containers"][0]["exitCode"] == 0
    assert "OutOfMemoryError" in failure.evidence["containers"][0]["reason"]


def test_ecs_running_or_succeeded_task_is_no_failure():
    assert from_ecs_task(ecs_task("ecs_running")) is None
    assert from_ecs_task(ecs_task("ecs_succeeded")) is None


def test_ecs_host_loss_on_spot_capacity_is_a_spot_reclaim():
    failure = from_ecs_task(ecs_task("ecs_host_terminated"), spot=True)
    assert failure.code == FailureCode.SPOT_RECLAIM
    assert failure.evidence["instance"] == "i-0a1b2c3d4e5f67890"


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("batch_oom", FailureCode.OUT_OF_MEMORY),
        ("batch_oom_no_exit_code", FailureCode.OUT_OF_MEMORY),
        ("batch_host_terminated", FailureCode.KILLED),
        ("batch_timeout", FailureCode.TIME_LIMIT),  # no exit code at all
        ("batch_code_error", FailureCode.CODE_ERROR),
        ("batch_never_started", FailureCode.INFRASTRUCTURE_NEVER_STARTED),
        ("batch_cancelled", FailureCode.CANCELLED),
    ],
)
def test_batch_job_reasons(fixture, code):
    failure = from_batch_job(batch_job(fixture))
    assert failure is not None and failure.code == code, failure
    assert failure.evidence["source"] == "batch:DescribeJobs"
    assert failure.evidence["jobId"] == batch_job(fixture)["jobId"]


def test_batch_host_terminated_on_spot_is_a_spot_reclaim_with_the_instance():
    failure = from_batch_job(batch_job("batch_host_terminated"), spot=True)
    assert failure.code == FailureCode.SPOT_RECLAIM
    assert failure.evidence["instance"] == "i-0f3c9b2a1d4e5f678"


def test_batch_timeout_has_no_exit_code_in_its_evidence():
    failure = from_batch_job(batch_job("batch_timeout"))
    assert failure.evidence["exitCode"] is None
    assert "Job attempt duration exceeded timeout" in failure.message


@pytest.mark.parametrize("fixture", ["batch_runnable", "batch_running", "batch_succeeded"])
def test_batch_jobs_not_failed_are_no_failure(fixture):
    assert from_batch_job(batch_job(fixture)) is None


@pytest.mark.parametrize(
    ("exit_code", "kwargs", "code"),
    [
        (1, {}, FailureCode.CODE_ERROR),
        (137, {}, FailureCode.OUT_OF_MEMORY),
        (-9, {}, FailureCode.KILLED),
        (143, {}, FailureCode.KILLED),
        (-15, {}, FailureCode.KILLED),
        (-6, {}, FailureCode.KILLED),
        (None, {"timed_out": True}, FailureCode.TIME_LIMIT),
        (1, {"output_tail": "Traceback ...\nMemoryError"}, FailureCode.OUT_OF_MEMORY),
        (None, {}, FailureCode.UNKNOWN),
    ],
)
def test_local_exit_statuses(exit_code, kwargs, code):
    failure = from_exit(exit_code, **kwargs)
    assert failure is not None and failure.code == code
    assert failure.evidence["exitCode"] == exit_code


def test_a_clean_exit_is_no_failure():
    assert from_exit(0) is None


def test_an_exception_is_a_code_error_with_its_traceback():
    def explode():
        raise RuntimeError("deliberate")

    try:
        explode()
    except RuntimeError as error:
        failure = from_exception(error)
    assert failure.code == FailureCode.CODE_ERROR
    assert failure.reason == "CODE_ERROR: RuntimeError: deliberate"
    assert "Traceback" in failure.evidence["traceback"] and "explode" in failure.evidence["traceback"]
    assert from_exception(MemoryError()).code == FailureCode.OUT_OF_MEMORY
    assert from_exception(TimeoutError("slow")).code == FailureCode.TIME_LIMIT


@pytest.mark.parametrize(
    ("state_type", "message", "code"),
    [
        (
            "CRASHED",
            "Flow run infrastructure exited with non-zero status code 137. Out of memory",
            FailureCode.OUT_OF_MEMORY,
        ),
        (
            "CRASHED",
            "Flow run infrastructure exited with non-zero status code -9.",
            FailureCode.KILLED,
        ),
        ("CRASHED", "Flow run infrastructure exited with non-zero status code 1.", FailureCode.CODE_ERROR),
        ("CRASHED", "Execution was interrupted by an unexpected exception", FailureCode.ORPHANED),
        ("FAILED", "Flow run encountered an exception: ValueError: bad", FailureCode.CODE_ERROR),
        ("FAILED", "AWS Batch job x FAILED: Host EC2 (instance i-1) terminated.", FailureCode.KILLED),
        ("CANCELLED", "Cancelled by the user", FailureCode.CANCELLED),
    ],
)
def test_prefect_states(state_type, message, code):
    failure = from_prefect_state(state_type, state_type.title(), message)
    assert failure is not None and failure.code == code


def test_running_or_completed_prefect_states_are_no_failure():
    assert from_prefect_state("RUNNING", "Running", None) is None
    assert from_prefect_state("COMPLETED", "Completed", None) is None


def test_the_code_reads_back_from_a_stored_reason():
    assert code_of("STUCK: no progress for 45 s") == FailureCode.STUCK
    assert code_of("RuntimeError: boom") is None
    assert code_of("") is None and code_of(None) is None
