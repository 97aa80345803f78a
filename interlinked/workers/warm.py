"""The warm local work pool: flow runs start from a pre-imported fork server, not a cold interpreter.

A stock process worker polls every few seconds and then starts ``python -m prefect.engine``, which
spends seconds importing Prefect and the flow's libraries before the flow begins. This worker:

- keeps a zygote (``interlinked.workers.zygote``) that has imported Prefect, boto3 and every flow
  module once, and forks it per flow run (milliseconds);
- listens to the Prefect server's event stream and fetches new runs the moment one of its pool
  is scheduled, instead of waiting for the next poll (polling stays on as a safety net).

It accepts the same job variables as the ``process`` pool (env, working_dir, ...), reports the
child's pid as the run's infrastructure id, and stops the child's whole process group when a run
is cancelled. When the code the fork server pre-imported changes on disk (`interlinked up`
redeploys changed flows), the next run starts a new fork server (:class:`ZygotePool`); the old one
serves its runs in flight to their end, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pkgutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import InfrastructureNotFound
from prefect.logging import get_logger
from prefect.settings import get_current_settings
from prefect.states import Cancelled
from prefect.workers.base import BaseWorker, BaseWorkerResult
from prefect.workers.process import ProcessJobConfiguration, ProcessVariables

from interlinked.workers.zygote import code_fingerprint, code_roots

WORKER_TYPE = "warm-process"
logger = get_logger("workers.warm-process")
# Flow runs that may be between "forked" and "Running" at once. Starting a run is the CPU-heavy
# part (the engine's client, states, logs); a burst of hundreds starting together makes every one
# of them slow and the server with them. A run holds its start slot only until it reports
# Running (or exits), so long runs never block new ones. INTERLINKED_WARM_START_SLOTS changes it.
# Measured on 2 cores, bursts of 500 trivial runs: 4 slots drained 234 runs/min with a quarter of
# the CPU idle (each start waits on several requests in turn); 8 drained 292-322, 16 295-312.
DEFAULT_START_SLOTS = 8
# Seconds between the worker's reads of its live runs that are Cancelling or Suspended (one read for
# all of them): the fallback when the server's event did not reach the worker.
CANCELLATION_POLL_SECONDS = 5.0
# A run that never reports Running (a crash in the engine's start) gives its slot back after this.
START_SLOT_TIMEOUT = 30.0


# The worker reads a run's deployment twice and its flow once before starting it (Prefect's
# BaseWorker: an existence check, then the job configuration). In a burst every run of a deployment
# asks the same; a read of the same object within this many seconds (or one still in flight) is
# answered from that read instead. INTERLINKED_WARM_READ_REUSE_SECONDS changes it (0: no reuse).
DEFAULT_READ_REUSE_SECONDS = 1.0


def _setting(name: str, default: float, *, minimum: float = 0.0, kind: type = float) -> Any:
    """A number from the environment (``name``), at least ``minimum``; ``default`` when unset or
    not a number."""
    try:
        return max(kind(minimum), kind(os.environ.get(name, default)))
    except ValueError:
        return default


# Prefect's settings as environment variables, computed once per settings object (see
# settings_environment): a flow-run process gets them all.
_SETTINGS_ENVIRONMENT: tuple[Any, dict[str, str]] | None = None


def settings_environment() -> dict[str, str]:
    """The current Prefect settings as environment variables (``to_environment_variables``).

    Prefect serialises its whole settings tree for every run it starts (the job configuration's
    base environment), about 40 ms of CPU each time, and the answer only changes with the settings
    object: a burst of runs spent half the worker's CPU there. It is computed once per settings
    object (a new profile or ``temporary_settings`` gets its own) and copied out.
    """
    global _SETTINGS_ENVIRONMENT
    settings = get_current_settings()
    cached = _SETTINGS_ENVIRONMENT
    if cached is None or cached[0] is not settings:
        cached = (settings, settings.to_environment_variables(exclude_unset=True))
        _SETTINGS_ENVIRONMENT = cached
    return dict(cached[1])


class WarmJobConfiguration(ProcessJobConfiguration):
    """The process pool's job configuration; its base environment comes from :func:`settings_environment`."""

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        return settings_environment()


def read_reuse_seconds() -> float:
    return _setting("INTERLINKED_WARM_READ_REUSE_SECONDS", DEFAULT_READ_REUSE_SECONDS)


class RecentReads:
    """Reads of one kind of object by id, shared when they are at most ``seconds`` apart.

    Concurrent reads of one id make one request; a read that fails is not kept (the next asks the
    server again, so a deleted deployment is still noticed).
    """

    def __init__(self, read: Any, seconds: float, clock: Any = None):
        self._read = read
        self._seconds = seconds
        self._clock = clock or asyncio.get_running_loop().time
        self._reads: dict[Any, tuple[float, asyncio.Future]] = {}

    async def __call__(self, object_id: Any) -> Any:
        now = self._clock()
        kept = self._reads.get(object_id)
        if kept is None or now - kept[0] > self._seconds or (kept[1].done() and kept[1].exception()):
            future = asyncio.ensure_future(self._read(object_id))
            kept = (now, future)
            self._reads[object_id] = kept
            for stale in [key for key, (at, _) in self._reads.items() if now - at > self._seconds]:
                del self._reads[stale]
        return await asyncio.shield(kept[1])


# What every run's engine reads from the server before its flow starts (the deployment, flow, work
# queue and pool, the default result storage) is read by the worker and sent with the spawn request;
# the work queue and the storage setting are read again after this many seconds.
# INTERLINKED_WARM_ENGINE_READS_SECONDS changes it (0: each run reads them itself, as with Prefect's worker).
DEFAULT_ENGINE_READS_SECONDS = 10.0


def engine_reads_seconds() -> float:
    return _setting("INTERLINKED_WARM_ENGINE_READS_SECONDS", DEFAULT_ENGINE_READS_SECONDS)


def start_slots() -> int:
    return _setting("INTERLINKED_WARM_START_SLOTS", DEFAULT_START_SLOTS, minimum=1, kind=int)


def default_preload() -> list[str]:
    """Every module of the ``flows`` packages: what the deployments' entrypoints import."""
    modules = []
    try:
        import flows

        modules = [
            info.name
            for info in pkgutil.walk_packages(flows.__path__, prefix="flows.")
            # `python -m` entry points run when imported; their packages are preloaded anyway.
            if not info.name.endswith(".__main__")
        ]
    except ImportError:
        pass
    extra = os.environ.get("INTERLINKED_WARM_PRELOAD", "")
    return modules + [name.strip() for name in extra.split(",") if name.strip()]


class WarmProcessResult(BaseWorkerResult):
    """How a forked flow-run process ended."""


class Zygote:
    """The worker's handle on its fork server: spawn requests and exit notifications."""

    def __init__(self, preload: list[str]):
        self.preload = preload
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._spawned: dict[str, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}
        self._early_exits: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self.ready_info: dict[str, Any] = {}

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "interlinked.workers.zygote",
            *self.preload,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            limit=1 << 20,
            # The settings every run gets (WarmProcessWorker._environment): a run whose settings
            # inputs are the fork server's keeps its settings instead of building them again.
            env={**os.environ, **settings_environment()},
        )
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the warm pool's fork server exited while starting (see the worker log)")
        self.ready_info = json.loads(line)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def stopped_on_purpose(self) -> bool:
        """It ended by SIGTERM or SIGINT (sent to the worker's group), not by a crash."""
        return self.process is not None and self.process.returncode in (-signal.SIGTERM, -signal.SIGINT)

    async def _read(self) -> None:
        assert self.process is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            message = json.loads(line)
            op = message.get("op")
            if op == "spawned":
                future = self._spawned.pop(message["key"], None)
                if future and not future.done():
                    future.set_result(message["pid"])
            elif op == "error":
                if str(message.get("key")).startswith("notify:"):
                    logger.warning("the fork server could not notify a run: %s", message.get("message"))
                    continue
                future = self._spawned.pop(message.get("key"), None)
                if future and not future.done():
                    future.set_exception(RuntimeError(message["message"]))
            elif op == "exited":
                future = self._exits.pop(message["pid"], None)
                if future and not future.done():
                    future.set_result(message["code"])
                else:
                    self._early_exits[message["pid"]] = message["code"]
        # The fork server is gone: nobody will report on these any more.
        for future in [*self._spawned.values(), *self._exits.values()]:
            if not future.done():
                future.set_exception(RuntimeError("the warm pool's fork server exited"))
        self._spawned.clear()
        self._exits.clear()

    async def request_spawn(
        self,
        key: str,
        flow_run_id: str,
        env: dict[str, str],
        cwd: str,
        prefetched: dict[str, Any] | None = None,
    ) -> asyncio.Future:
        """Send a spawn request; the future resolves to the child's pid."""
        async with self._lock:
            if not self.alive:
                if self.stopped_on_purpose:
                    # The worker's process group is being stopped (`interlinked down`, Ctrl-C): a new
                    # fork server now would fork a run in a session of its own after the stop.
                    raise RuntimeError(
                        f"the warm pool's fork server was stopped (exit {self.process.returncode}): "
                        "the worker is stopping and starts no new run"
                    )
                await self.start()
            future = asyncio.get_running_loop().create_future()
            self._spawned[key] = future
            request = {
                "op": "spawn",
                "key": key,
                "flow_run_id": flow_run_id,
                "env": env,
                "cwd": cwd,
                # The worker tells the run when it is suspended (see _relay_suspension).
                "relay_suspension": True,
            }
            if prefetched:
                request["prefetched"] = prefetched
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            await self.process.stdin.drain()
        return future

    async def spawn(
        self,
        key: str,
        flow_run_id: str,
        env: dict[str, str],
        cwd: str,
        prefetched: dict[str, Any] | None = None,
    ) -> int:
        return await (await self.request_spawn(key, flow_run_id, env, cwd, prefetched))

    async def notify(self, pid: int, message: dict[str, Any]) -> bool:
        """Send ``message`` down the notification pipe of run ``pid``; False when this fork server is gone."""
        async with self._lock:
            if not self.alive:
                return False
            request = {"op": "notify", "pid": pid, "message": message}
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            try:
                await self.process.stdin.drain()
            except ConnectionError:
                return False
        return True

    async def retire(self) -> None:
        """No more spawns here; the fork server exits once its runs in flight have ended (their
        exits are still reported, so :meth:`wait` keeps working for them)."""
        async with self._lock:
            if self.alive:
                self.process.stdin.write(b'{"op": "retire"}\n')
                with contextlib.suppress(ConnectionError):
                    await self.process.stdin.drain()

    async def wait(self, pid: int) -> int:
        if pid in self._early_exits:
            return self._early_exits.pop(pid)
        future = self._exits.setdefault(pid, asyncio.get_running_loop().create_future())
        return await future

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()
        if self.process and self.process.returncode is None:
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()


class ZygotePool:
    """The fork server new runs are forked from, replaced when the code it imported changed.

    Before each spawn the code on disk is fingerprinted (:func:`code_fingerprint`, stat calls only)
    and compared with what the current fork server imported; on a difference a new one is started
    (the first run after a deploy pays its start once) and the old one is retired: it serves its
    runs in flight until they end, then exits.
    """

    def __init__(self, preload: list[str], roots: list[str] | None = None, logger: Any = None):
        self.preload = preload
        self.roots = roots if roots is not None else code_roots()
        self.logger = logger
        self.current: Zygote | None = None
        self.retired: list[Zygote] = []
        self.restarts = 0
        self._lock = asyncio.Lock()

    async def start(self) -> Zygote:
        zygote = Zygote(self.preload)
        await zygote.start()
        self.current = zygote
        return zygote

    def stale(self) -> bool:
        """The code on disk is not what the current fork server imported."""
        if self.current is None:
            return False
        return self.current.ready_info.get("fingerprint") != code_fingerprint(self.roots)

    async def _current(self) -> Zygote:
        if self.current is None:
            return await self.start()
        if self.current.alive and self.stale():
            old = self.current
            if self.logger is not None:
                self.logger.info("the flow code changed on disk: starting a new fork server")
            await self.start()
            self.restarts += 1
            await old.retire()
            self.retired.append(old)
        self.retired = [zygote for zygote in self.retired if zygote.alive]
        return self.current

    async def spawn(
        self,
        key: str,
        flow_run_id: str,
        env: dict[str, str],
        cwd: str,
        prefetched: dict[str, Any] | None = None,
    ) -> tuple[Zygote, int]:
        """Fork a run from an up-to-date fork server; return that server (for :meth:`Zygote.wait`)
        and the child's pid. ``prefetched``: objects the child's engine would read (see
        :meth:`WarmProcessWorker._engine_reads_for`)."""
        async with self._lock:
            zygote = await self._current()
            # Sent before any retire of this zygote can be (same lock), so it is never refused.
            future = await zygote.request_spawn(key, flow_run_id, env, cwd, prefetched)
        return zygote, await future

    async def stop(self) -> None:
        for zygote in [*self.retired, *([self.current] if self.current else [])]:
            await zygote.stop()


async def _open_control_channel(logger: Any) -> Any:
    """Prefect's (internal) attempt-control channel, or None where this Prefect has none."""
    try:
        from prefect.runner._control_channel import ControlChannel
    except ImportError:
        logger.info("this Prefect has no attempt-control channel: cancelled runs report a crash first")
        return None
    try:
        channel = await ControlChannel().__aenter__()
        channel.port  # noqa: B018 -- raises when the listener could not bind (Prefect logged why)
        return channel
    except Exception as error:  # kill-only cancellation still works
        logger.warning("no attempt-control channel (%s): cancelled runs report a crash first", error)
        return None


class WarmProcessWorker(BaseWorker[ProcessJobConfiguration, ProcessVariables, WarmProcessResult]):
    """Runs flow runs as processes forked from a pre-imported fork server."""

    type = WORKER_TYPE
    job_configuration = WarmJobConfiguration
    job_configuration_variables = ProcessVariables
    _description = (
        "Execute flow runs as local processes forked from a pre-imported Python process; new runs are "
        "picked up from the server's event stream. Same job variables as the process pool."
    )
    _display_name = "Warm process"
    _documentation_url = "https://docs.prefect.io/latest/concepts/work-pools/"
    _logo_url = (
        "https://raw.githubusercontent.com/PrefectHQ/prefect/main/docs/images/logos/prefect-logo-mark.png"
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._zygotes = ZygotePool(default_preload(), logger=self._logger)
        self._listener: asyncio.Task | None = None
        self._cancel_poller: asyncio.Task | None = None
        # Prefect's attempt-control channel: tells a run's engine "this SIGTERM is a cancel", so the
        # run goes Cancelling → Cancelled itself (on_cancellation hooks) instead of Crashed first.
        self._control: Any = None
        # Runs this worker started and that are still alive: flow run id → "cancel requested" flag.
        self._cancel_requests: dict[str, asyncio.Event] = {}
        # Forked runs still alive: flow run id → (their fork server, pid); and those told they are
        # suspended (each is told once).
        self._live: dict[str, tuple[Zygote, int]] = {}
        self._suspension_relayed: set[str] = set()
        # Runs between fork and Running hold a start slot; flow run id → "it reported Running".
        self._start_slots: asyncio.Semaphore | None = None
        self._running_seen: dict[str, asyncio.Event] = {}
        self._background_tasks: set[asyncio.Task] = set()
        # Fetches are coalesced: a burst of N "Scheduled" events costs one or two fetches, not N.
        self._fetch_wanted: asyncio.Event | None = None
        self._fetcher: asyncio.Task | None = None
        # Reads of what every run's engine asks the server for again (see _engine_reads_for).
        self._engine_reads: dict[str, RecentReads] = {}

    async def __aenter__(self) -> WarmProcessWorker:
        zygote = await self._zygotes.start()
        self._control = await _open_control_channel(self._logger)
        self._logger.info(
            "fork server ready in %.1f s (pre-imported %d flow modules%s)",
            zygote.ready_info.get("seconds", 0),
            len(zygote.preload),
            f"; could not import {zygote.ready_info['failed']}" if zygote.ready_info.get("failed") else "",
        )
        await super().__aenter__()
        if read_reuse_seconds() > 0:
            # Instance attributes shadow the client's methods for this worker's client only.
            for name in ("read_deployment", "read_flow"):
                setattr(self.client, name, RecentReads(getattr(self.client, name), read_reuse_seconds()))
        if engine_reads_seconds() > 0:
            client = self.client
            self._engine_reads = {
                "work-queue": RecentReads(client.read_work_queue, engine_reads_seconds()),
                "result-storage": RecentReads(
                    lambda _: client.read_server_default_result_storage(), engine_reads_seconds()
                ),
            }
        self._start_slots = asyncio.Semaphore(start_slots())
        self._fetch_wanted = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._fetcher = loop.create_task(self._fetch_when_wanted())
        self._listener = loop.create_task(self._listen_for_scheduled_runs())
        self._cancel_poller = loop.create_task(self._poll_for_cancellation())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        for task in (self._listener, self._fetcher, self._cancel_poller):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        try:
            await super().__aexit__(*exc_info)
        finally:
            if self._control is not None:
                with contextlib.suppress(Exception):
                    await self._control.__aexit__(None, None, None)
            await self._zygotes.stop()

    async def _get_scheduled_flow_runs(self) -> list[Any]:
        """Scheduled runs of our queues, but no more than the start slots can take soon.

        The stock worker fetches every scheduled run at each poll; in a burst of hundreds, each
        fetch returns (and the server serialises) all of them again while most must wait for a
        start slot anyway. Fetching a few slots' worth keeps the server's work per run constant.
        """
        import datetime

        from prefect.client.schemas.responses import WorkerFlowRunResponse
        from prefect.types._datetime import now

        body: dict[str, Any] = {
            "scheduled_before": str(now("UTC") + datetime.timedelta(seconds=int(self._prefetch_seconds))),
            "limit": 2 * start_slots(),
        }
        if self._work_queues:
            body["work_queue_names"] = list(self._work_queues)
        response = await self.client._client.post(
            f"/work_pools/{self._work_pool_name}/get_scheduled_flow_runs", json=body
        )
        if response.status_code == 404:  # the pool is created on the next heartbeat
            return []
        response.raise_for_status()
        return WorkerFlowRunResponse.model_validate_list(response.json())

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """Skip Prefect's Submitting state (a named sub-state of Pending, for information only).

        Prefect's worker proposes Pending, then Submitting while it hands the run to its
        infrastructure. Here that hand-over is a fork of milliseconds, while the extra state costs
        the server a full orchestrated transition and an event per run, which bursts are bound by.
        The run goes Pending → Running.
        """
        return None

    def want_fetch(self) -> None:
        """Ask for a fetch of scheduled runs soon (any number of asks before it runs make one)."""
        if self._fetch_wanted is not None:
            self._fetch_wanted.set()

    async def _fetch_when_wanted(self) -> None:
        assert self._fetch_wanted is not None
        while True:
            await self._fetch_wanted.wait()
            self._fetch_wanted.clear()
            try:
                await self.get_and_submit_flow_runs()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the poll loop still runs; the next event asks again
                self._logger.debug("fetch of scheduled runs failed (%s)", error)
                await asyncio.sleep(1)

    async def _listen_for_scheduled_runs(self) -> None:
        """React to the server's events: fetch runs the moment one of our pool is scheduled, note
        when a run of ours is Running (its start slot is free again), stop a running run of ours
        the moment it is cancelled (the stock worker only cancels runs that have not started), and
        tell a running run of ours that it was suspended (:meth:`_relay_suspension`)."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(
            event=EventNameFilter(
                prefix=[
                    "prefect.flow-run.Scheduled",
                    "prefect.flow-run.Cancelling",
                    "prefect.flow-run.Running",
                    "prefect.flow-run.Suspended",
                ]
            )
        )
        while True:
            try:
                async with get_events_subscriber(
                    filter=event_filter, reconnect_on_clean_close=True
                ) as events:
                    async for event in events:
                        run_id = event.resource.id.rsplit(".", 1)[-1]
                        if event.event.endswith(".Cancelling"):
                            request = self._cancel_requests.get(run_id)
                            if request is not None:
                                request.set()
                            continue
                        if event.event.endswith(".Running"):
                            seen = self._running_seen.get(run_id)
                            if seen is not None:
                                seen.set()
                            continue
                        if event.event.endswith(".Suspended"):
                            if run_id in self._live and run_id not in self._suspension_relayed:
                                self._background(self._relay_suspension(run_id))
                            continue
                        pool = self._work_pool
                        related = {resource.id for resource in event.related}
                        if pool is None or f"prefect.work-pool.{pool.id}" in related:
                            self.want_fetch()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the poll loops still run; retry the stream shortly
                self._logger.debug("event stream interrupted (%s); reconnecting", error)
                await asyncio.sleep(2)

    async def _hold_start_slot(self, run_id: str, exit_code: asyncio.Future) -> None:
        """Keep a start slot until the run reports Running, exits, or START_SLOT_TIMEOUT passes."""
        assert self._start_slots is not None
        seen = self._running_seen.setdefault(run_id, asyncio.Event())
        try:
            running = asyncio.ensure_future(seen.wait())
            await asyncio.wait(
                {running, exit_code}, timeout=START_SLOT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            running.cancel()
        finally:
            self._running_seen.pop(run_id, None)
            self._start_slots.release()
            # A slot is free: runs that were scheduled meanwhile can start now, not at the next poll.
            self.want_fetch()

    def _background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    async def _relay_suspension(self, run_id: str, state: Any = None) -> bool:
        """Tell a live run of ours that it is suspended; True when it was told.

        Each run's engine would otherwise watch for this itself, with a websocket and a read of its
        own (see :class:`interlinked.workers.zygote.SuspensionRelay`). As Prefect's observer does, an
        event is confirmed by reading the run's current state: only a run that *is* Suspended is
        told, with that state, and it stops at its next orchestration step."""
        from prefect._flow_run_suspension import is_suspended_flow_run_state

        if state is None:
            try:
                state = (await self.client.read_flow_run(run_id)).state
            except Exception as error:  # the periodic read tries again
                self._logger.debug("could not read run %s to confirm its suspension (%s)", run_id, error)
                return False
        live = self._live.get(run_id)
        if live is None or run_id in self._suspension_relayed or not is_suspended_flow_run_state(state):
            return False
        zygote, pid = live
        self._suspension_relayed.add(run_id)
        if not await zygote.notify(pid, {"op": "suspended", "state": state.model_dump(mode="json")}):
            self._suspension_relayed.discard(run_id)
            return False
        return True

    async def _poll_for_cancellation(self) -> None:
        """Every few seconds, one read of this worker's live runs that are Cancelling or Suspended:
        the fallback for a missed or delayed event (a slow poll backs up the event stream). One
        request for all runs in flight, not one per run: in a burst, runs live longer and per-run
        polls added up."""
        from prefect.client.schemas.filters import FlowRunFilter

        while True:
            await asyncio.sleep(CANCELLATION_POLL_SECONDS)
            waiting = {run_id for run_id, request in self._cancel_requests.items() if not request.is_set()}
            waiting.update(run_id for run_id in self._live if run_id not in self._suspension_relayed)
            if not waiting:
                continue
            try:
                runs = await self.client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        id={"any_": sorted(waiting)}, state={"name": {"any_": ["Cancelling", "Suspended"]}}
                    ),
                    limit=len(waiting),
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the event stream still works; try again next time
                self._logger.debug("cancellation poll failed (%s)", error)
                continue
            for run in runs:
                if run.state is not None and run.state.name == "Suspended":
                    await self._relay_suspension(str(run.id), run.state)
                    continue
                request = self._cancel_requests.get(str(run.id))
                if request is not None:
                    request.set()

    async def _stop_group(self, pid: int, exit_code: asyncio.Future, grace_seconds: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exit_code), timeout=grace_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    async def _engine_reads_for(self, flow_run: FlowRun) -> dict[str, Any] | None:
        """What the run's engine would read from the server before its flow starts, read here.

        Each run's engine reads its deployment twice (to load the flow, then for its events'
        related resources), its flow, work queue and work pool once, and the server's default
        result storage twice: 7 of its ~15 requests, the same answer for every run of a deployment.
        The worker has read the deployment and flow already (:class:`RecentReads`) and the pool is
        its own; the child gets them with the spawn request (:func:`interlinked.workers.zygote.use_prefetched`).
        Anything that cannot be read here is left to the child (None: nothing is sent).
        """
        if not self._engine_reads:
            return None
        prefetched: dict[str, Any] = {}
        reads = {
            "deployment": (self.client.read_deployment, flow_run.deployment_id),
            "flow": (self.client.read_flow, flow_run.flow_id),
            "work-queue": (self._engine_reads["work-queue"], flow_run.work_queue_id),
            "result-storage": (self._engine_reads["result-storage"], "default"),
        }
        for kind, (read, object_id) in reads.items():
            if object_id is None:
                continue
            try:
                found = await read(object_id)
            except Exception as error:  # the child reads it itself
                self._logger.debug("prefetch of the run's %s failed (%s)", kind, error)
                continue
            prefetched[kind] = found.model_dump(mode="json")
        pool = self._work_pool
        # The server leaves ``work_pool_name`` empty in the runs it hands a worker: they are its pool's.
        if pool is not None and flow_run.work_pool_name in (None, pool.name):
            prefetched["work-pool"] = pool.model_dump(mode="json")
        return prefetched or None

    def _environment(self, flow_run: FlowRun, configuration: ProcessJobConfiguration) -> dict[str, str]:
        # The same environment `python -m prefect.engine` gets from the stock process worker.
        env: dict[str, str] = dict(os.environ)
        env.update({key: value for key, value in configuration.env.items() if value is not None})
        env.update(settings_environment())
        env.update(
            {
                "PREFECT__FLOW_RUN_ID": str(flow_run.id),
                "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
            }
        )
        env.pop("PREFECT__WORKER_NAME", None)
        return env

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> WarmProcessResult:
        run_id = str(flow_run.id)
        working_dir = (
            tempfile.TemporaryDirectory(prefix="prefect-warm-") if not configuration.working_dir else None
        )
        cwd = str(configuration.working_dir or Path(working_dir.name))
        request = self._cancel_requests.setdefault(run_id, asyncio.Event())
        cancelled = False
        env = self._environment(flow_run, configuration)
        if self._control is not None:
            port, token = self._control.register(flow_run.id)
            env.update({"PREFECT__CONTROL_PORT": str(port), "PREFECT__CONTROL_TOKEN": token})
        slot_holder: asyncio.Task | None = None
        prefetched = await self._engine_reads_for(flow_run)
        try:
            if self._start_slots is not None:
                self._running_seen.setdefault(run_id, asyncio.Event())
                await self._start_slots.acquire()
                try:
                    zygote, pid = await self._zygotes.spawn(run_id, run_id, env, cwd, prefetched)
                except BaseException:
                    self._running_seen.pop(run_id, None)
                    self._start_slots.release()
                    raise
            else:
                zygote, pid = await self._zygotes.spawn(run_id, run_id, env, cwd, prefetched)
            self._live[run_id] = (zygote, pid)
            if task_status is not None:
                task_status.started(pid)
            exit_code = asyncio.ensure_future(zygote.wait(pid))
            if self._start_slots is not None:
                slot_holder = asyncio.get_running_loop().create_task(self._hold_start_slot(run_id, exit_code))
            cancel = asyncio.ensure_future(request.wait())
            await asyncio.wait({exit_code, cancel}, return_when=asyncio.FIRST_COMPLETED)
            if not exit_code.done():
                cancelled = True
                self.get_flow_run_logger(flow_run).info(
                    "cancelling: stopping the run's process group %d", pid
                )
                if self._control is not None:
                    with contextlib.suppress(Exception):
                        await self._control.signal(flow_run.id, "cancel")
                await self._stop_group(pid, exit_code, grace_seconds=10)
            cancel.cancel()
            code = await exit_code
        finally:
            if slot_holder is not None and not slot_holder.done():
                await asyncio.wait({slot_holder}, timeout=1)
            self._cancel_requests.pop(run_id, None)
            self._live.pop(run_id, None)
            self._suspension_relayed.discard(run_id)
            if self._control is not None:
                self._control.unregister(flow_run.id)
            if working_dir is not None:
                working_dir.cleanup()
        if cancelled:
            # The engine reports a SIGTERM as a crash; the truth is that the user cancelled the run.
            current = await self.client.read_flow_run(flow_run.id)
            if current.state is None or current.state.type.value != "CANCELLED":
                await self.client.set_flow_run_state(
                    flow_run.id,
                    Cancelled(message="Cancelled: the worker stopped the run's processes."),
                    force=True,
                )
            code = 0  # the run's outcome is Cancelled, not a crash of its infrastructure
        return WarmProcessResult(status_code=code, identifier=str(pid))

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: ProcessJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """Stop a run's process group: SIGTERM, then SIGKILL after ``grace_seconds``."""
        pid = int(infrastructure_pid.split(":")[-1])
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            raise InfrastructureNotFound(f"no process group {pid} for this flow run") from None
        with anyio.move_on_after(grace_seconds):
            while True:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    return
                await anyio.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
