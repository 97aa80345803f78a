"""Prefect tasks around AWS calls: retried with backoff, but only when the error is transient.

A throttled call, a 5xx or a dropped connection is worth another try; a missing object or a
refused request fails at once (the caller turns it into an answer).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from blocks.errors import is_transient


def is_transient_aws_error(task, task_run, state) -> bool:
    """Retry condition: only throttling, 5xx and connection problems are worth retrying."""
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False


# AWS I/O: retried with backoff, but only for transient errors (a missing object fails at once).
aws_task = task(
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient_aws_error,
    cache_policy=NO_CACHE,
    persist_result=False,
)
