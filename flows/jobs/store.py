"""Where jobs live: the store interface, the conditional-change loop, and an in-memory store.

Promises of every backend (``tests/unit/test_jobs_machine.py`` checks the in-memory one,
``tests/unit/test_jobs_postgres.py`` the PostgreSQL one):

- ``insert`` writes a new job and refuses an id that exists;
- ``replace(job, expected_version)`` writes ``job`` only if the stored version is still
  ``expected_version``, and says whether it did: of two writers that read the same version, one wins;
- ``get`` raises :class:`~flows.jobs.model.JobNotFound` for an unknown id.

:func:`change` is the only way a job changes: read, apply a pure transition (:mod:`.machine`), write
conditionally, and on a lost race read again and re-check the transition against the new state — so
two concurrent ``SUCCESS`` signals cannot both win: the second one sees an ended execution.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from flows.jobs.model import DISPATCHED, EXECUTING, Job, JobError, JobNotFound

MAX_CONFLICT_RETRIES = 20


class JobStore(ABC):
    """A store of jobs keyed by id, with versioned conditional writes."""

    @abstractmethod
    def ensure(self) -> None:
        """Create the table(s) when missing (idempotent)."""

    @abstractmethod
    def insert(self, job: Job) -> Job:
        """Store a new job (version 1); :class:`JobError` when the id is taken."""

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """The stored job; :class:`JobNotFound` when there is none."""

    @abstractmethod
    def replace(self, job: Job, expected_version: int) -> bool:
        """Write ``job`` (its ``version`` already the next one) if the stored one is still
        ``expected_version``; False when another writer came first."""

    @abstractmethod
    def list(self, *, job_type: str | None = None, state: str | None = None, limit: int = 100) -> list[Job]:
        """Jobs, newest first, optionally of one type and/or in one state."""

    def list_changed_since(self, since: str | None = None, *, limit: int = 1_000_000) -> list[Job]:
        """Jobs changed at or after ``since`` (the record's ISO 8601 format; None: every job), newest
        first — what spend and budgets read (:mod:`flows.jobs.cost`). Backends may do it better."""
        return [job for job in self.list(limit=limit) if since is None or job.updated_at >= since]

    def live(self) -> list[dict[str, Any]]:
        """Every DISPATCHED or EXECUTING job, trimmed to what the sweeper reads (:func:`live_view`).
        Backends answer it with one indexed query; this default lists each state."""
        return [
            live_view(job.to_json())
            for state in LIVE_STATES
            for job in self.list(state=state, limit=1_000_000)
        ]


LIVE_STATES = (DISPATCHED, EXECUTING)
LIVE_EXECUTION_FIELDS = (
    "executionId",
    "attempt",
    "state",
    "createdAt",
    "updatedAt",
    "flowRunId",
    "infrastructureId",
)


def live_view(document: dict[str, Any]) -> dict[str, Any]:
    """The part of a job's JSON the sweeper reads: ids, state, version, flow run, dispatch time,
    estimations, the number of executions and the current execution without metrics."""
    current = document.get("currentExecution")
    return {
        "id": document["id"],
        "jobType": document["jobType"],
        "state": document["state"],
        "version": document.get("version", 0),
        "flowRunId": document.get("flowRunId"),
        "dispatchedAt": document.get("dispatchedAt"),
        "updatedAt": document.get("updatedAt"),
        "estimations": document.get("estimations") or {},
        "executionCount": len(document.get("executions") or []),
        "currentExecution": None
        if current is None
        else {name: current.get(name) for name in LIVE_EXECUTION_FIELDS},
    }


def change(store: JobStore, job_id: str, transition: Callable[[Job], Job]) -> Job:
    """Apply ``transition`` to the stored job and write the result conditionally; the new job.

    A lost race re-reads and re-applies, so the transition always judges the state it replaces;
    its :class:`JobError` (a refused transition) propagates with nothing written.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        current = store.get(job_id)
        changed = transition(current)
        changed.version = current.version + 1
        if store.replace(changed, current.version):
            return changed
    raise JobError(
        f"job {job_id} changed {MAX_CONFLICT_RETRIES} times while this change was tried; try again"
    )


class MemoryJobStore(JobStore):
    """Jobs in a dict: for unit tests and single-process tools (nothing survives the process)."""

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}
        self._lock = threading.Lock()

    def ensure(self) -> None:
        pass

    def insert(self, job: Job) -> Job:
        stored = job.model_copy(update={"version": 1})
        with self._lock:
            if job.id in self._jobs:
                raise JobError(f"a job with id {job.id} exists already")
            self._jobs[job.id] = stored.model_dump_json(by_alias=True)
        return stored

    def get(self, job_id: str) -> Job:
        with self._lock:
            text = self._jobs.get(job_id)
        if text is None:
            raise JobNotFound(f"no job {job_id!r}")
        return Job.model_validate_json(text)

    def replace(self, job: Job, expected_version: int) -> bool:
        with self._lock:
            text = self._jobs.get(job.id)
            if text is None:
                raise JobNotFound(f"no job {job.id!r}")
            if Job.model_validate_json(text).version != expected_version:
                return False
            self._jobs[job.id] = job.model_dump_json(by_alias=True)
            return True

    def list(self, *, job_type: str | None = None, state: str | None = None, limit: int = 100) -> list[Job]:
        with self._lock:
            jobs = [Job.model_validate_json(text) for text in self._jobs.values()]
        jobs = [
            j
            for j in jobs
            if (job_type is None or j.job_type == job_type) and (state is None or j.state == state)
        ]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)[:limit]
