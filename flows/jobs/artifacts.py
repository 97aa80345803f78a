"""A job's execution in the Prefect UI: a progress artifact and a metrics table on its flow run.

The job store is the source of truth; what the work reports there (``progress()`` from the flow
itself, or from the script it runs, through the SDK) is mirrored onto the run that executes it:

- a **progress** artifact (0 to 100 %, its description the latest metrics in one line), and
- a **table** artifact ``job-<id>-execution``: one row per metric, plus the execution's id, attempt,
  state and, at the end, its failure reason.

Both are created once at EXECUTE and updated in place (no new artifact version per report), by a
mirror thread that reads the job every ``interval`` seconds and writes only on a change, and once
more when the execution ends. With ``interval=None`` there is no thread: the caller, which holds
the job as its last change returned it, calls :meth:`ExecutionArtifacts.refresh` after a change
(what :class:`flows.jobs.work.TrackedJob` does, so a submission's datasets cost no polling). The mirror only *reads* the work's own reports: it is no heartbeat,
so a hung script still looks hung to the sweeper. Failures of the mirror are logged and never fail
the work.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0


def artifact_key(job_id: str) -> str:
    """The table artifact's key: lowercase letters, digits and dashes, as Prefect requires."""
    return ("job-" + re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-"))[:90] + "-execution"


def execution_rows(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics table of the job's current execution (``[]`` when it has none)."""
    execution = job.get("currentExecution") or {}
    if not execution:
        return []
    rows: list[dict[str, Any]] = [
        {"field": "job", "value": job.get("id")},
        {"field": "execution", "value": execution.get("executionId")},
        {"field": "attempt", "value": execution.get("attempt")},
        {"field": "state", "value": execution.get("state")},
        {"field": "progress", "value": execution.get("progress")},
    ]
    for name, value in sorted((execution.get("metrics") or {}).items()):
        rows.append({"field": f"metric: {name}", "value": value})
    if execution.get("failureReason"):
        rows.append({"field": "failure reason", "value": execution["failureReason"]})
    return rows


def _percent(job: dict[str, Any]) -> float:
    progress = (job.get("currentExecution") or {}).get("progress") or 0.0
    return round(100.0 * max(0.0, min(1.0, float(progress))), 2)


def _description(job: dict[str, Any]) -> str:
    metrics = (job.get("currentExecution") or {}).get("metrics") or {}
    shown = ", ".join(f"{name} {value}" for name, value in sorted(metrics.items())[:8])
    head = f"Job {job.get('id')} ({job.get('jobType') or 'job'})"
    return f"{head}: {shown}" if shown else head


def _flow_run_id() -> Any:
    """The flow run this code runs in (also from a task run's thread); None outside one."""
    from prefect.context import FlowRunContext, TaskRunContext

    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return context.flow_run.id
    task_context = TaskRunContext.get()
    if task_context is not None and task_context.task_run is not None:
        return task_context.task_run.flow_run_id
    return None


class ExecutionArtifacts:
    """The progress and metrics artifacts of one execution, kept current from the job store.

    ``read`` returns the job as the store has it (``flows.jobs.client.get``). Use as a context
    manager around the work; outside a flow run it does nothing.
    """

    def __init__(self, job_id: str, read, *, interval: float | None = DEFAULT_INTERVAL) -> None:
        self.job_id = job_id
        self.read = read
        self.interval = interval
        self.progress_id = None
        self.table_id = None
        self._last: tuple[float, str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ExecutionArtifacts:
        flow_run_id = _flow_run_id()
        if flow_run_id is None:
            return self
        try:
            self._create(flow_run_id, self.read(self.job_id))
        except Exception as error:
            logger.warning("could not create the UI artifacts of job %s: %s", self.job_id, error)
            return self
        if self.interval is None:
            return self
        self._thread = threading.Thread(target=self._mirror, name=f"job-{self.job_id}-ui", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=(self.interval or 0) + 5)
        self.refresh()

    def _create(self, flow_run_id: Any, job: dict[str, Any]) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate

        with get_client(sync_client=True) as client:
            self.progress_id = client.create_artifact(
                ArtifactCreate(
                    type="progress",
                    data=_percent(job),
                    description=_description(job),
                    flow_run_id=flow_run_id,
                )
            ).id
            self.table_id = client.create_artifact(
                ArtifactCreate(
                    type="table",
                    key=artifact_key(self.job_id),
                    data=json.dumps(execution_rows(job), default=str),
                    description=f"Job {self.job_id}: its current execution and metrics",
                    flow_run_id=flow_run_id,
                )
            ).id

    def refresh(self) -> bool:
        """Read the job and update both artifacts if it changed; True when something was written."""
        if self.progress_id is None:
            return False
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        try:
            job = self.read(self.job_id)
            now = (_percent(job), _description(job), json.dumps(execution_rows(job), default=str))
            if now == self._last:
                return False
            with get_client(sync_client=True) as client:
                client.update_artifact(self.progress_id, ArtifactUpdate(data=now[0], description=now[1]))
                client.update_artifact(self.table_id, ArtifactUpdate(data=now[2]))
            self._last = now
            return True
        except Exception as error:
            logger.warning("could not update the UI artifacts of job %s: %s", self.job_id, error)
            return False

    def _mirror(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            self.refresh()


__all__ = ["ExecutionArtifacts", "artifact_key", "execution_rows"]
