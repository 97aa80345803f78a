"""Following AWS Batch jobs: shared ``describe_jobs`` calls, and one job's watch until it ends.

:class:`Coalesced` merges the one-id look-ups of concurrent runs into bulk requests.
:class:`JobWatch` polls one job on the worker's common clock, logs and emits every status change,
terminates the job when its flow run is cancelled, warns (and optionally gives up) when it stays
RUNNABLE, and returns how the watch ended; mapping that onto the flow run is the worker's part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State
from prefect.utilities.asyncutils import run_sync_in_worker_thread

from interlinked.workers.batch.configuration import BatchJobConfiguration, runs_prefect_engine

TERMINAL = frozenset({"SUCCEEDED", "FAILED"})
WAITING = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"})
CANCEL_REASON = "Flow run cancelled in Prefect"
RUNNABLE_TIMEOUT_REASON = "RUNNABLE longer than runnable_timeout_seconds (Prefect aws-batch worker)"


class Coalesced:
    """Look-ups of one id at a time by concurrent runs, merged into bulk requests.

    Runs poll on a common clock (multiples of their interval), so the ids asked for within a few
    milliseconds go out together: ``fetch(source, ids)`` once per ``chunk`` ids and source (a
    Batch client, the Prefect client), instead of one request per run.
    """

    def __init__(self, fetch: Callable[[Any, list[str]], Awaitable[dict[str, Any]]], chunk: int):
        self._fetch = fetch
        self._chunk = chunk
        self._waiting: dict[int, tuple[Any, dict[str, list[asyncio.Future]]]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, source: Any, key: str) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        if id(source) not in self._waiting:
            self._waiting[id(source)] = (source, {})
            task = loop.create_task(self._flush(id(source)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._waiting[id(source)][1].setdefault(key, []).append(future)
        return await future

    async def _flush(self, source_id: int) -> None:
        await asyncio.sleep(0.05)
        source, waiting = self._waiting.pop(source_id)
        keys = list(waiting)
        found: dict[str, Any] = {}
        try:
            for start in range(0, len(keys), self._chunk):
                found.update(await self._fetch(source, keys[start : start + self._chunk]))
        except Exception as error:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key))


async def describe_jobs(client: Any, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``batch.describe_jobs`` for ``job_ids``: job id → job (unknown ids are absent)."""
    response = await run_sync_in_worker_thread(client.describe_jobs, jobs=job_ids)
    return {job["jobId"]: job for job in response.get("jobs", [])}


async def flow_run_states(client: Any, flow_run_ids: list[str]) -> dict[str, State]:
    """The current states of flow runs (Prefect client): flow run id → state."""
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in flow_run_ids])),
        limit=len(flow_run_ids),
    )
    return {str(run.id): run.state for run in runs}


async def sleep_until_next_tick(interval: float) -> None:
    """Sleep to the next multiple of ``interval`` (every run polls on the same clock)."""
    await anyio.sleep(interval - (time.monotonic() % interval))


@dataclass
class WatchEnd:
    """How a watch ended: the job's final ``describe_jobs`` entry, or why the run crashed without one."""

    job: dict[str, Any] | None = None
    crash: str | None = None


@dataclass
class JobWatch:
    """Follow one Batch job until it ends (see the module docstring); :meth:`run` returns a :class:`WatchEnd`.

    The worker hands in narrow callbacks: ``describe(client, job_id)`` (shared describe calls),
    ``cancel_requested()`` (the flow run was cancelled in Prefect) and ``emit(name, payload)``
    (an ``aws-batch.job.<name>`` event).
    """

    job_id: str
    client: Any
    configuration: BatchJobConfiguration
    describe: Callable[[Any, str], Awaitable[dict[str, Any] | None]]
    cancel_requested: Callable[[], Awaitable[bool]]
    emit: Callable[[str, dict[str, Any]], None]
    logger: logging.Logger | logging.LoggerAdapter

    async def run(self) -> WatchEnd:
        job_id, logger = self.job_id, self.logger
        interval = self.configuration.poll_interval_seconds
        last_status: str | None = None
        runnable_since: float | None = None
        warned = False
        missing = 0
        failing = 0
        cancelling_since: float | None = None
        terminated = False
        engine_owns_state = runs_prefect_engine(self.configuration.command)
        while True:
            try:
                job = await self.describe(self.client, job_id)
                failing = 0
            except Exception as error:
                failing += 1
                if failing == 1 or failing % 60 == 0:
                    logger.warning("Could not describe AWS Batch job %s (will retry): %s", job_id, error)
                await sleep_until_next_tick(interval)
                continue
            if job is None:
                missing += 1
                if missing >= 3:
                    message = f"AWS Batch job {job_id} is unknown to AWS Batch (deleted, or another region)"
                    logger.error(message)
                    return WatchEnd(crash=message)
                await sleep_until_next_tick(interval)
                continue
            missing = 0
            status = job["status"]
            if status != last_status:
                reason = job.get("statusReason")
                logger.info("AWS Batch job %s is %s%s", job_id, status, f": {reason}" if reason else "")
                self.emit(status.lower(), {"status": status, "statusReason": reason})
                last_status = status
            if status in TERMINAL:
                return WatchEnd(job=job)
            if not terminated and await self.cancel_requested():
                now = time.monotonic()
                cancelling_since = cancelling_since if cancelling_since is not None else now
                if (
                    status in WAITING
                    or not engine_owns_state
                    or now - cancelling_since >= self.configuration.cancel_grace_seconds
                ):
                    await self._terminate(CANCEL_REASON)
                    terminated = True
                    logger.info("Flow run cancelled: terminated AWS Batch job %s (was %s)", job_id, status)
            if status == "RUNNABLE":
                now = time.monotonic()
                runnable_since = runnable_since if runnable_since is not None else now
                waited = now - runnable_since
                warn_after = self.configuration.runnable_warning_seconds
                if warn_after is not None and waited >= warn_after and not warned:
                    warned = True
                    logger.warning(
                        "AWS Batch job %s has been RUNNABLE for %.0f s: its compute environment cannot "
                        "place it (vCPU/memory above what the environment's instance types or max vCPUs "
                        "allow, the environment disabled or invalid, or no capacity / Spot price)",
                        job_id,
                        waited,
                    )
                    self.emit("stuck-runnable", {"seconds": round(waited)})
                limit = self.configuration.runnable_timeout_seconds
                if limit is not None and waited >= limit:
                    return await self._give_up_runnable(waited, limit)
            else:
                runnable_since = None
            await sleep_until_next_tick(interval)

    async def _terminate(self, reason: str) -> None:
        await run_sync_in_worker_thread(self.client.terminate_job, jobId=self.job_id, reason=reason)

    async def _give_up_runnable(self, waited: float, limit: float) -> WatchEnd:
        message = (
            f"AWS Batch job {self.job_id} stayed RUNNABLE for {waited:.0f} s (runnable_timeout_seconds={limit:g}): "
            "terminated; its compute environment could not place it"
        )
        await self._terminate(RUNNABLE_TIMEOUT_REASON)
        self.logger.error(message)
        return WatchEnd(crash=message)
