"""Recording in Prefect, off the request path: events, statistics, the status file, the summary."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from typing import Any

from blocks.status import heartbeat, write_status
from flows.analysis.service.settings import ServiceSettings

SUMMARY_ARTIFACT_KEY = "analysis-service-summary"
EVENT_PREFIX = "interlinked.analysis.request"
BATCH_EVENT = "interlinked.analysis.requests"
logger = logging.getLogger("interlinked.analysis.service")


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

    Parameters
    ----------
    settings
        Its status file, batching, heartbeat and summary intervals.
    flow_run
        The service's flow run (events are related to it, the summary artifact is attached to
        it), or None.
    gauges
        The service's current state for the snapshot: ``resultCache``, ``experiments``,
        ``inFlight``, ``prepareRuns``.
    ready
        Whether the service is ready (for the heartbeat).
    identity
        Fixed fields of the status file (``queue_url``, ``topic_arn``, ``bucket``).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        flow_run: Any = None,
        gauges: Callable[[], Mapping[str, Any]] = dict,
        ready: Callable[[], bool] = lambda: False,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.flow_run = flow_run
        self.gauges = gauges
        self.ready = ready
        self.identity = dict(identity or {})
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
            # Nothing may end this thread: without it no request is recorded and the status file
            # goes stale (a psutil read of /proc once failed here under load and did just that).
            try:
                if self._batch and now - self._batch_started >= self.settings.event_batch_seconds:
                    self._flush()
                if now >= next_heartbeat:
                    next_heartbeat = now + self.settings.heartbeat_seconds
                    self.write_status(ready=self.ready())
                if now >= next_summary:
                    next_summary = now + self.settings.summary_seconds
                    self.write_summary()
            except Exception:
                self.emit_failures += 1
                logger.exception("recorder: could not flush, write the status or the summary; going on")

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
        flow_run = self.flow_run
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
        related = self._flow_run_related() + related
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
        related = self._flow_run_related()
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

    def _flow_run_related(self) -> list[dict[str, str]]:
        """The service's flow run as a related resource of an event (none without a run)."""
        if self.flow_run is None:
            return []
        return [
            {
                "prefect.resource.id": f"prefect.flow-run.{self.flow_run.id}",
                "prefect.resource.role": "flow-run",
                "prefect.resource.name": self.flow_run.name,
            }
        ]

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
        return {
            "requests": self.total,
            "requestsRecorded": self.recorded,
            "eventsEmitted": self.emitted,
            "tasks": tasks,
            **self.gauges(),
            "recent": list(self.recent),
        }

    def write_status(self, *, ready: bool) -> None:
        path = self.settings.status_file
        if path is None:
            return
        flow_run = self.flow_run
        status = {
            **heartbeat(ready=ready),
            "started": self.started,
            "flow_run_id": str(flow_run.id) if flow_run else None,
            "flow_run_name": flow_run.name if flow_run else None,
            **self.identity,
            **self.snapshot(),
        }
        try:
            write_status(path, status)
        except OSError as error:
            logger.warning("could not write the status file %s: %s", path, error)

    def write_summary(self, *, force: bool = False) -> None:
        """The summary table artifact on the service's flow run (when something changed)."""
        flow_run = self.flow_run
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
