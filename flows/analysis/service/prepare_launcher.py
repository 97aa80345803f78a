"""PrepareExperiment in the service: a ``prepare-experiment`` flow run per message, watched to its end.

The launcher knows nothing of the service: it gets the few things it needs — where responses
go (:class:`~flows.analysis.service.responses.Responses`), how to finish or hand back a message,
and how to record what happened — as callables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from blocks.errors import error_code, is_missing, is_transient
from blocks.s3 import ObjectStore
from flows.analysis.experiments import TransientError
from flows.analysis.protocol import ErrorCode, ServiceError, Task, error_response
from flows.analysis.service.messages import Message
from flows.analysis.service.responses import Responses
from flows.analysis.service.settings import ServiceSettings
from flows.analysis.sources import check_request_allowed
from flows.analysis.tasks import prepare_parameters

logger = logging.getLogger("interlinked.analysis.service")


def check_source(s3: Any, task: Task) -> None:
    """Fail fast: a source outside the allow-list (``SOURCE_NOT_ALLOWED``), an experiment that
    exists without ``overwrite`` (``EXPERIMENT_EXISTS``), an empty or missing source matrix
    directory (``SOURCE_NOT_FOUND``)."""
    check_request_allowed(task.body, task.experiment_id, ServiceSettings())
    bucket, prefix = task.body["sourceBucket"], task.body["sourceMatrixPath"].lstrip("/")
    source = ObjectStore(bucket, s3)
    try:
        found = source.prefix_exists(prefix)
    except ClientError as error:
        if is_missing(error) or error_code(error) in ("AccessDenied", "403"):
            raise ServiceError(
                ErrorCode.SOURCE_NOT_FOUND, f"Source bucket {bucket!r} does not exist or cannot be read"
            ) from None
        if is_transient(error):
            raise TransientError(str(error)) from error
        raise
    if not found:
        raise ServiceError(
            ErrorCode.SOURCE_NOT_FOUND,
            f"Nothing at {source.uri(prefix)}: expected a 10x matrix directory",
        )


@dataclass
class PrepareJob:
    task: Task
    message: Message
    flow_run_id: str
    submitted: float = field(default_factory=time.monotonic)


class PrepareLauncher:
    """Starts ``prepare-experiment`` flow runs and finishes their messages when the runs end.

    Parameters
    ----------
    deployment
        The ``flow/deployment`` to run.
    topic_arn
        Where the flow run publishes its response.
    s3
        An S3 client that can list the source buckets.
    responses
        Publishes the response of a run that ended without one, and reads the runs' records.
    delete
        Deletes a message whose response is out.
    release
        Hands a message back to the queue after a delay (in seconds).
    done
        Tells the receiver a message is no longer in flight.
    record
        Records an event (``record(event, **fields)``).
    stopping
        Set when the service stops; ``poll_seconds``: how often the runs are looked at.
    """

    FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    def __init__(
        self,
        *,
        deployment: str,
        topic_arn: str,
        s3: Any,
        responses: Responses,
        delete: Callable[[Message], None],
        release: Callable[[Message, int], None],
        done: Callable[[Message], None],
        record: Callable[..., None],
        stopping: threading.Event,
        poll_seconds: float = 2.0,
    ) -> None:
        self.deployment = deployment
        self.topic_arn = topic_arn
        self.s3 = s3
        self.responses = responses
        self.delete = delete
        self.release = release
        self.done = done
        self.record = record
        self.stopping = stopping
        self.poll_seconds = poll_seconds
        self.watching: dict[str, PrepareJob] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="prepare-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, task: Task, message: Message) -> None:
        """Create (or find, on redelivery) the flow run for this message; the watcher finishes it."""
        from prefect.deployments import run_deployment

        prepare_parameters(task.body)  # ServiceError for a bad config, before any flow run
        check_source(self.s3, task)
        try:
            flow_run = run_deployment(
                self.deployment,
                parameters={
                    "request": task.request,
                    "response_id": message.id,
                    "topic_arn": self.topic_arn,
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
                    f"PrepareExperiment is not available: deployment {self.deployment!r} does not exist",
                ) from None
            raise TransientError(f"could not create the prepare-experiment flow run: {error}") from error
        job = PrepareJob(task=task, message=message, flow_run_id=str(flow_run.id))
        with self._lock:
            self.watching[message.id] = job
        self.record(
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

        while not self.stopping.wait(self.poll_seconds):
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
        record = self.responses.read_record(job.message.id)
        if record is None:
            # The run ended without answering (killed, crashed before its first line, ...).
            reason = state.message or state.name
            response = error_response(
                job.task.request,
                ErrorCode.PREPARE_FAILED,
                f"Preparing experiment {job.task.experiment_id!r} failed: flow run {job.flow_run_id} ended "
                f"{state.name} ({reason})",
            )
            sns_id = self.responses.publish(response)
            self.responses.write_record(job.message.id, response, sns_id)
            record = {"error": True, "errorCode": ErrorCode.PREPARE_FAILED, "snsMessageId": sns_id}
        self.record(
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
        self.delete(job.message)
        with self._lock:
            self.watching.pop(job.message.id, None)
        self.done(job.message)
        logger.info("PrepareExperiment %s finished: %s", job.task.experiment_id, state.name)

    def hand_back(self) -> None:
        """When the service stops: the runs go on without it, their messages go back to the queue
        so that the next instance watches them."""
        with self._lock:
            jobs = list(self.watching.values())
        for job in jobs:
            self.release(job.message, 0)
