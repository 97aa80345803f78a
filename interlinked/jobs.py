"""The jobs SDK (seed 004) as users import it: ``from interlinked import jobs``.

>>> job = jobs.create("script", {"name": "n", "script": "add.py", "func": "add", "arguments": {}})
>>> jobs.signal(job["id"], "DISPATCH")

Inside the work (a flow run started with ``{"id": JOB_ID}``)::

    job = jobs.signal(job_id, "EXECUTE")          # a new execution; sets INTERLINKED_*_ID
    jobs.progress(0.5, {"rows": 1000})             # the current execution's progress and metrics
    jobs.progress(0.5, checkpoint={"done": 1000})  # ... and a checkpoint the next execution resumes from
    state = jobs.get_checkpoint()                  # the job's last checkpoint (None the first time)
    jobs.update(job_id, output_data={...}, output_files={...})
    jobs.signal_execution(job_id, job["currentExecution"]["executionId"], "SUCCESS")

Every function takes and returns the job as the seed's JSON; a refused request raises
:class:`JobError` with the reason and changes nothing. The implementation is :mod:`flows.jobs.client`.
"""

from __future__ import annotations

from flows.jobs.client import (
    EXECUTION_ID_ENV,
    JOB_ID_ENV,
    cancel,
    cost_summary,
    create,
    get,
    get_checkpoint,
    list_jobs,
    place,
    progress,
    retry,
    signal,
    signal_execution,
    update,
    update_execution,
)
from flows.jobs.model import JobError, JobNotFound

__all__ = [
    "EXECUTION_ID_ENV",
    "JOB_ID_ENV",
    "JobError",
    "JobNotFound",
    "cancel",
    "cost_summary",
    "create",
    "get",
    "get_checkpoint",
    "list_jobs",
    "place",
    "progress",
    "retry",
    "signal",
    "signal_execution",
    "update",
    "update_execution",
]
