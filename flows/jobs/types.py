"""Job types: each names the deployment that does the work.

The built-in table is ``job_types.json`` next to this module; ``INTERLINKED_JOB_TYPES_FILE`` names a
JSON file of the same shape whose entries are added (or replace built-in ones), so a site registers
its own job types without a code change. An entry is ``{"flow": NAME}`` (the deployment
``NAME/{deployment set}``, the set from ``INTERLINKED_DEPLOYMENT_SET``, default ``local``) or
``{"deployment": "flow/deployment"}`` (exactly that one).

Optional keys: ``heartbeatTimeoutSeconds`` / ``startTimeoutSeconds`` (the sweeper's windows);
``createdBy: FLOW`` — jobs of this type are made by that flow for part of its own work (a
submission's datasets), never created, dispatched or retried by hand; ``ownsRun: false`` — the
job's flow run does other work too, so the sweeper fails the job but neither stops the run's
infrastructure nor ends the run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.jobs.model import JobError

BUILTIN_FILE = Path(__file__).with_name("job_types.json")
TYPES_FILE_ENV = "INTERLINKED_JOB_TYPES_FILE"
DEPLOYMENT_SET_ENV = "INTERLINKED_DEPLOYMENT_SET"


@dataclass(frozen=True)
class JobTypes:
    """The job types this system runs, and the deployment of each."""

    entries: dict[str, dict[str, Any]]
    deployment_set: str = "local"

    def names(self) -> list[str]:
        return sorted(self.entries)

    def deployment(self, job_type: str) -> str:
        """``flow/deployment`` for ``job_type``; :class:`JobError` for an unknown type."""
        entry = self.entries.get(job_type)
        if entry is None:
            raise JobError(f"unknown job type {job_type!r}; known types: {', '.join(self.names()) or 'none'}")
        return entry.get("deployment") or f"{entry['flow']}/{self.deployment_set}"

    def created_by(self, job_type: str) -> str | None:
        """The flow that makes the jobs of ``job_type`` for its own work (None: anyone may)."""
        return (self.entries.get(job_type) or {}).get("createdBy")

    def owns_run(self, job_type: str) -> bool:
        """Whether a job of ``job_type`` is all its flow run does (False: the run is shared)."""
        return (self.entries.get(job_type) or {}).get("ownsRun", True) is not False

    def check_by_hand(self, job_type: str, action: str) -> None:
        """:class:`JobError` when jobs of ``job_type`` are made by a flow and not by hand."""
        flow_name = self.created_by(job_type)
        if flow_name:
            raise JobError(
                f"cannot {action} a {job_type} job by hand: the {flow_name} flow makes and runs these "
                f"jobs for its own work ({self.entries[job_type].get('description', '').strip()})"
            )


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise JobError(f"cannot read the job types in {path}: {error}") from None
    if not isinstance(document, dict):
        raise JobError(f"{path}: job types must be a JSON object of name → entry")
    for name, entry in document.items():
        if not isinstance(entry, dict) or not (
            isinstance(entry.get("flow"), str) or isinstance(entry.get("deployment"), str)
        ):
            raise JobError(f'{path}: job type {name!r} needs a "flow" or a "deployment" name')
    return document


def load_job_types() -> JobTypes:
    """The built-in job types plus those of ``INTERLINKED_JOB_TYPES_FILE``."""
    entries = _read(BUILTIN_FILE)
    extra = os.environ.get(TYPES_FILE_ENV)
    if extra:
        entries.update(_read(Path(extra)))
    return JobTypes(entries, os.environ.get(DEPLOYMENT_SET_ENV) or "local")
