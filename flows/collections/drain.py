"""Draining a task collection: claim tasks in batches, run them on Dask slots, record the outcomes.

:class:`Drain` is the engine (no Prefect in it, so tests and the Batch array children can run it
directly); :func:`drain_collection` is the ``drain-collection`` flow around it, which keeps a
progress artifact and a collection status table artifact of its run current.

One drain:

- claims up to ``batch`` tasks at a time, only as many as it has room for (``concurrency`` slots,
  plus one batch queued ahead while tasks are short: a long task never sits claimed behind another);
  once tasks are known to be very short, a claim takes up to a chunk per slot (see below);
  given ``lower_priority`` collections, each claim takes what it can from the first collection and
  only the rest from the next, and so on (PiCaS's ``PrioritizedViewIterator``: a high-priority
  view drained before a low one; a PiCaS view is a collection here);
- runs each task's command on a **Dask** cluster (``dask.distributed``: a ``LocalCluster`` of
  ``concurrency`` threads by default, or the scheduler at ``scheduler_address``), one Dask task per
  task (:func:`flows.collections.runner.run_task`), or, for tasks much shorter than Dask's own cost
  per Dask task, one per chunk of about :data:`CHUNK_SECONDS` of work (full chunks while every
  slot is busy, smaller ones spread over the idle slots), with a per-task timeout and each task's
  output streamed to ``s3://{data}/collections/{collection}/logs/{task_id}.log``;
- records outcomes conditional on each task's fencing token: successes in one write per batch
  (``complete_many``), failures one by one with the exit code and the end of the output; a refused
  write (the lease was lost) is counted, never retried;
- heartbeats every held lease every ``lease_seconds / 3`` (a lost lease kills the task);
- claims no more than ``max_tasks`` in all, and under a wall-time budget only what the time left
  can finish at the observed mean task time (PiCaS's average-time rule);
- stops claiming before the wall-time budget and, ``budget_margin`` before it, gives back what
  still runs; on :meth:`Drain.stop` (the flow's SIGTERM handler) kills its tasks and releases them
  to ``todo`` at once;
- ends when the collection has no open task left (``todo`` or ``locked``); while some are open
  (other drains' leases, which may expire, or dependencies not done yet) it polls every
  ``poll_seconds``, unless ``wait_for_more`` is off.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow

from flows.collections.model import (
    DEFAULT_LEASE_SECONDS,
    NESTED_KEY,
    LeaseLost,
    Task,
    check_collection,
)
from flows.collections.runner import (
    DEFAULT_LOG_INTERVAL,
    TaskRun,
    forget_owner,
    kill_task,
    nested_progress,
    register_store,
    run_tasks,
    stop_owner,
)
from flows.collections.store import TaskStore, new_owner

logger = logging.getLogger("interlinked.collections.drain")

#: A drain that does not record finished tasks for this long writes what it has (seconds).
DONE_FLUSH_SECONDS = 0.25
#: Tasks shorter than this (moving average, seconds) are claimed a batch ahead of the free slots.
SHORT_TASK_SECONDS = 2.0
#: Tasks much shorter than a Dask task's own cost run several to a Dask task: about this many
#: seconds of work each (never more than :data:`MAX_CHUNK` tasks; one while durations are unknown).
CHUNK_SECONDS = 0.25
#: 64: a Dask task costs the drain's process about 2 ms of CPU (scheduler, worker and client
#: messages); at 16 tasks a chunk that was a quarter of a no-op task's CPU, at 64 a tenth.
MAX_CHUNK = 64
#: The most tasks one claim takes when tasks are short (see :meth:`Drain._claim_size`).
MAX_CLAIM = 250
#: ... and the most per slot: claims sized by the chunks of 64 (250 a claim) made two drains on
#: DynamoDB (one conditional write per task, the drain loop waiting on the claim) 1.6x slower.
CLAIM_PER_SLOT = 16


#: Dask settings of the LocalCluster a drain starts itself (a cluster at a given address keeps its own).
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.admin.system-monitor.gil.enabled": False,
}


@dataclass
class DrainOptions:
    """How one drain works (the flow's parameters; the CLI's options)."""

    concurrency: int = 4
    batch: int = 25
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    heartbeat_seconds: float | None = None
    task_timeout: float | None = None
    time_budget: float | None = None
    budget_margin: float | None = None
    poll_seconds: float = 1.0
    wait_for_more: bool = True
    log_interval: float = DEFAULT_LOG_INTERVAL
    report_seconds: float = 2.0
    #: Sub-tasks of one nested task running at once (None: all of them, as PyAnamo).
    nested_concurrency: int | None = None
    #: Claim no more than this many tasks in all (PiCaS's ``max_tasks``); None: no limit.
    max_tasks: int | None = None

    def check(self) -> DrainOptions:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if self.lease_seconds < 1:
            raise ValueError(f"lease_seconds must be at least 1, got {self.lease_seconds}")
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ValueError(f"task_timeout must be positive, got {self.task_timeout}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be positive, got {self.time_budget}")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1, got {self.max_tasks}")
        if self.nested_concurrency is not None and self.nested_concurrency < 1:
            raise ValueError(f"nested_concurrency must be at least 1, got {self.nested_concurrency}")
        return self

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat_seconds or max(0.5, self.lease_seconds / 3)

    @property
    def margin(self) -> float:
        if self.budget_margin is not None:
            return self.budget_margin
        return 0.0 if self.time_budget is None else min(30.0, self.time_budget * 0.1)


@dataclass
class DrainStats:
    """What one drain did; ``progress`` snapshots and its result are this, as a dict."""

    collection: str
    owner: str
    claimed: int = 0
    done: int = 0
    failed: int = 0
    released: int = 0
    #: Outcomes refused because the lease had been lost (expired and taken over, reset).
    lost: int = 0
    running: int = 0
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    #: Why it ended: ``drained``, ``no claimable tasks``, ``time budget``, ``stopped: ...``.
    stop_reason: str | None = None
    #: A few failures: ``{"id", "error", "exit_code"}`` (and ``"collection"`` when it drains several).
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Collections claimed from after ``collection``, in order, when those before had nothing.
    lower_priority: list[str] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def rate(self) -> float:
        """Tasks finished per second since the drain started."""
        return self.finished / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finished": self.finished, "rate": round(self.rate, 2)}


@contextlib.contextmanager
def dask_client(
    concurrency: int, scheduler_address: str | None = None, *, processes: bool = False
) -> Iterator[Any]:
    """A Dask client: on the scheduler at ``scheduler_address``, else on a ``LocalCluster`` of
    ``concurrency`` slots (threads of this process by default — each slot only waits on its
    command's process — or ``processes`` workers of one thread each)."""
    from distributed import Client, LocalCluster

    if scheduler_address:
        client = Client(scheduler_address, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # Dask's own observability (a stack sample of every thread each 10 ms, event-loop ticks every
    # 20 ms, a system monitor) is for its dashboard, which a drain's cluster does not serve; on a
    # machine busy running commands it cost a good part of a drain's CPU.
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(
            n_workers=concurrency if processes else 1,
            threads_per_worker=1 if processes else concurrency,
            processes=processes,
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.WARNING,
        )
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _nests(task: Task) -> list[dict[str, Any]] | None:
    """The sub-tasks of a nested task (a list of ``{"id", "command", ...}``), else None."""
    nests = task.attributes.get(NESTED_KEY)
    if (
        isinstance(nests, list)
        and nests
        and all(
            isinstance(sub, dict) and isinstance(sub.get("id"), str) and isinstance(sub.get("command"), str)
            for sub in nests
        )
    ):
        return nests
    return None


class Drain:
    """Drain ``collection`` of ``store`` on the Dask ``client`` (see the module doc).

    Parameters
    ----------
    bucket
        The data bucket's name (logs go to ``collections/{collection}/logs/``); None: no logs.
    object_store
        The :class:`blocks.s3.ObjectStore` of ``bucket`` this process should use (slots in this
        process share it; remote workers build their own).
    on_progress
        Called with :meth:`snapshot` at most every ``options.report_seconds``, from a thread of
        its own (the flow updates its artifacts there).
    lower_priority
        Collections this drain claims from only when the ones before (``collection`` first) have
        nothing claimable at that claim, in this order: PiCaS's ``PrioritizedViewIterator`` (a
        high-priority view drained before a low one), with a PiCaS view being a collection here.
    """

    def __init__(
        self,
        store: TaskStore,
        collection: str,
        client: Any,
        *,
        bucket: str | None,
        options: DrainOptions | None = None,
        object_store: Any | None = None,
        owner: str | None = None,
        on_progress: Callable[[DrainStats], None] | None = None,
        lower_priority: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.collection = check_collection(collection)
        #: Claimed from in this order: a later one only when those before have nothing claimable.
        self.collections = list(dict.fromkeys([collection, *(check_collection(c) for c in lower_priority)]))
        self.client = client
        self.bucket = bucket
        self.options = (options or DrainOptions()).check()
        self.owner = owner or new_owner()
        self.on_progress = on_progress
        if bucket and object_store is not None:
            register_store(bucket, object_store)
        self.stats = DrainStats(collection, self.owner, lower_priority=self.collections[1:])
        self._lock = threading.Lock()
        # (collection, task id) -> (task, future)
        self._inflight: dict[tuple[str, str], tuple[Task, Any]] = {}
        self._futures: set[str] = set()  # keys of the Dask tasks submitted and not yet collected
        self._finished: queue.Queue = queue.Queue()
        # (collection, task id, token, exit code, log key) of successes not written yet
        self._pending_done: list[tuple[str, str, int, int, str | None]] = []
        self._pending_since = 0.0
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._ended = threading.Event()
        self._mean_seconds: float | None = None
        self._deadline: float | None = None
        self._nest_seen: dict[str, list] = {}

    # -- control ----------------------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """Ask the drain to give back its tasks and end (safe from a signal handler)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    def snapshot(self) -> DrainStats:
        with self._lock:
            self.stats.running = len(self._inflight)
            self.stats.seconds = time.time() - self.stats.started
            return DrainStats(**{**asdict(self.stats), "failures": list(self.stats.failures)})

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> DrainStats:
        """Drain until done, out of budget or stopped; the final :class:`DrainStats`."""
        options = self.options
        started = time.monotonic()
        if options.time_budget is not None:
            self._deadline = started + options.time_budget
        threads = [threading.Thread(target=self._heartbeats, name="drain-heartbeats", daemon=True)]
        if self.on_progress is not None:
            threads.append(threading.Thread(target=self._reporter, name="drain-progress", daemon=True))
        for thread in threads:
            thread.start()
        try:
            reason = self._loop()
        except BaseException:
            self._give_back("the drain failed")
            raise
        finally:
            self._ended.set()
            for thread in threads:
                thread.join(timeout=5)
        self._flush_done()
        if reason.startswith("stopped") or reason == "time budget":
            self._give_back(reason)
        else:
            forget_owner(self.owner)
        with self._lock:
            self.stats.stop_reason = reason
        final = self.snapshot()
        if self.on_progress is not None:
            with contextlib.suppress(Exception):
                self.on_progress(final)
        return final

    def _loop(self) -> str:
        options = self.options
        next_claim = 0.0
        while True:
            if self._stop.is_set():
                return f"stopped: {self._stop_reason}"
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline - options.margin:
                return "time budget"
            claiming = self._deadline is None or now + (self._mean_seconds or 0.0) < (
                self._deadline - options.margin
            )
            with self._lock:
                inflight = len(self._inflight)
                left = None if options.max_tasks is None else options.max_tasks - self.stats.claimed
            if left is not None and left <= 0:
                claiming = False
                if inflight == 0:
                    self._flush_done()
                    return "max tasks"
            short = self._mean_seconds is not None and self._mean_seconds < SHORT_TASK_SECONDS
            slots = options.concurrency * self._chunk()
            claim_size = self._claim_size()
            room = slots + (options.batch if short else 0) - inflight
            if self._deadline is not None and self._mean_seconds:
                # The average-task-time rule (PiCaS's RunActorWithStop): claim only what the
                # remaining budget can finish on the slots, at the observed mean task time.
                fit = int((self._deadline - options.margin - now) / self._mean_seconds) * options.concurrency
                room = min(room, fit - inflight)
            # Claim when a slot would idle, or a good part of a batch is free (not one task a claim).
            worth = inflight < slots or room >= max(1, claim_size // 2)
            if claiming and room > 0 and worth and now >= next_claim:
                tasks = self._claim(min(claim_size, room, left if left is not None else room))
                self._submit(tasks)
                if not tasks:
                    next_claim = now + options.poll_seconds
                    # Open tasks someone else holds, or whose dependencies are not done yet, keep it.
                    if inflight == 0 and not self._pending_done and not self._more_to_come():
                        return "drained" if options.wait_for_more else "no claimable tasks"
                else:
                    next_claim = 0.0
            elif not claiming and inflight == 0:
                return "time budget"
            wait = 0.05 if self._pending_done else 0.1
            if next_claim and not inflight:
                wait = max(0.01, min(wait * 5, next_claim - now))
            self._collect(wait)
            if self._pending_done and (
                len(self._pending_done) >= options.batch
                or time.monotonic() - self._pending_since >= DONE_FLUSH_SECONDS
            ):
                self._flush_done()

    def _claim(self, wanted: int) -> list[Task]:
        """Up to ``wanted`` tasks: from the first collection, the rest from the next and so on
        (a lower-priority collection only gives what the ones before could not)."""
        tasks: list[Task] = []
        for collection in self.collections:
            if len(tasks) >= wanted:
                break
            tasks += self.store.claim(
                collection,
                owner=self.owner,
                batch=wanted - len(tasks),
                lease_seconds=self.options.lease_seconds,
            )
        return tasks

    def _more_to_come(self) -> bool:
        if not self.options.wait_for_more:
            return False
        for collection in self.collections:
            status = self.store.status(collection, failures=0)[collection]
            if status.todo + status.locked > 0:
                return True
        return False

    def _chunk(self) -> int:
        """Tasks per Dask task: one, unless tasks are so short that Dask's own per-task cost
        (milliseconds) would dominate; then about :data:`CHUNK_SECONDS` of work."""
        mean = self._mean_seconds
        if mean is None or mean >= CHUNK_SECONDS / 2:
            return 1
        return max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(mean, 1e-4))))

    def _claim_size(self) -> int:
        """Tasks per claim: ``batch``, or, once tasks run several to a Dask task, a chunk per slot
        (at most :data:`CLAIM_PER_SLOT` a slot and :data:`MAX_CLAIM` in all): claims of 25 split into two Dask tasks each made the claims and
        Dask's per-task cost, not the commands, the limit of a drain of no-op tasks."""
        chunk = self._chunk()
        if chunk == 1:
            return self.options.batch
        return max(self.options.batch, min(MAX_CLAIM, self.options.concurrency * min(chunk, CLAIM_PER_SLOT)))

    def _submit(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        runs = [
            TaskRun(
                collection=task.collection,
                task_id=task.id,
                command=task.command,
                token=int(task.lease_token),
                owner=self.owner,
                bucket=self.bucket,
                timeout=self.options.task_timeout,
                attributes=task.attributes,
                log_interval=self.options.log_interval,
                nested=_nests(task),
                nested_concurrency=self.options.nested_concurrency,
            )
            for task in tasks
        ]
        size = self._chunk()
        # Spread a claim over the slots that would otherwise idle (never fewer Dask tasks than idle
        # slots while there is work); with every slot busy or queued, chunks are full: Dask's own
        # cost per Dask task, not the command, was most of a no-op task's CPU.
        with self._lock:
            queued = len(self._futures)
        idle = max(1, self.options.concurrency - queued)
        size = max(1, min(size, -(-len(runs) // idle)))
        chunks = [runs[i : i + size] for i in range(0, len(runs), size)]
        keys = [
            f"tasks-{chunk[0].collection}-{chunk[0].task_id}-{chunk[0].token}-{len(chunk)}"
            for chunk in chunks
        ]
        futures = self.client.map(run_tasks, chunks, key=keys, pure=False)
        by_key = {(task.collection, task.id): task for task in tasks}
        with self._lock:
            self.stats.claimed += len(tasks)
            self._futures.update(future.key for future in futures)
            for chunk, future in zip(chunks, futures, strict=True):
                for run in chunk:
                    key = (run.collection, run.task_id)
                    self._inflight[key] = (by_key[key], future)
        for future in futures:
            future.add_done_callback(self._finished.put)

    def _collect(self, timeout: float) -> None:
        """Take the results of finished futures (waiting up to ``timeout`` for the first)."""
        try:
            first = self._finished.get(timeout=timeout)
        except queue.Empty:
            return
        futures = [first]
        while True:
            try:
                futures.append(self._finished.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._futures.difference_update(future.key for future in futures)
        ok = [future for future in futures if future.status == "finished"]
        chunks = self.client.gather(ok, errors="skip") if ok else []
        for future in futures:
            if future.status != "finished":
                self._lost_future(future)
        for results in chunks:
            for result in results:
                self._record(result)

    def _lost_future(self, future: Any) -> None:
        """A Dask task that raised or was cancelled (its worker died): give its tasks back."""
        with self._lock:
            lost = [task for task, f in self._inflight.values() if f.key == future.key]
            for task in lost:
                del self._inflight[(task.collection, task.id)]
        if not lost or self._stop.is_set():
            return  # _give_back releases them
        error = None
        with contextlib.suppress(Exception):
            error = future.exception(timeout=1)
        logger.warning(
            "tasks %s: their Dask task ended %s (%s); releasing them",
            [t.id for t in lost],
            future.status,
            error,
        )
        for task in lost:
            self._release(task)

    def _record(self, result: dict[str, Any]) -> None:
        task_id = result["task_id"]
        key = (result.get("collection", self.collection), task_id)
        with self._lock:
            entry = self._inflight.get(key)
            if entry is None or entry[0].lease_token != result["token"]:
                return
            del self._inflight[key]
        task = entry[0]
        seconds = float(result.get("seconds") or 0.0)
        self._mean_seconds = (
            seconds if self._mean_seconds is None else 0.8 * self._mean_seconds + 0.2 * seconds
        )
        outcome = result["outcome"]
        if result.get("nested") is not None and not self._write_nests(task, result["nested"]):
            return
        if outcome == "done":
            if not self._pending_done:
                self._pending_since = time.monotonic()
            self._pending_done.append(
                (task.collection, task_id, int(task.lease_token), int(result["exit_code"]), result["log_key"])
            )
            return
        if outcome == "stopped":
            if not self._stop.is_set():
                self._release(task)
            return
        try:
            self.store.fail(
                task.collection,
                task_id,
                int(task.lease_token),
                error=result["error"] or "failed",
                exit_code=result["exit_code"],
                log_key=result["log_key"],
            )
        except LeaseLost as lost:
            logger.warning("task %s failed but its lease was lost: %s", task_id, lost)
            with self._lock:
                self.stats.lost += 1
            return
        with self._lock:
            self.stats.failed += 1
            if len(self.stats.failures) < 20:
                failure = {"id": task_id, "error": result["error"], "exit_code": result["exit_code"]}
                if len(self.collections) > 1:
                    failure["collection"] = task.collection
                self.stats.failures.append(failure)

    def _write_nests(self, task: Task, nests: list[dict[str, Any]]) -> bool:
        """Write a nested task's sub-states back (under its token); False when the lease was lost."""
        try:
            self.store.set_attributes(task.collection, task.id, int(task.lease_token), {NESTED_KEY: nests})
        except LeaseLost as lost:
            logger.warning("nested task %s: its lease was lost: %s", task.id, lost)
            with self._lock:
                self.stats.lost += 1
            return False
        return True

    def _nest_progress(self, held: list[Task]) -> None:
        """Write the sub-states of running nested tasks that changed since the last beat (so
        ``tasks status --nested`` shows progress inside an item while it runs)."""
        if not any(_nests(task) for task in held):
            return
        tokens = {f"{task.collection}/{task.id}": task.lease_token for task in held}
        try:
            reports = self.client.run(nested_progress, self.owner)
        except Exception as error:
            logger.warning("could not read nested progress: %s", error)
            return
        for report in reports.values():
            for ref, entry in report.items():
                if tokens.get(ref) != entry["token"]:
                    continue
                nests = entry["nested"]
                if self._nest_seen.get(ref) == nests:
                    continue
                collection, _, task_id = ref.partition("/")
                with contextlib.suppress(LeaseLost):
                    self.store.set_attributes(collection, task_id, int(entry["token"]), {NESTED_KEY: nests})
                    self._nest_seen[ref] = nests

    def _flush_done(self) -> None:
        if not self._pending_done:
            return
        batch, self._pending_done = self._pending_done, []
        by_collection: dict[str, list[tuple[str, int, int, str | None]]] = {}
        for collection, *done in batch:
            by_collection.setdefault(collection, []).append(tuple(done))
        refused = [
            task_id
            for collection, results in by_collection.items()
            for task_id in self.store.complete_many(collection, results)
        ]
        if refused:
            logger.warning("%d finished task(s) had lost their lease: %s", len(refused), refused[:10])
        with self._lock:
            self.stats.done += len(batch) - len(refused)
            self.stats.lost += len(refused)

    def _release(self, task: Task) -> None:
        try:
            self.store.release(task.collection, task.id, int(task.lease_token))
        except LeaseLost:
            with self._lock:
                self.stats.lost += 1
            return
        with self._lock:
            self.stats.released += 1

    def _give_back(self, reason: str) -> None:
        """Kill what runs, cancel what waits, and release every task still held (to ``todo``)."""
        with contextlib.suppress(Exception):
            self.client.run(stop_owner, self.owner, reason)
        with self._lock:
            held = list(self._inflight.values())
            self._inflight.clear()
            self._futures.clear()
        with contextlib.suppress(Exception):
            self.client.cancel([future for _, future in held])
        for task, _ in held:
            with contextlib.suppress(Exception):
                self._release(task)

    # -- background -------------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        every = self.options.heartbeat_every
        while not self._ended.wait(every):
            with self._lock:
                held = [task for task, _ in self._inflight.values()]
                held_ids = {(collection, task_id) for collection, task_id, _, _, _ in self._pending_done}
            for task in held:
                try:
                    self.store.heartbeat(
                        task.collection, task.id, int(task.lease_token), self.options.lease_seconds
                    )
                except LeaseLost as lost:
                    if (task.collection, task.id) in held_ids:
                        continue
                    logger.warning("lost the lease of %s: %s; stopping it", task.id, lost)
                    with self._lock:
                        entry = self._inflight.pop((task.collection, task.id), None)
                        if entry is not None:
                            self.stats.lost += 1
                    with contextlib.suppress(Exception):
                        self.client.run(
                            kill_task,
                            self.owner,
                            task.collection,
                            task.id,
                            int(task.lease_token),
                            "lease lost",
                        )
                except Exception as error:  # the store briefly unreachable: the next beat retries
                    logger.warning("heartbeat of %s failed: %s", task.id, error)
            with contextlib.suppress(Exception):
                self._nest_progress(held)

    def _reporter(self) -> None:
        while not self._ended.wait(self.options.report_seconds):
            try:
                self.on_progress(self.snapshot())
            except Exception as error:
                logger.warning("progress report failed: %s", error)


# -- the flow -------------------------------------------------------------------------------------


def _artifact_key(collection: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) naming the collection."""
    import re

    return "collection-" + re.sub(r"[^a-z0-9-]+", "-", collection.lower()).strip("-") + "-status"


class ArtifactReporter:
    """Keeps the run's progress artifact and its collection status table artifact current: both
    are created once and updated in place (no new artifact version per update). The table's
    counts, ``tasks/s`` and ``eta seconds`` are ``tasks status --json``'s (one computation)."""

    def __init__(
        self, store: TaskStore, collection: str, flow_run_id: Any, lower_priority: Sequence[str] = ()
    ) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate

        self.store = store
        self.collection = collection
        self.collections = list(dict.fromkeys([collection, *lower_priority]))
        self._client_factory = get_client
        with get_client(sync_client=True) as client:
            self.progress_id = client.create_artifact(
                ArtifactCreate(
                    type="progress",
                    data=0.0,
                    description=f"Tasks of collection {collection} finished (done or failed)",
                    flow_run_id=flow_run_id,
                )
            ).id
            self.table_id = client.create_artifact(
                ArtifactCreate(
                    type="table",
                    key=_artifact_key(collection),
                    data=[],
                    description=f"Collection {collection}: tasks per state and this drain's work",
                    flow_run_id=flow_run_id,
                )
            ).id

    def __call__(self, stats: DrainStats) -> None:
        import json

        from prefect.client.schemas.actions import ArtifactUpdate

        from flows.collections.client import collection_status

        rows: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        total = finished = 0
        for index, name in enumerate(self.collections):
            # The `tasks status --json` document itself: the same counts, throughput and ETA.
            status = collection_status(self.store, name, failures=5)["collections"][name]
            total += status["total"]
            finished += status["done"] + status["failed"]
            row = {
                "collection": name,
                **{key: status[key] for key in ("todo", "locked", "done", "failed", "blocked", "total")},
                "tasks/s": status["throughput"],
                "eta seconds": status["eta_seconds"],
            }
            if index == 0:  # this drain's work (over all its collections) on the first row
                row.update(
                    {
                        "this drain: done": stats.done,
                        "this drain: failed": stats.failed,
                        "this drain: running": stats.running,
                        "this drain: tasks/s": round(stats.rate, 2),
                    }
                )
            rows.append(row)
            prefix = f"{name}/" if len(self.collections) > 1 else ""
            failures += [
                {"collection": f"failed: {prefix}{failure['id']}", "todo": failure.get("error")}
                for failure in status["failures"]
            ]
        fraction = 100.0 if total == 0 else round(100.0 * finished / total, 2)
        rows += failures
        with self._client_factory(sync_client=True) as client:
            client.update_artifact(self.progress_id, ArtifactUpdate(data=fraction))
            client.update_artifact(self.table_id, ArtifactUpdate(data=json.dumps(rows, default=str)))


@contextlib.contextmanager
def _sigterm_stops(drain_holder: dict[str, Drain]) -> Iterator[list[int]]:
    """While inside, SIGTERM (Spot reclaim, ECS stop, cancellation) stops the drain; afterwards the
    previous handler is back and a caught signal is delivered again (Prefect then ends the run)."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        logger.warning("not on the main thread: SIGTERM will not release this drain's tasks early")
        yield caught
        return

    def handler(signum: int, _frame: Any) -> None:
        caught.append(signum)
        drain = drain_holder.get("drain")
        if drain is not None:
            drain.stop("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield caught
    finally:
        signal.signal(signal.SIGTERM, previous)


def drain_with_options(
    collection: str,
    options: DrainOptions,
    *,
    store: TaskStore,
    bucket: str | None,
    object_store: Any | None = None,
    scheduler_address: str | None = None,
    dask_processes: bool = False,
    on_progress_factory: Callable[[], Callable[[DrainStats], None] | None] | None = None,
    lower_priority: Sequence[str] = (),
) -> tuple[DrainStats, list[int]]:
    """Run one drain with SIGTERM handling on a Dask client; ``(stats, caught signals)``."""
    holder: dict[str, Drain] = {}
    with (
        _sigterm_stops(holder) as caught,
        dask_client(options.concurrency, scheduler_address, processes=dask_processes) as client,
    ):
        drain = Drain(
            store,
            collection,
            client,
            bucket=bucket,
            options=options,
            object_store=object_store,
            on_progress=on_progress_factory() if on_progress_factory else None,
            lower_priority=lower_priority,
        )
        holder["drain"] = drain
        if caught:
            drain.stop("SIGTERM")
        stats = drain.run()
    return stats, caught


@flow(name="drain-collection", log_prints=True)
def drain_collection(
    collection: str,
    concurrency: int = 4,
    batch: int = 25,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    task_timeout: float | None = None,
    time_budget: float | None = None,
    scheduler_address: str | None = None,
    dask_processes: bool = False,
    wait_for_more: bool = True,
    backend: str | None = None,
    max_tasks: int | None = None,
    nested_concurrency: int | None = None,
    lower_priority: list[str] | None = None,
) -> dict[str, Any]:
    """Drain task collection ``collection``: claim its tasks in batches, run each task's command on
    ``concurrency`` Dask slots (a LocalCluster, or the cluster at ``scheduler_address``) with a
    per-task timeout, log to s3://{data}/collections/{collection}/logs/, until no open task is left,
    ``time_budget`` seconds are nearly up, or SIGTERM (tasks released to todo at once).
    ``lower_priority`` collections are claimed from, in order, only when those before have nothing
    claimable (PiCaS's prioritized views)."""
    import os

    from prefect import get_run_logger
    from prefect.context import get_run_context

    from blocks.s3 import data_store
    from flows.collections.backends import open_store

    run_logger = get_run_logger()
    options = DrainOptions(
        concurrency=concurrency,
        batch=batch,
        lease_seconds=lease_seconds,
        task_timeout=task_timeout,
        time_budget=time_budget,
        wait_for_more=wait_for_more,
        max_tasks=max_tasks,
        nested_concurrency=nested_concurrency,
    ).check()
    store = open_store(backend)
    objects = data_store()
    flow_run_id = get_run_context().flow_run.id
    array_index = os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX")
    run_logger.info(
        "draining %s: %d slot(s) on %s, batches of %d, lease %gs%s%s",
        " then ".join([collection, *(lower_priority or [])]),
        concurrency,
        scheduler_address or "a local Dask cluster",
        batch,
        lease_seconds,
        f", task timeout {task_timeout:g}s" if task_timeout else "",
        f", array child {array_index}" if array_index is not None else "",
    )
    try:
        stats, caught = drain_with_options(
            collection,
            options,
            store=store,
            bucket=objects.bucket,
            object_store=objects,
            scheduler_address=scheduler_address,
            dask_processes=dask_processes,
            on_progress_factory=lambda: ArtifactReporter(
                store, collection, flow_run_id, lower_priority or ()
            ),
            lower_priority=lower_priority or (),
        )
    finally:
        store.close()
    run_logger.info(
        "drain of %s ended (%s): %d done, %d failed, %d released, %d lost, %.1f tasks/s",
        collection,
        stats.stop_reason,
        stats.done,
        stats.failed,
        stats.released,
        stats.lost,
        stats.rate,
    )
    if caught:
        # Tasks are back in todo; now let the signal do what it would have done (Prefect's handler
        # ends the run as cancelled or crashed; without one, the process exits).
        os.kill(os.getpid(), caught[0])
    return stats.as_dict()


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.collections.drain COLLECTION [LOWER ...] [...]``: one drain as a flow run of its own
    (what each child of a Batch array job runs), or with ``--no-flow`` without Prefect at all."""
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(prog="python -m flows.collections.drain")
    parser.add_argument("collection")
    parser.add_argument(
        "lower_priority", nargs="*", help="collections claimed from, in order, when those before have nothing"
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--lease-seconds", type=float, default=DEFAULT_LEASE_SECONDS)
    parser.add_argument("--task-timeout", type=float)
    parser.add_argument("--time-budget", type=float)
    parser.add_argument("--max-tasks", type=int, help="claim no more than this many tasks")
    parser.add_argument("--nested-concurrency", type=int, help="sub-tasks of a nested task at once")
    parser.add_argument("--scheduler-address")
    parser.add_argument("--backend", help="task store backend (default: $INTERLINKED_TASKS_BACKEND)")
    parser.add_argument(
        "--no-flow", action="store_true", help="run without Prefect (no flow run, no artifacts)"
    )
    parser.add_argument(
        "--bucket", help="with --no-flow: the data bucket, reached through boto3's own configuration"
    )
    parser.add_argument("--no-wait", action="store_true", help="end when nothing is claimable now")
    args = parser.parse_args(argv)
    if not args.no_flow:
        result = drain_collection(
            collection=args.collection,
            concurrency=args.concurrency,
            batch=args.batch,
            lease_seconds=args.lease_seconds,
            task_timeout=args.task_timeout,
            time_budget=args.time_budget,
            scheduler_address=args.scheduler_address,
            wait_for_more=not args.no_wait,
            backend=args.backend,
            max_tasks=args.max_tasks,
            nested_concurrency=args.nested_concurrency,
            lower_priority=args.lower_priority or None,
        )
        print(json.dumps(result, default=str))
        return 0
    from blocks.clients import aws_client
    from blocks.s3 import ObjectStore
    from flows.collections.backends import open_store

    logging.basicConfig(level=logging.WARNING)
    options = DrainOptions(
        concurrency=args.concurrency,
        batch=args.batch,
        lease_seconds=args.lease_seconds,
        task_timeout=args.task_timeout,
        time_budget=args.time_budget,
        wait_for_more=not args.no_wait,
        max_tasks=args.max_tasks,
        nested_concurrency=args.nested_concurrency,
    ).check()
    objects = ObjectStore(args.bucket, aws_client("s3", use_block=False)) if args.bucket else None
    store = open_store(args.backend)
    try:
        stats, caught = drain_with_options(
            args.collection,
            options,
            store=store,
            bucket=args.bucket,
            object_store=objects,
            scheduler_address=args.scheduler_address,
            lower_priority=args.lower_priority,
        )
    finally:
        store.close()
    print(json.dumps(stats.as_dict(), default=str), flush=True)
    if caught:
        signal.signal(caught[0], signal.SIG_DFL)
        os.kill(os.getpid(), caught[0])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
