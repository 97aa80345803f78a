"""Doing a job's work: one execution from EXECUTE to SUCCESS or FAILURE, in a ``with`` block.

A flow that a job type names is started with ``{"id": JOB_ID}`` and wraps its work in
:func:`executing`::

    with executing(id) as execution:
        ...                                   # INTERLINKED_JOB_ID / _EXECUTION_ID are set
        execution.progress(0.5, {"rows": n})
        execution.outputs(data={...}, files={...})

The block's exception ends the execution with FAILURE and the exception as its reason (and is
re-raised, so the flow run fails too); a normal exit ends it with SUCCESS.

Work that a flow run already does for its own reasons — each dataset of a submission, a
``prepare-experiment`` run started by the analysis service — is followed by a
:class:`TrackedJob` instead: the run makes the job itself (DISPATCHED to the run, no new run),
signals EXECUTE, reports throttled progress and metrics, and ends it with SUCCESS or FAILURE and a
code of :mod:`flows.jobs.failures`. There the job record is bookkeeping *about* the work, so a
failing job store never stops the work: each call logs the error, keeps it in ``problems`` (the
flow shows it where the user looks, e.g. the submission's certificate) and the work goes on; a job
left EXECUTING that way is ended by the sweeper (ORPHANED once its run has ended), so the record
still says what happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flows.jobs import client
from flows.jobs.artifacts import ExecutionArtifacts
from flows.jobs.failures import FailureCode, from_exception
from flows.jobs.model import EXECUTE, FAILURE, SUCCESS

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


DEFAULT_PROGRESS_INTERVAL = 2.0


def _plain(value: Any) -> Any:
    """``value`` as plain JSON (numpy numbers, paths, dates as their text)."""
    import json

    return json.loads(json.dumps(value, default=str))


class TrackedJob:
    """A job for part of the work this flow run does, recorded best-effort (see the module).

    Make one with :meth:`start`; then :meth:`execute` (when the work starts), :meth:`progress`
    (at most one store write per ``progress_interval`` seconds), :meth:`outputs`, and
    :meth:`succeed` or :meth:`fail`, which write the latest progress, metrics and outputs in the
    same change as the end. Thread-safe, one
    instance per job, so a run's parallel datasets each hold their own.
    """

    def __init__(
        self,
        job: dict[str, Any] | None,
        *,
        service: Any = None,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.job = job
        self.service = service
        self.progress_interval = progress_interval
        self.problems: list[str] = []
        self._warn = warn or logger.warning
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._pending: dict[str, Any] = {}
        self._artifacts: ExecutionArtifacts | None = None

    # -- making one ---------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        job_type: str,
        input_data: dict[str, Any],
        *,
        estimations: dict[str, Any] | None = None,
        group: str | None = None,
        execute: bool = False,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        warn: Callable[[str], None] | None = None,
    ) -> TrackedJob:
        """Store the job (DISPATCHED to this run; EXECUTING too with ``execute``). When the job store
        cannot be reached the work goes on: the result tracks nothing and ``problems`` says why."""
        tracked = cls(None, progress_interval=progress_interval, warn=warn)
        try:
            tracked.service = client.default_service()
            tracked.job = tracked.service.start(
                job_type, input_data, None, estimations, group=group, execute=execute
            ).to_json()
        except Exception as error:
            tracked._problem(f"could not create the {job_type} job", error)
        return tracked

    # -- what it is ---------------------------------------------------------------------------------
    @property
    def job_id(self) -> str | None:
        return self.job["id"] if self.job else None

    @property
    def execution_id(self) -> str | None:
        current = (self.job or {}).get("currentExecution") or {}
        return current.get("executionId") if current.get("state") == "EXECUTING" else None

    def _problem(self, what: str, error: BaseException) -> None:
        text = f"{what}: {type(error).__name__}: {error}"
        self.problems.append(text)
        self._warn(f"job store: {text} (the work goes on; the job record may lag)")

    def _apply(self, what: str, call: Callable[[], Any]) -> bool:
        try:
            self.job = call().to_json()
        except Exception as error:
            self._problem(f"could not {what} job {self.job_id}", error)
            return False
        if self._artifacts is not None:
            self._artifacts.refresh()
        return True

    # -- the lifecycle ------------------------------------------------------------------------------
    def execute(self) -> TrackedJob:
        """Signal EXECUTE (a new execution of this run) and put its progress and metrics
        artifacts on the run; nothing when the job already executes or there is none."""
        with self._lock:
            if self.job is None:
                return self
            if self.execution_id is None:
                self._apply("start an execution of", lambda: self.service.signal(self.job_id, EXECUTE))
            if self.execution_id is not None and self._artifacts is None:
                artifacts = ExecutionArtifacts(self.job_id, lambda _id: self.job, interval=None)
                self._artifacts = artifacts.__enter__()
        return self

    def progress(self, fraction: float | None = None, metrics: dict[str, Any] | None = None) -> None:
        """Report progress (in [0, 1]) and metrics; written now if ``progress_interval`` has passed
        since the last write, else kept for the next write (and written at the end at the latest)."""
        with self._lock:
            if self.execution_id is None:
                return
            if fraction is not None:
                self._pending["progress"] = max(0.0, min(1.0, float(fraction)))
            if metrics:
                self._pending.setdefault("metrics", {}).update(metrics)
            if time.monotonic() - self._last_write >= self.progress_interval:
                self._flush()

    def _flush(self) -> None:
        if "progress" not in self._pending and "metrics" not in self._pending:
            return
        if self.execution_id is None:
            return
        pending = {key: self._pending.pop(key) for key in ("progress", "metrics") if key in self._pending}
        self._last_write = time.monotonic()
        execution_id = self.execution_id
        self._apply(
            "report progress of",
            lambda: self.service.update_execution(
                self.job_id, execution_id, progress=pending.get("progress"), metrics=pending.get("metrics")
            ),
        )

    def outputs(self, *, data: dict[str, Any] | None = None, files: dict[str, Any] | None = None) -> None:
        """The job's ``outputData`` / ``outputFiles``, written with the end of the execution."""
        with self._lock:
            if data is not None:
                self._pending["output_data"] = _plain(data)
            if files is not None:
                self._pending["output_files"] = _plain(files)

    def succeed(self) -> None:
        """End the execution with SUCCESS (after writing the last progress and metrics)."""
        self._end(SUCCESS)

    def fail(
        self,
        reason: str | BaseException,
        *,
        code: FailureCode | str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        """End the execution with FAILURE: ``reason`` (text, or the exception, whose code and
        traceback :func:`flows.jobs.failures.from_exception` reads), ``code`` overrides the code."""
        if isinstance(reason, BaseException):
            failure = from_exception(reason)
            text = failure_reason(reason)
            code = code or failure.code
            evidence = {**failure.evidence, **(evidence or {})}
        else:
            text = str(reason)
        self._end(
            FAILURE,
            reason=text,
            code=FailureCode(code) if code else FailureCode.CODE_ERROR,
            evidence=evidence,
        )

    def _end(self, state: str, **failure: Any) -> None:
        with self._lock:
            if self.execution_id is None:
                self._close_artifacts()
                return
            execution_id = self.execution_id
            pending, self._pending = self._pending, {}  # the last reports and outputs: one write with the end

            def end(report: dict[str, Any]) -> Any:
                return self.service.signal_execution(
                    self.job_id,
                    execution_id,
                    state,
                    failure_reason=failure.get("reason"),
                    failure_code=failure["code"].value if failure.get("code") else None,
                    failure_evidence=failure.get("evidence"),
                    last_report=report,
                )

            if not self._apply(f"record {state} of", lambda: end(pending)) and pending:
                self._apply(f"record {state} (without its last report) of", lambda: end({}))
            self._close_artifacts()

    def _close_artifacts(self) -> None:
        if self._artifacts is not None:
            self._artifacts.__exit__(None, None, None)
            self._artifacts = None
