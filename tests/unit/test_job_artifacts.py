"""The job execution's UI artifacts: their key and the rows of the metrics table."""

from __future__ import annotations

import re

from flows.jobs.artifacts import ExecutionArtifacts, artifact_key, execution_rows


def test_the_key_is_one_prefect_accepts_and_names_the_job():
    key = artifact_key("Job_ID/With Spaces")
    assert re.fullmatch(r"[a-z0-9-]+", key) and key.startswith("job-job-id-with-spaces")
    assert len(artifact_key("x" * 500)) <= 100


def test_rows_show_the_execution_its_metrics_and_its_failure():
    job = {
        "id": "j1",
        "jobType": "script",
        "currentExecution": {
            "executionId": "e2",
            "attempt": 2,
            "state": "FAILURE",
            "progress": 0.25,
            "metrics": {"rows": 10, "stage": "load"},
            "failureReason": "MemoryError: out of memory",
        },
    }
    rows = {row["field"]: row["value"] for row in execution_rows(job)}
    assert rows == {
        "job": "j1",
        "execution": "e2",
        "attempt": 2,
        "state": "FAILURE",
        "progress": 0.25,
        "metric: rows": 10,
        "metric: stage": "load",
        "failure reason": "MemoryError: out of memory",
    }
    assert execution_rows({"id": "j0", "currentExecution": None}) == []


def test_outside_a_flow_run_it_does_nothing_and_never_reads():
    reads = []
    with ExecutionArtifacts("j1", lambda job_id: reads.append(job_id) or {}) as artifacts:
        pass
    assert reads == [] and artifacts.progress_id is None and not artifacts.refresh()
