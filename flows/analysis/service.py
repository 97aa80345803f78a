"""The analysis service (seed 001): a warm, long-running worker answering single-cell tasks.

``python -m flows.analysis.service`` (what ``interlinked up`` starts), or the ``analysis-service``
flow deployed on ECS: long-polls the FIFO work queue, answers every task with exactly one
WorkResponse on the ``work_results`` topic, and records every request in Prefect.

Request path (no Prefect API round trip, no synchronous S3 call for a warm experiment)::

    receive ─ parse/validate ─ experiment (memory, ETag-refreshed in the background)
      ─ result: memory cache │ S3 cache (only where computing costs more than a GET) │ compute
      ─ publish to SNS ─ journal the message id ─► background: delete the message;
                                                  recorder thread: Prefect events, statistics

- **Exactly one response.** A message is deleted only after its response is published. Right
  after the publish its id goes into a local journal (one ``write(2)``: it survives the process
  being killed); a redelivered message (``ApproximateReceiveCount > 1``) found in the journal,
  or in a response record in S3 (``analysis-responses/{MessageId}.json``: written by the
  ``prepare-experiment`` flow, and by the service when a delete fails), is deleted without a
  second response; any other redelivery (the service died mid-request) is answered normally.
  What remains is a crash between the SNS publish returning and the journal write (microseconds)
  on a host whose journal is then lost: a standard SNS topic cannot deduplicate that.
- **Errors are responses** with stable ``errorCode``s (see ``flows.analysis.protocol.ErrorCode``).
  Transient AWS failures release the message for a retry instead, and get a
  ``SERVICE_UNAVAILABLE`` response on the queue's last allowed receive. A message that is not a
  task at all is released until that last receive, then moved to the dead-letter queue with the
  reason in its message attributes.
- **Result cache.** Content-addressed (experiment ETag + body + analysis version): an in-memory
  LRU for everything, and S3 (``analysis-cache/{experimentId}/{sha256}.json``) for results whose
  computation took longer than ``s3_cache_min_compute_seconds`` (a GET costs ~3 ms; re-reading a
  gene list from S3 would be slower than computing it). Results too large for SNS are always
  stored there and the response names them (``resultKey``).
- **PrepareExperiment** creates a flow run of the ``prepare-experiment`` deployment (idempotency
  key = the message id, so a redelivery never starts a second run); the flow publishes the
  response when the experiment is ready. The service keeps the message invisible while the run
  goes on and deletes it once the run's response record exists (publishing a ``PREPARE_FAILED``
  response itself if the run ended without one, e.g. killed).
- **Prefect.** The service is one long-running flow run (``analysis-service``) with a summary
  table artifact (``analysis-service-summary``) updated periodically. Every request is recorded
  in a Prefect event by a recorder thread, off the request path: ``interlinked.analysis.requests``
  lists the requests answered in the last second (uuid, task, experiment, error code, cache,
  times) and relates them to the flow run and to ``interlinked.experiment.{id}``; failures, dead
  letters, retries and duplicates also get an event each (``interlinked.analysis.request.*``).
  Measured on the local stack (``bench/bench_analysis_recording.py``, figures in the README): on
  the request path ``emit_event`` costs tens of µs, a task run milliseconds, an API round trip
  tens of ms; and every event the Prefect server ingests costs it CPU, which on a 2-core machine
  shared with the emulator showed in the round trip — hence one event per second.

FIFO groups: messages of one ``MessageGroupId`` are answered in order, and a PrepareExperiment
holds its group until the experiment is ready (later requests of that group then find it).
moto evaluates group locks only when a long poll starts, so on the local stack a follow-up in a
busy group can wait for the poll to end: ``INTERLINKED_ANALYSIS_POLL_SECONDS=2`` bounds that.

Readiness (for the local stack): with ``--status-file PATH`` the service rewrites ``PATH`` every
``heartbeat_seconds`` (JSON: ``ready``, ``pid``, ``heartbeat``, counters, experiments in memory);
``flows.analysis.protocol.service_ready(PATH)`` is the check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from prefect import flow
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import blocks
from flows.analysis.experiments import (
    ExperimentStore,
    LoadedExperiment,
    TransientError,
    is_missing,
    is_transient,
)
from flows.analysis.protocol import (
    PREPARE_EXPERIMENT,
    ErrorCode,
    ServiceError,
    Task,
    UnparseableMessage,
    cache_key,
    decode_message,
    encode,
    error_response,
    fits_sns,
    offloaded_response,
    parse_task,
    prepare_parameters,
    response_attributes,
    response_record_key,
    work_response,
    write_status,
)

FLOW_NAME = "analysis-service"
SUMMARY_ARTIFACT_KEY = "analysis-service-summary"
EVENT_PREFIX = "interlinked.analysis.request"
BATCH_EVENT = "interlinked.analysis.requests"
logger = logging.getLogger("interlinked.analysis.service")

# Set by signal handlers (SIGTERM/SIGINT) of `main()`; the service then stops gracefully.
STOP = threading.Event()


class ServiceSettings(BaseSettings):
    """Tuning of the service; ``INTERLINKED_ANALYSIS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="INTERLINKED_ANALYSIS_", extra="ignore")

    queue_url: str | None = Field(default=None, description="Work queue; default: the work-queue block.")
    topic_arn: str | None = Field(
        default=None, description="Response topic; default: the work-results block."
    )
    data_bucket: str | None = Field(
        default=None, description="Experiments, cache, records; default: data block."
    )
    prepare_deployment: str = Field(
        default="prepare-experiment/local", description="Flow/deployment for PrepareExperiment."
    )
    workers: int = Field(default=4, ge=1, description="Requests computed at the same time.")
    visibility_seconds: int = Field(
        default=30, ge=2, le=43200, description="Invisibility per receive; extended while working."
    )
    poll_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait.")
    refresh_seconds: float = Field(
        default=2.0, gt=0, description="How often experiment ETags are re-checked."
    )
    max_experiments: int = Field(default=4, ge=1, description="Experiments kept in memory.")
    max_experiment_bytes: int | None = Field(
        default=None, description="Memory budget of the experiments (bytes)."
    )
    result_memory_bytes: int = Field(default=256 << 20, ge=0, description="In-memory result cache budget.")
    s3_cache_min_compute_seconds: float = Field(
        default=0.02, ge=0, description="Results that took at least this long to compute are cached in S3."
    )
    status_file: Path | None = Field(default=None, description="Heartbeat/readiness file.")
    journal_file: Path | None = Field(
        default=None,
        description="Ids of the messages answered here (default: next to the status file, if any).",
    )
    event_batch_seconds: float = Field(
        default=1.0, gt=0, description="Longest wait before request events go out."
    )
    event_batch_size: int = Field(default=200, ge=1, description="Requests per Prefect event at most.")
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    summary_seconds: float = Field(default=60.0, gt=0, description="Summary artifact update interval.")
    prepare_poll_seconds: float = Field(default=2.0, gt=0, description="Polling of PrepareExperiment runs.")
    max_receive_count: int | None = Field(default=None, description="Default: the queue's redrive policy.")


# ---- small building blocks ------------------------------------------------------------------------


@dataclass
class Message:
    """A received SQS message and its bookkeeping."""

    raw: dict[str, Any]
    received: float = field(default_factory=time.monotonic)
    extended: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.raw["MessageId"]

    @property
    def receipt(self) -> str:
        return self.raw["ReceiptHandle"]

    @property
    def body(self) -> str:
        return self.raw.get("Body", "")

    @property
    def receive_count(self) -> int:
        return int(self.raw.get("Attributes", {}).get("ApproximateReceiveCount", 1))

    @property
    def group_id(self) -> str | None:
        return self.raw.get("Attributes", {}).get("MessageGroupId")

    @property
    def queue_ms(self) -> float | None:
        sent = self.raw.get("Attributes", {}).get("SentTimestamp")
        return None if sent is None else max(0.0, time.time() * 1000 - int(sent))


class SingleFlight:
    """Concurrent calls with the same key run the function once and share its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, Any]] = {}

    def do(self, key: str, function):
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = {"event": threading.Event()}
        if not leader:
            call["event"].wait()
            if "error" in call:
                raise call["error"]
            return call["value"], False
        try:
            call["value"] = function()
            return call["value"], True
        except BaseException as error:
            call["error"] = error
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call["event"].set()


class MemoryResults:
    """LRU of result bodies (JSON text) by cache key, bounded in bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        size = len(value)
        if size > self.budget:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.budget and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    @property
    def size(self) -> tuple[int, int]:
        with self._lock:
            return len(self._items), self._bytes


class Journal:
    """Ids of the messages whose response this host published, appended to a local file.

    Each id is written with one ``write(2)`` right after the publish, so it survives the process
    being killed (the data is in the kernel's page cache): a restarted service does not answer a
    redelivered message twice. The file keeps the latest ``keep`` ids.
    """

    def __init__(self, path: Path | None, *, keep: int = 20_000) -> None:
        self.path = path
        self.keep = keep
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._file = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines()[-keep:]:
                if line.strip():
                    self._ids[line.strip()] = None
        self._file = path.open("a", buffering=1)  # line-buffered: one write(2) per id

    def add(self, message_id: str) -> None:
        with self._lock:
            self._ids[message_id] = None
            if self._file is not None:
                self._file.write(message_id + "\n")
            if len(self._ids) > 2 * self.keep:
                self._compact()

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._ids

    def _compact(self) -> None:
        while len(self._ids) > self.keep:
            self._ids.popitem(last=False)
        if self._file is not None and self.path is not None:
            self._file.close()
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text("".join(f"{message_id}\n" for message_id in self._ids))
            os.replace(temporary, self.path)
            self._file = self.path.open("a", buffering=1)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# ---- recording in Prefect -----------------------------------------------------------------------


class Recorder:
    """Off the request path: Prefect events, statistics, the status file and the summary artifact.

    The request path only puts a dict on a queue (about a microsecond). This thread keeps the
    counters and records every request in Prefect: answered and failed requests go out together
    as one ``interlinked.analysis.requests`` event per second at most (up to
    ``event_batch_size`` requests each, every request listed in its payload), since the Prefect
    server spends ~2 ms of CPU per event it ingests — as much as a request costs the emulator.
    Failed requests, dead letters, retries and duplicates also get an event of their own
    (``interlinked.analysis.request.<what>``, with the request's uuid, task and experiment as
    resource labels) for alerting.
    """

    def __init__(self, service: AnalysisService) -> None:
        self.service = service
        self.settings = service.settings
        self.queue: SimpleQueue[dict[str, Any]] = SimpleQueue()
        self.started = time.time()
        self.counts: dict[str, dict[str, Any]] = {}
        self.latencies: dict[str, deque[float]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=20)
        self.total = 0
        self.emitted = 0
        self.recorded = 0
        self.emit_failures = 0
        self._summary_total = -1
        self._batch: list[dict[str, Any]] = []
        self._batch_started = 0.0
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._stop = threading.Event()

    def record(self, event: str, **fields: Any) -> None:
        self.queue.put({"event": event, "at": datetime.now(UTC), **fields})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()
        self._flush()
        self.write_status(ready=False)
        self.write_summary(force=True)

    def _run(self) -> None:
        next_heartbeat = 0.0
        next_summary = time.monotonic() + self.settings.summary_seconds
        while not self._stop.is_set():
            try:
                item = self.queue.get(timeout=0.2)
            except Empty:
                item = None
            if item is not None:
                self._handle(item)
            now = time.monotonic()
            if self._batch and now - self._batch_started >= self.settings.event_batch_seconds:
                self._flush()
            if now >= next_heartbeat:
                self.write_status(ready=self.service.ready)
                next_heartbeat = now + self.settings.heartbeat_seconds
            if now >= next_summary:
                self.write_summary()
                next_summary = now + self.settings.summary_seconds

    def _drain(self) -> None:
        while True:
            try:
                self._handle(self.queue.get_nowait())
            except Empty:
                return

    def _handle(self, item: dict[str, Any]) -> None:
        try:
            self._count(item)
            if item["event"] in ("answered", "failed"):
                if not self._batch:
                    self._batch_started = time.monotonic()
                self._batch.append(item)
                if len(self._batch) >= self.settings.event_batch_size:
                    self._flush()
                if item["event"] == "answered":
                    return
            self._emit(item)
        except Exception:
            self.emit_failures += 1
            logger.exception("could not record %s", item.get("event"))

    def _flush(self) -> None:
        """One Prefect event listing the requests answered since the last one."""
        from prefect.events import emit_event

        batch, self._batch = self._batch, []
        if not batch:
            return
        flow_run = self.service.flow_run
        fields = (
            "uuid",
            "messageId",
            "task",
            "experimentId",
            "errorCode",
            "cache",
            "serviceMs",
            "computeMs",
            "flowRunId",
        )
        requests = [{key: item[key] for key in fields if item.get(key) is not None} for item in batch]
        experiments = sorted(
            {item["experimentId"] for item in batch if isinstance(item.get("experimentId"), str)}
        )
        related = [
            {
                "prefect.resource.id": f"interlinked.experiment.{experiment}",
                "prefect.resource.role": "experiment",
            }
            for experiment in experiments[:20]
        ]
        run_id = str(flow_run.id) if flow_run is not None else f"{socket.gethostname()}-{os.getpid()}"
        if flow_run is not None:
            related.insert(
                0,
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                    "prefect.resource.role": "flow-run",
                    "prefect.resource.name": flow_run.name,
                },
            )
        failed = sum(1 for item in batch if item["event"] == "failed")
        try:
            emitted = emit_event(
                event=BATCH_EVENT,
                resource={
                    "prefect.resource.id": f"interlinked.analysis-service.{run_id}",
                    "prefect.resource.name": f"analysis service {flow_run.name if flow_run else run_id}",
                },
                related=related,
                payload={
                    "count": len(batch),
                    "answered": len(batch) - failed,
                    "failed": failed,
                    "requests": requests,
                },
                occurred=batch[-1]["at"],
            )
        except Exception:
            self.emit_failures += 1
            logger.exception("could not record %d requests in Prefect", len(batch))
            return
        if emitted is not None:
            self.emitted += 1
            self.recorded += len(batch)

    def _count(self, item: dict[str, Any]) -> None:
        if item["event"] not in ("answered", "failed"):
            return
        task = item.get("task") or "?"
        counts = self.counts.setdefault(
            task, {"requests": 0, "errors": 0, "memoryHits": 0, "s3Hits": 0, "computed": 0, "errorCodes": {}}
        )
        counts["requests"] += 1
        self.total += 1
        if item.get("errorCode"):
            counts["errors"] += 1
            counts["errorCodes"][item["errorCode"]] = counts["errorCodes"].get(item["errorCode"], 0) + 1
        cache = item.get("cache")
        if cache == "memory":
            counts["memoryHits"] += 1
        elif cache == "s3":
            counts["s3Hits"] += 1
        elif cache == "computed":
            counts["computed"] += 1
        if item.get("serviceMs") is not None:
            self.latencies.setdefault(task, deque(maxlen=2000)).append(item["serviceMs"])
        self.recent.append(
            {
                key: item.get(key)
                for key in ("uuid", "task", "experimentId", "errorCode", "cache", "serviceMs")
            }
        )

    def _emit(self, item: dict[str, Any]) -> None:
        from prefect.events import emit_event

        flow_run = self.service.flow_run
        name = item["event"]
        message_id = item.get("messageId") or "unknown"
        resource = {
            "prefect.resource.id": f"{EVENT_PREFIX}.{message_id}",
            "prefect.resource.name": f"{item.get('task') or 'message'} {item.get('uuid') or message_id}",
        }
        for label, key in (
            ("interlinked.uuid", "uuid"),
            ("interlinked.task", "task"),
            ("interlinked.experiment-id", "experimentId"),
        ):
            if isinstance(item.get(key), str):
                resource[label] = item[key]
        related = []
        if flow_run is not None:
            related.append(
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                    "prefect.resource.role": "flow-run",
                    "prefect.resource.name": flow_run.name,
                }
            )
        if isinstance(item.get("experimentId"), str):
            related.append(
                {
                    "prefect.resource.id": f"interlinked.experiment.{item['experimentId']}",
                    "prefect.resource.role": "experiment",
                }
            )
        if item.get("flowRunId"):
            related.append(
                {
                    "prefect.resource.id": f"prefect.flow-run.{item['flowRunId']}",
                    "prefect.resource.role": "prepare-run",
                }
            )
        payload = {
            key: value for key, value in item.items() if key not in ("event", "at") and value is not None
        }
        emitted = emit_event(
            event=f"{EVENT_PREFIX}.{name}",
            resource=resource,
            related=related,
            payload=payload,
            occurred=item["at"],
        )
        if emitted is not None:
            self.emitted += 1

    # -- status and summary ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        tasks = {}
        for task, counts in sorted(self.counts.items()):
            latencies = sorted(self.latencies.get(task, ()))
            tasks[task] = {
                **counts,
                "p50Ms": _percentile(latencies, 50),
                "p99Ms": _percentile(latencies, 99),
            }
        entries, size = self.service.results.size
        return {
            "requests": self.total,
            "requestsRecorded": self.recorded,
            "eventsEmitted": self.emitted,
            "tasks": tasks,
            "resultCache": {"entries": entries, "bytes": size},
            "experiments": [entry.describe() for entry in self.service.experiments.cached()],
            "inFlight": len(self.service.in_flight),
            "prepareRuns": len(self.service.prepares.watching),
            "recent": list(self.recent),
        }

    def write_status(self, *, ready: bool) -> None:
        path = self.settings.status_file
        if path is None:
            return
        import psutil

        flow_run = self.service.flow_run
        status = {
            "ready": ready,
            "pid": os.getpid(),
            "process_started": psutil.Process().create_time(),
            "heartbeat": time.time(),
            "started": self.started,
            "flow_run_id": str(flow_run.id) if flow_run else None,
            "flow_run_name": flow_run.name if flow_run else None,
            "queue_url": self.service.queue_url,
            "topic_arn": self.service.topic_arn,
            "bucket": self.service.bucket,
            **self.snapshot(),
        }
        try:
            write_status(path, status)
        except OSError as error:
            logger.warning("could not write the status file %s: %s", path, error)

    def write_summary(self, *, force: bool = False) -> None:
        """The summary table artifact on the service's flow run (when something changed)."""
        flow_run = self.service.flow_run
        if flow_run is None or (self.total == self._summary_total and not force):
            return
        snapshot = self.snapshot()
        rows = [
            {
                "task": task,
                "requests": values["requests"],
                "errors": values["errors"],
                "memory hits": values["memoryHits"],
                "S3 hits": values["s3Hits"],
                "computed": values["computed"],
                "p50 ms": values["p50Ms"],
                "p99 ms": values["p99Ms"],
            }
            for task, values in snapshot["tasks"].items()
        ]
        try:
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.actions import ArtifactCreate

            with get_client(sync_client=True) as client:
                client.create_artifact(
                    ArtifactCreate(
                        key=SUMMARY_ARTIFACT_KEY,
                        type="table",
                        data=json.dumps(rows),
                        description=(
                            f"Analysis service {flow_run.name}: {snapshot['requests']} requests answered, "
                            f"{len(snapshot['experiments'])} experiment(s) in memory, "
                            f"updated {datetime.now(UTC).isoformat(timespec='seconds')}"
                        ),
                        flow_run_id=flow_run.id,
                    )
                )
            self._summary_total = self.total
        except Exception as error:  # the summary is a convenience; requests are recorded as events
            logger.warning("could not update the summary artifact: %s", error)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 2)


# ---- PrepareExperiment --------------------------------------------------------------------------


@dataclass
class PrepareJob:
    task: Task
    message: Message
    flow_run_id: str
    submitted: float = field(default_factory=time.monotonic)


class PrepareLauncher:
    """Starts ``prepare-experiment`` flow runs and finishes their messages when the runs end."""

    FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    def __init__(self, service: AnalysisService) -> None:
        self.service = service
        self.watching: dict[str, PrepareJob] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="prepare-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, task: Task, message: Message) -> None:
        """Create (or find, on redelivery) the flow run for this message; the watcher finishes it."""
        from prefect.deployments import run_deployment

        service = self.service
        prepare_parameters(task.body)  # ServiceError for a bad config, before any flow run
        service.check_prepare_source(task)
        try:
            flow_run = run_deployment(
                service.settings.prepare_deployment,
                parameters={
                    "request": task.request,
                    "response_id": message.id,
                    "topic_arn": service.topic_arn,
                },
                flow_run_name=f"prepare {task.experiment_id}",
                tags=["analysis", f"experiment:{task.experiment_id}"],
                idempotency_key=f"prepare-experiment:{message.id}",
                timeout=0,
                as_subflow=False,
            )
        except Exception as error:
            from prefect.exceptions import ObjectNotFound

            if isinstance(error, ObjectNotFound):
                raise ServiceError(
                    ErrorCode.SERVICE_UNAVAILABLE,
                    f"PrepareExperiment is not available: deployment {service.settings.prepare_deployment!r} "
                    "does not exist",
                ) from None
            raise TransientError(f"could not create the prepare-experiment flow run: {error}") from error
        job = PrepareJob(task=task, message=message, flow_run_id=str(flow_run.id))
        with self._lock:
            self.watching[message.id] = job
        service.recorder.record(
            "prepare-submitted",
            uuid=task.uuid,
            task=task.name,
            experimentId=task.experiment_id,
            messageId=message.id,
            flowRunId=str(flow_run.id),
        )
        logger.info("PrepareExperiment %s: flow run %s", task.experiment_id, flow_run.id)

    def _watch(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        service = self.service
        while not service.stopping.wait(service.settings.prepare_poll_seconds):
            with self._lock:
                jobs = list(self.watching.values())
            if not jobs:
                continue
            try:
                with get_client(sync_client=True) as client:
                    runs = client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            id=FlowRunFilterId(any_=[job.flow_run_id for job in jobs])
                        )
                    )
            except Exception as error:
                logger.warning("could not read prepare-experiment runs: %s", error)
                continue
            states = {str(run.id): run.state for run in runs}
            for job in jobs:
                state = states.get(job.flow_run_id)
                if state is None or state.type.value not in self.FINAL:
                    continue
                try:
                    self._finish(job, state)
                except Exception:
                    logger.exception("could not finish PrepareExperiment message %s", job.message.id)

    def _finish(self, job: PrepareJob, state: Any) -> None:
        service = self.service
        record = service.read_record(job.message.id)
        if record is None:
            # The run ended without answering (killed, crashed before its first line, ...).
            reason = state.message or state.name
            response = error_response(
                job.task.request,
                ErrorCode.PREPARE_FAILED,
                f"Preparing experiment {job.task.experiment_id!r} failed: flow run {job.flow_run_id} ended "
                f"{state.name} ({reason})",
            )
            sns_id = service.publish(response)
            service.write_record(job.message.id, job.task.request, response, sns_id)
            record = {"error": True, "errorCode": ErrorCode.PREPARE_FAILED, "snsMessageId": sns_id}
        service.recorder.record(
            "failed" if record.get("error") else "answered",
            uuid=job.task.uuid,
            task=job.task.name,
            experimentId=job.task.experiment_id,
            messageId=job.message.id,
            receiveCount=job.message.receive_count,
            errorCode=record.get("errorCode"),
            serviceMs=round((time.monotonic() - job.message.received) * 1000, 1),
            flowRunId=job.flow_run_id,
            snsMessageId=record.get("snsMessageId"),
        )
        service.delete(job.message)
        with self._lock:
            self.watching.pop(job.message.id, None)
        service._done(job.message)
        logger.info("PrepareExperiment %s finished: %s", job.task.experiment_id, state.name)


# ---- the service --------------------------------------------------------------------------------


class AnalysisService:
    """Everything the service process does; :meth:`run` blocks until ``stopping`` is set."""

    def __init__(self, settings: ServiceSettings, *, flow_run: Any = None) -> None:
        self.settings = settings
        self.flow_run = flow_run
        self.stopping = threading.Event()
        self.ready = False
        self.in_flight: dict[str, Message] = {}
        self._in_flight_lock = threading.Condition()
        self._connect()
        self.experiments = ExperimentStore(
            self.s3,
            self.bucket,
            max_experiments=settings.max_experiments,
            max_bytes=settings.max_experiment_bytes or _half_of_memory(),
            refresh_seconds=settings.refresh_seconds,
            on_loaded=self._experiment_loaded,
        )
        journal_file = settings.journal_file or (
            settings.status_file.with_name(settings.status_file.name + ".journal")
            if settings.status_file
            else None
        )
        self.journal = Journal(journal_file)
        self.results = MemoryResults(settings.result_memory_bytes)
        self.single_flight = SingleFlight()
        self.compute_estimates: dict[tuple[str, str], float] = {}
        # Cache keys known to be in S3 (large results are offloaded there before they are named).
        self._persisted: set[str] = set()
        self.recorder = Recorder(self)
        self.prepares = PrepareLauncher(self)
        self.workers = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="request")
        # Import the science stack now, not in the first request (scanpy takes seconds to import).
        import flows.analysis.tasks  # noqa: F401

        self.background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ack")

    # -- AWS ----------------------------------------------------------------------------------------
    def _connect(self) -> None:
        settings = self.settings
        session, client_parameters = _aws_session()
        config = Config(
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=settings.workers + 8,
            connect_timeout=5,
            read_timeout=max(30, settings.poll_seconds + 10),
        )
        if client_parameters.get("config") is not None:
            config = client_parameters.pop("config").merge(config)
        self.sqs = session.client("sqs", config=config, **client_parameters)
        self.sns = session.client("sns", config=config, **client_parameters)
        self.s3 = session.client("s3", config=config, **client_parameters)

        self.queue_url = settings.queue_url or blocks.SqsQueue.load(blocks.WORK_QUEUE).queue_url
        self.topic_arn = settings.topic_arn or blocks.SnsTopic.load(blocks.WORK_RESULTS_TOPIC).topic_arn
        if settings.data_bucket:
            self.bucket = settings.data_bucket
        else:
            from prefect_aws import S3Bucket

            self.bucket = S3Bucket.load(blocks.DATA_BUCKET).bucket_name
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]
        redrive = json.loads(attributes.get("RedrivePolicy", "null") or "null")
        self.max_receive_count = settings.max_receive_count or (
            int(redrive["maxReceiveCount"]) if redrive else None
        )
        self.dead_letter_queue_url = None
        if redrive:
            dlq_name = redrive["deadLetterTargetArn"].rsplit(":", 1)[-1]
            self.dead_letter_queue_url = self.sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"]

    # -- lifecycle ------------------------------------------------------------------------------------
    def run(self, *, run_seconds: float | None = None) -> dict[str, Any]:
        self.recorder.start()
        self.prepares.start()
        threads = [
            threading.Thread(
                target=self.experiments.run_refresher, args=(self.stopping,), name="refresher", daemon=True
            ),
            threading.Thread(target=self._keep_invisible, name="visibility", daemon=True),
        ]
        for thread in threads:
            thread.start()
        deadline = None if run_seconds is None else time.monotonic() + run_seconds
        receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        self.ready = True
        self.recorder.write_status(ready=True)
        receiver.start()
        logger.info(
            "analysis service ready: queue %s → topic %s (bucket %s, %d workers)",
            self.queue_url,
            self.topic_arn,
            self.bucket,
            self.settings.workers,
        )
        from prefect.exceptions import TerminationSignal

        try:
            while not self.stopping.is_set() and not STOP.is_set() and receiver.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                try:
                    self.stopping.wait(0.2)
                except TerminationSignal:
                    # Prefect's own SIGTERM handler (installed by the flow engine): stop gracefully.
                    logger.info("termination signal: stopping after the requests in progress")
                    STOP.set()
        finally:
            self.ready = False
            self.stopping.set()
            # A long poll in progress is not waited for: whatever it returns is handed back.
            receiver.join(timeout=1)
            self._shutdown()
        return self.recorder.snapshot()

    def _shutdown(self) -> None:
        self.workers.shutdown(wait=True, cancel_futures=False)
        # Prepare runs go on without us: hand their messages back so the next instance watches them.
        for job in list(self.prepares.watching.values()):
            self.release(job.message, 0)
        self.background.shutdown(wait=True)
        self.journal.close()
        self.recorder.stop()
        logger.info("analysis service stopped after %d requests", self.recorder.total)

    def _receive_loop(self) -> None:
        while not self.stopping.is_set() and not STOP.is_set():
            try:
                self._receive_once()
            except Exception:
                logger.exception("receive loop error; continuing in 1 s")
                self.stopping.wait(1)

    def _receive_once(self) -> None:
        with self._in_flight_lock:
            while len(self.in_flight) - len(self.prepares.watching) >= self.settings.workers:
                if self.stopping.is_set() or STOP.is_set():
                    return
                self._in_flight_lock.wait(timeout=0.5)
            capacity = self.settings.workers - (len(self.in_flight) - len(self.prepares.watching))
        wait = self.settings.poll_seconds
        try:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(10, capacity)),
                WaitTimeSeconds=wait,
                VisibilityTimeout=self.settings.visibility_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
        except (ClientError, BotoCoreError) as error:
            logger.warning("receive from %s failed: %s; retrying in 2 s", self.queue_url, error)
            self.stopping.wait(2)
            return
        for raw in response.get("Messages", []):
            message = Message(raw)
            if self.stopping.is_set() or STOP.is_set():
                self.release(message, 0)  # received while stopping: hand it straight back
                continue
            with self._in_flight_lock:
                self.in_flight[message.receipt] = message
            self.workers.submit(self._handle_safely, message)

    def _done(self, message: Message) -> None:
        with self._in_flight_lock:
            self.in_flight.pop(message.receipt, None)
            self._in_flight_lock.notify_all()

    def _keep_invisible(self) -> None:
        """Extend the invisibility of messages still being worked on (long computations, prepares)."""
        period = self.settings.visibility_seconds
        while not self.stopping.wait(max(0.5, period / 4)):
            now = time.monotonic()
            with self._in_flight_lock:
                messages = list(self.in_flight.values())
            for message in messages:
                if now - message.extended < period / 2:
                    continue
                try:
                    self.sqs.change_message_visibility(
                        QueueUrl=self.queue_url, ReceiptHandle=message.receipt, VisibilityTimeout=period
                    )
                    message.extended = now
                except (ClientError, BotoCoreError) as error:
                    logger.debug("could not extend message %s: %s", message.id, error)

    # -- one message ----------------------------------------------------------------------------------
    def _handle_safely(self, message: Message) -> None:
        keep = False
        try:
            keep = self.handle(message)
        except Exception:
            logger.exception("unexpected failure handling message %s; it will be redelivered", message.id)
        finally:
            if not keep:
                self._done(message)

    def handle(self, message: Message) -> bool:
        """Answer one message. Returns True when the message stays in flight (a prepare run)."""
        started = time.perf_counter()
        try:
            request = decode_message(message.body)
        except UnparseableMessage as error:
            self.unparseable(message, str(error))
            return False
        if message.receive_count > 1 and (message.id in self.journal or self.record_exists(message.id)):
            logger.info(
                "message %s was already answered (receive %d); deleting it", message.id, message.receive_count
            )
            self.delete(message)
            self.recorder.record(
                "duplicate",
                messageId=message.id,
                uuid=request.get("uuid"),
                receiveCount=message.receive_count,
            )
            return False

        task: Task | None = None
        cache = None
        compute_ms = None
        message_text = None
        try:
            task = parse_task(request)
            if task.name == PREPARE_EXPERIMENT:
                self.prepares.submit(task, message)
                return True
            response, message_text, cache, compute_ms = self.answer(task)
        except ServiceError as error:
            response = error_response(request, error.code, error.message)
        except TransientError as error:
            if self.max_receive_count is None or message.receive_count < self.max_receive_count:
                delay = min(30, 2**message.receive_count)
                logger.warning("message %s: %s; retrying in %d s", message.id, error, delay)
                self.release(message, delay)
                self.recorder.record(
                    "released", messageId=message.id, uuid=request.get("uuid"), reason=str(error)
                )
                return False
            response = error_response(
                request,
                ErrorCode.SERVICE_UNAVAILABLE,
                f"The analysis service could not reach its storage after {message.receive_count} attempts; "
                "try again later",
            )
        except Exception as error:
            logger.exception("internal error answering message %s", message.id)
            response = error_response(
                request,
                ErrorCode.INTERNAL_ERROR,
                f"The analysis failed unexpectedly ({type(error).__name__}: {error})"[:500]
                + f"; request {request.get('uuid')} is in the analysis service log",
            )

        try:
            sns_id = self.publish(response, message_text)
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "could not publish the response to message %s: %s; it will be redelivered", message.id, error
            )
            self.release(message, min(30, 2**message.receive_count))
            return False
        service_ms = (time.perf_counter() - started) * 1000
        self.journal.add(message.id)
        self.background.submit(self._acknowledge, message, request, response, sns_id)
        details = response["response"]
        self.recorder.record(
            "failed" if details["error"] else "answered",
            uuid=request.get("uuid"),
            task=task.name if task else _task_name(request),
            experimentId=request.get("experimentId")
            if isinstance(request.get("experimentId"), str)
            else None,
            messageId=message.id,
            receiveCount=message.receive_count,
            errorCode=details.get("errorCode"),
            userMessage=details.get("userMessage"),
            cache=cache,
            computeMs=None if compute_ms is None else round(compute_ms, 3),
            serviceMs=round(service_ms, 3),
            queueMs=message.queue_ms,
            resultKey=details.get("resultKey"),
            snsMessageId=sns_id,
        )
        return False

    def answer(self, task: Task) -> tuple[dict[str, Any], str, str, float | None]:
        """An interactive task's WorkResponse, its encoded message, where the result came from
        (``memory``, ``s3``, ``computed`` or ``shared`` with a concurrent identical request) and
        the compute time in ms."""
        experiment = self.experiments.get(task.experiment_id)
        key = cache_key(
            experiment_id=task.experiment_id,
            version=experiment.version,
            body=task.body,
            analysis_version=_analysis_version(),
        )
        body = self.results.get(key)
        source = "memory"
        compute_ms = None
        if body is None and self._worth_s3_lookup(task):
            body = self._s3_cached(key)
            source = "s3"
            if body is not None:
                self.results.put(key, body)
                self._persisted.add(key)
        if body is None:

            def compute() -> str:
                from flows.analysis.tasks import run_task

                began = time.perf_counter()
                text = encode(run_task(task, experiment))
                self._learn(task, time.perf_counter() - began)
                self.results.put(key, text)
                return text

            began = time.perf_counter()
            body, computed_here = self.single_flight.do(key, compute)
            compute_ms = (time.perf_counter() - began) * 1000
            source = "computed" if computed_here else "shared"
        response = work_response(task.request, body)
        message = encode(response)
        if not fits_sns(message):
            if key not in self._persisted:
                self._store_s3(key, body)  # the response points at it: it must exist first
                self._remember_persisted(key)
            response = offloaded_response(task.request, bucket=self.bucket, key=key)
            message = encode(response)
        elif source == "computed" and compute_ms >= self.settings.s3_cache_min_compute_seconds * 1000:
            self.background.submit(self._store_s3_quietly, key, body)
        return response, message, source, compute_ms

    # -- caching helpers -------------------------------------------------------------------------------
    def _learn(self, task: Task, seconds: float) -> None:
        key = (task.experiment_id, task.name)
        previous = self.compute_estimates.get(key)
        self.compute_estimates[key] = seconds if previous is None else 0.7 * previous + 0.3 * seconds

    def _worth_s3_lookup(self, task: Task) -> bool:
        estimate = self.compute_estimates.get((task.experiment_id, task.name))
        return estimate is None or estimate >= self.settings.s3_cache_min_compute_seconds

    def _s3_cached(self, key: str) -> str | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
        except ClientError as error:
            if not is_missing(error):
                logger.warning("result cache read %s failed: %s", key, error)
            return None
        except BotoCoreError as error:
            logger.warning("result cache read %s failed: %s", key, error)
            return None

    def _remember_persisted(self, key: str) -> None:
        if len(self._persisted) > 100_000:
            self._persisted.clear()
        self._persisted.add(key)

    def _store_s3(self, key: str, text: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode(), ContentType="application/json")

    def _store_s3_quietly(self, key: str, text: str) -> None:
        try:
            self._store_s3(key, text)
        except Exception as error:
            logger.warning("result cache write %s failed: %s", key, error)

    # -- responses, records, messages ------------------------------------------------------------------
    def publish(self, response: dict[str, Any], message: str | None = None) -> str:
        """Publish a WorkResponse (``message``: its encoding, when already made); the SNS message id."""
        attributes = response_attributes(response["request"], response)
        return self.sns.publish(
            TopicArn=self.topic_arn,
            Message=message if message is not None else encode(response),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            },
        )["MessageId"]

    def write_record(
        self, message_id: str, request: dict[str, Any], response: dict[str, Any], sns_id: str
    ) -> None:
        record = {
            "messageId": message_id,
            "uuid": request.get("uuid"),
            "snsMessageId": sns_id,
            "error": response["response"]["error"],
            "errorCode": response["response"].get("errorCode"),
            "publishedAt": datetime.now(UTC).isoformat(),
            "by": f"analysis-service {socket.gethostname()}:{os.getpid()}",
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=response_record_key(message_id),
            Body=json.dumps(record).encode(),
            ContentType="application/json",
        )

    def record_exists(self, message_id: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=response_record_key(message_id))
            return True
        except ClientError as error:
            if is_missing(error):
                return False
            raise

    def read_record(self, message_id: str) -> dict[str, Any] | None:
        """The response record of a delivery (``{"error", "errorCode", "snsMessageId", ...}``), or None."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=response_record_key(message_id))["Body"].read()
        except ClientError as error:
            if is_missing(error):
                return None
            raise
        try:
            record = json.loads(body)
        except ValueError:
            record = None
        return record if isinstance(record, dict) else {"error": False}

    def _acknowledge(
        self, message: Message, request: dict[str, Any], response: dict[str, Any], sns_id: str
    ) -> None:
        """After publishing (and journaling): delete the message; if that fails, leave a response
        record in S3 so that whichever instance gets it again knows it was answered."""
        try:
            self.delete(message)
            return
        except Exception as error:
            logger.warning(
                "could not delete answered message %s (%s); recording its response", message.id, error
            )
        try:
            self.write_record(message.id, request, response, sns_id)
        except Exception as error:
            logger.error("could not record the response to message %s either: %s", message.id, error)

    def delete(self, message: Message) -> None:
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt)

    def release(self, message: Message, delay: int) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message.receipt, VisibilityTimeout=int(delay)
            )

    def unparseable(self, message: Message, reason: str) -> None:
        """Not a task: release it until its last allowed receive, then dead-letter it with the reason."""
        last = self.max_receive_count is not None and message.receive_count >= self.max_receive_count
        if not last or self.dead_letter_queue_url is None:
            logger.warning(
                "message %s is not a task (receive %d of %s): %s",
                message.id,
                message.receive_count,
                self.max_receive_count or "?",
                reason,
            )
            self.release(message, 0 if self.dead_letter_queue_url else 300)
            return
        parameters: dict[str, Any] = {
            "QueueUrl": self.dead_letter_queue_url,
            "MessageBody": message.body or "(empty)",
            "MessageAttributes": {
                "reason": {"DataType": "String", "StringValue": reason[:1000]},
                "sourceQueue": {"DataType": "String", "StringValue": self.queue_url},
                "originalMessageId": {"DataType": "String", "StringValue": message.id},
                "receiveCount": {"DataType": "Number", "StringValue": str(message.receive_count)},
            },
        }
        if self.dead_letter_queue_url.endswith(".fifo"):
            parameters["MessageGroupId"] = message.group_id or "dead-letters"
            parameters["MessageDeduplicationId"] = message.id
        try:
            self.sqs.send_message(**parameters)
            self.delete(message)
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "could not dead-letter message %s (%s); SQS will after its max receives", message.id, error
            )
            return
        logger.error("message %s moved to the dead-letter queue: %s", message.id, reason)
        self._ui_log(f"Message {message.id} is not a task and was moved to the dead-letter queue: {reason}")
        self.recorder.record(
            "dead-lettered", messageId=message.id, reason=reason, receiveCount=message.receive_count
        )

    def check_prepare_source(self, task: Task) -> None:
        """Fail fast (``SOURCE_NOT_FOUND``) when the source matrix directory is empty or missing."""
        bucket, prefix = task.body["sourceBucket"], task.body["sourceMatrixPath"].lstrip("/")
        try:
            listing = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=50)
        except ClientError as error:
            if is_missing(error) or error.response.get("Error", {}).get("Code") in ("AccessDenied", "403"):
                raise ServiceError(
                    ErrorCode.SOURCE_NOT_FOUND, f"Source bucket {bucket!r} does not exist or cannot be read"
                ) from None
            if is_transient(error):
                raise TransientError(str(error)) from error
            raise
        if not listing.get("KeyCount"):
            raise ServiceError(
                ErrorCode.SOURCE_NOT_FOUND,
                f"Nothing at s3://{bucket}/{prefix}: expected a 10x matrix directory",
            )

    # -- misc -----------------------------------------------------------------------------------------
    def _experiment_loaded(self, entry: LoadedExperiment, reason: str) -> None:
        logger.info(
            "experiment %s version %s in memory (%s): %d cells x %d genes, %.1f MB, loaded in %.2f s",
            entry.experiment_id,
            entry.version,
            reason,
            entry.adata.n_obs,
            entry.adata.n_vars,
            entry.nbytes / 1e6,
            entry.load_seconds,
        )
        self.recorder.record(
            "experiment-loaded", experimentId=entry.experiment_id, reason=reason, **entry.describe()
        )

    def _ui_log(self, line: str) -> None:
        if self.flow_run is None:
            return
        with contextlib.suppress(Exception):
            from prefect.logging.loggers import flow_run_logger

            flow_run_logger(self.flow_run).warning(line)


def _task_name(request: dict[str, Any]) -> str | None:
    body = request.get("body")
    name = body.get("name") if isinstance(body, dict) else None
    return name if isinstance(name, str) else None


def _half_of_memory() -> int:
    """Default memory budget of the experiments: half of this machine's (or container's) RAM."""
    import psutil

    return psutil.virtual_memory().total // 2


def _analysis_version() -> str:
    from analyses import ANALYSIS_VERSION

    return ANALYSIS_VERSION


def _aws_session() -> tuple[Any, dict[str, Any]]:
    """boto3 session and client parameters from the credentials block (or boto3's defaults)."""
    import boto3

    try:
        from prefect_aws import AwsCredentials

        credentials = AwsCredentials.load(blocks.AWS_CREDENTIALS)
        return credentials.get_boto3_session(), credentials.aws_client_parameters.get_params_override()
    except Exception as error:
        logger.info("no %s block (%s); using boto3's own configuration", blocks.AWS_CREDENTIALS, error)
        return boto3.session.Session(), {}


def _mark_previous_run_crashed(status_file: Path | None) -> None:
    """A service killed with SIGKILL leaves its flow run RUNNING: mark it CRASHED on the next start."""
    from flows.analysis.protocol import read_status

    if status_file is None:
        return
    status = read_status(status_file)
    if not status or not status.get("flow_run_id"):
        return
    try:
        import psutil

        alive = (
            psutil.pid_exists(int(status["pid"]))
            and abs(
                psutil.Process(int(status["pid"])).create_time() - float(status.get("process_started", 0))
            )
            < 1.0
        )
    except Exception:
        alive = False
    if alive:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(status["flow_run_id"])
            if run.state is not None and run.state.is_running():
                client.set_flow_run_state(
                    run.id,
                    Crashed(
                        message=f"the analysis service process {status['pid']} ended without stopping (killed)"
                    ),
                    force=True,
                )
    except Exception as error:
        logger.info("could not mark the previous service run as crashed: %s", error)


@flow(
    name=FLOW_NAME,
    description="The warm analysis service: answers single-cell tasks from the work queue until stopped.",
    persist_result=False,
)
def analysis_service(
    queue_url: str | None = None,
    topic_arn: str | None = None,
    data_bucket: str | None = None,
    prepare_deployment: str | None = None,
    workers: int | None = None,
    run_seconds: float | None = None,
    status_file: str | None = None,
) -> dict[str, Any]:
    """Serve until stopped (SIGTERM/SIGINT) or for ``run_seconds``; returns the final statistics.

    Parameters left ``None`` come from ``INTERLINKED_ANALYSIS_*`` variables, then from the blocks.
    """
    from prefect import get_run_logger
    from prefect.context import get_run_context

    overrides = {
        name: value
        for name, value in {
            "queue_url": queue_url,
            "topic_arn": topic_arn,
            "data_bucket": data_bucket,
            "prepare_deployment": prepare_deployment,
            "workers": workers,
            "status_file": status_file,
        }.items()
        if value is not None
    }
    settings = ServiceSettings(**overrides)
    _mark_previous_run_crashed(settings.status_file)
    service = AnalysisService(settings, flow_run=get_run_context().flow_run)
    get_run_logger().info(
        "Analysis service answering %s on %s; every request is an event %s.* related to this run",
        service.queue_url,
        service.topic_arn,
        EVENT_PREFIX,
    )
    statistics = service.run(run_seconds=run_seconds)
    get_run_logger().info("Stopped after %d requests", statistics["requests"])
    return statistics


def _log_to_stderr(level: str) -> None:
    """Our own handler: Prefect's logging configuration does not show the ``interlinked`` loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("interlinked")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.analysis.service", description="Run the analysis service until SIGTERM/SIGINT."
    )
    parser.add_argument("--queue-url")
    parser.add_argument("--topic-arn")
    parser.add_argument("--data-bucket")
    parser.add_argument("--prepare-deployment")
    parser.add_argument("--workers", type=int)
    parser.add_argument(
        "--status-file", help="heartbeat/readiness file (see flows.analysis.protocol.service_ready)"
    )
    parser.add_argument("--run-seconds", type=float, help="stop after this long (benchmarks)")
    parser.add_argument("--log-level", default=os.environ.get("INTERLINKED_ANALYSIS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    _log_to_stderr(args.log_level)

    def request_stop(signum, frame) -> None:
        logger.info("signal %d: stopping after the requests in progress", signum)
        STOP.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    code = 0
    try:
        analysis_service(
            queue_url=args.queue_url,
            topic_arn=args.topic_arn,
            data_bucket=args.data_bucket,
            prepare_deployment=args.prepare_deployment,
            workers=args.workers,
            run_seconds=args.run_seconds,
            status_file=args.status_file,
        )
    except KeyboardInterrupt:
        code = 0
    except Exception as error:
        logger.error("the analysis service failed: %s: %s", type(error).__name__, error)
        code = 1
    _exit_promptly(code)
    return code


def _exit_promptly(code: int) -> None:
    """Flush Prefect's event and log queues, then exit without the slow interpreter teardown.

    The flow run's final state is already on the server; what remains at exit is Prefect's queue
    services draining (done here explicitly, bounded) and module finalisers of the science stack.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        with contextlib.suppress(Exception):
            service.drain_all(timeout=10)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
