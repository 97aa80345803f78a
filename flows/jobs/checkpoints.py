"""Checkpoints: an execution attaches a small JSON value to a progress update; the next execution
of the same job starts with it and can resume (as Temporal's heartbeat details do).

Where it lives: in the job's record — ``checkpoint`` and ``checkpointedAt`` on the execution — so in
the store (the source of truth) and, like the whole job, in its S3 copy
``results/{job_id}/job.json``. At ``EXECUTE`` the new execution is given the job's last checkpoint
(:func:`carry_forward`), so the job JSON that the signal returns has it at
``currentExecution.checkpoint``, and ``get_checkpoint(job_id)`` reads it at any time. Because the
record is rewritten on every change, a checkpoint is size-limited
(``INTERLINKED_JOBS_CHECKPOINT_MAX_BYTES``, 64 KiB by default): big state belongs in S3, with its
key in the checkpoint.

Pure functions, like :mod:`.machine`: a job in, its next version (or a :class:`JobError`) out.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flows.jobs.model import Job, JobError


def _finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and infinities are not JSON")


def check_checkpoint(checkpoint: Any, max_bytes: int) -> Any:
    """``checkpoint`` if it is plain JSON of at most ``max_bytes`` (compact, UTF-8), else :class:`JobError`."""
    try:
        encoded = json.dumps(checkpoint, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise JobError(
            f"a checkpoint must be plain JSON (objects, lists, strings, numbers): {error}"
        ) from None
    size = len(encoded.encode("utf-8"))
    if size > max_bytes:
        raise JobError(
            f"the checkpoint is {size:,} bytes as JSON; the limit is {max_bytes:,} "
            "(INTERLINKED_JOBS_CHECKPOINT_MAX_BYTES): store big state in S3 and checkpoint its key"
        )
    return json.loads(encoded)  # a copy: later changes of the caller's object do not leak in


def attach(job: Job, execution_id: str, checkpoint: Any) -> Job:
    """Record ``checkpoint`` on the execution (already checked and updated by the caller's transition)."""
    execution = job.execution(execution_id)
    execution.checkpoint = checkpoint
    execution.checkpointed_at = execution.updated_at
    return job


def last_checkpoint(job: Job) -> tuple[Any, str | None]:
    """(the job's last checkpoint, when it was taken) — (None, None) when no execution attached one."""
    for execution in reversed(job.executions):
        if execution.checkpointed_at is not None:
            return execution.checkpoint, execution.checkpointed_at
    return None, None


def carry_forward(job: Job) -> Job:
    """Give the newest execution (just created by EXECUTE) the job's last checkpoint to resume from."""
    if len(job.executions) < 2:
        return job
    checkpoint, taken = last_checkpoint(job.model_copy(update={"executions": job.executions[:-1]}))
    if taken is not None:
        current = job.executions[-1]
        current.checkpoint = checkpoint
        current.checkpointed_at = taken
    return job
