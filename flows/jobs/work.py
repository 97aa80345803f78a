"""Doing a job's work: one execution from EXECUTE to SUCCESS or FAILURE, in a ``with`` block.

A flow that a job type names is started with ``{"id": JOB_ID}`` and wraps its work in
:func:`executing`::

    with executing(id) as execution:
        ...                                   # INTERLINKED_JOB_ID / _EXECUTION_ID are set
        execution.progress(0.5, {"rows": n})
        execution.outputs(data={...}, files={...})

The block's exception ends the execution with FAILURE and the exception as its reason (and is
re-raised, so the flow run fails too); a normal exit ends it with SUCCESS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flows.jobs import client
from flows.jobs.artifacts import ExecutionArtifacts
from flows.jobs.failures import from_exception
from flows.jobs.model import FAILURE, SUCCESS

logger = logging.getLogger(__name__)


@dataclass
class RunningExecution:
    """The execution a ``with executing(...)`` block runs; its job as it was at EXECUTE."""

    job: dict[str, Any]
    execution_id: str

    @property
    def job_id(self) -> str:
        return self.job["id"]

    @property
    def checkpoint(self) -> Any:
        """The checkpoint this execution resumes from (the job's last one at EXECUTE; None: start over)."""
        return self.job["currentExecution"].get("checkpoint")

    def progress(
        self, fraction: float, metrics: dict[str, Any] | None = None, checkpoint: Any = None
    ) -> dict[str, Any]:
        return client.update_execution(
            self.job_id, self.execution_id, progress=fraction, metrics=metrics, checkpoint=checkpoint
        )

    def outputs(
        self, *, data: dict[str, Any] | None = None, files: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return client.update(self.job_id, output_data=data, output_files=files)


def failure_reason(error: BaseException) -> str:
    """The reason an exception gives, as the job shows it (type and message, one paragraph)."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@contextmanager
def executing(job_id: str) -> Iterator[RunningExecution]:
    """Signal EXECUTE (a new execution), run the block, then SUCCESS or FAILURE with the reason."""
    job = client.signal(job_id, "EXECUTE")
    execution = RunningExecution(job, job["currentExecution"]["executionId"])
    # Outer: the progress + metrics artifacts on the flow run (their last update sees the end).
    with ExecutionArtifacts(job_id, client.get), _ending(job_id, execution):
        yield execution


@contextmanager
def _ending(job_id: str, execution: RunningExecution) -> Iterator[None]:
    """SUCCESS on a normal exit; FAILURE with the reason (and the error re-raised) otherwise."""
    try:
        yield
    except BaseException as error:
        try:
            failure = from_exception(error)
            client.signal_execution(
                job_id,
                execution.execution_id,
                FAILURE,
                failure_reason=failure_reason(error),
                failure_code=failure.code.value,
                failure_evidence=failure.evidence,
            )
        except Exception as signal_error:  # keep the work's own error the one that surfaces
            logger.error("could not record the failure of job %s: %s", job_id, signal_error)
        raise
    client.signal_execution(job_id, execution.execution_id, SUCCESS)
