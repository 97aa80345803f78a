"""Checkpoints, cost and budgets on the PostgreSQL job store (a real server of its own, as in
``test_jobs_postgres.py``): what the in-memory unit tests check, through ``jsonb`` and SQL."""

from __future__ import annotations

import time

import pytest

from flows.jobs.client import JobService
from flows.jobs.model import JobError
from flows.jobs.policy import JobPolicy
from tests.jobs.test_jobs_postgres import TYPES, FakeDispatcher, dsn, server_settings, store  # noqa: F401


def _service(store, **policy) -> JobService:  # noqa: F811
    return JobService(
        store, dispatcher=FakeDispatcher(), job_types=TYPES, policy=JobPolicy(_env_file=None, **policy)
    )


def test_a_checkpoint_survives_the_store_and_reaches_the_next_execution(store):  # noqa: F811
    service = _service(store)
    job = service.create("script", {"name": "n"}, group="lab-a")
    service.signal(job.id, "DISPATCH")
    job = service.signal(job.id, "EXECUTE")
    first = job.current_execution.execution_id
    service.update_execution(job.id, first, progress=0.5, checkpoint={"done": 2, "rows": ["a", "é"]})
    service.signal_execution(job.id, first, "FAILURE", failure_reason="RuntimeError: crash")
    assert _service(store).get_checkpoint(job.id) == {"done": 2, "rows": ["a", "é"]}  # read back from jsonb
    service.retry(job.id)
    job = service.signal(job.id, "EXECUTE")
    assert job.current_execution.checkpoint == {"done": 2, "rows": ["a", "é"]}
    assert store.get(job.id).group == "lab-a"


def test_jobs_changed_since_and_the_budget_read_by_sql(store):  # noqa: F811
    service = _service(store, jobs_budgets={"lab-a": 0.0})
    old = service.create("script", {"name": "old"}, group="lab-b")
    time.sleep(0.05)
    since = store.get(old.id).updated_at
    time.sleep(0.05)
    new = service.create("script", {"name": "new"}, group="lab-b")
    changed = [job.id for job in store.list_changed_since(None)]
    assert set(changed) == {old.id, new.id}
    # the row's updated_at (set by the server) is at or after the document's stamp
    assert [job.id for job in store.list_changed_since("2999-01-01T00:00:00.000Z")] == []
    assert new.id in [job.id for job in store.list_changed_since(since)]

    service.signal(new.id, "DISPATCH")
    job = service.signal(new.id, "EXECUTE")
    job = service.signal_execution(job.id, job.current_execution.execution_id, "SUCCESS")
    summary = service.cost_summary(group="lab-b")
    assert [line["jobId"] for line in summary["executions"]] == [new.id]
    assert summary["executions"][0]["recorded"] is True

    poor = service.create("script", {"name": "poor"}, group="lab-a")
    with pytest.raises(JobError, match="over its budget"):
        service.signal(poor.id, "DISPATCH")
    assert store.get(poor.id).state == "CREATED" and store.get(poor.id).version == 1
