"""The analysis service loop: receive, answer (with its caches), publish, acknowledge.

:class:`AnalysisService` owns the AWS clients, the in-flight messages and the caches; it hands the
:class:`~flows.analysis.service.recorder.Recorder` and the
:class:`~flows.analysis.service.prepare_launcher.PrepareLauncher` only the callables they need.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import blocks
from blocks.clients import aws_client
from blocks.queues import queue_redrive
from blocks.s3 import ObjectStore, data_store
from flows.analysis.experiments import ExperimentStore, LoadedExperiment, TransientError
from flows.analysis.protocol import (
    DOWNLOAD_PROCESSED,
    PREPARE_EXPERIMENT,
    RESULT_CONTENT_TYPE,
    ErrorCode,
    ServiceError,
    Task,
    UnparseableMessage,
    cache_key,
    current_response,
    decode_message,
    encode,
    error_response,
    experiment_key,
    file_response,
    fits_sns,
    offloaded_response,
    page_key,
    parse_task,
    s3_path_of,
    work_response,
)
from flows.analysis.service.journal import Journal
from flows.analysis.service.messages import MemoryResults, Message, SingleFlight
from flows.analysis.service.prepare_launcher import PrepareLauncher
from flows.analysis.service.recorder import Recorder
from flows.analysis.service.responses import Responses
from flows.analysis.service.settings import ServiceSettings
from flows.analysis.tasks import present, run_task

logger = logging.getLogger("interlinked.analysis.service")

# Set by signal handlers (SIGTERM/SIGINT) of `main()`; the service then stops gracefully.
STOP = threading.Event()


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
            self.store,
            max_experiments=settings.max_experiments,
            max_bytes=settings.max_experiment_bytes or _half_of_memory(),
            refresh_seconds=settings.refresh_seconds,
            on_loaded=self._experiment_loaded,
        )
        self.journal = Journal(settings.journal_path())
        self.results = MemoryResults(settings.result_memory_bytes)
        self.single_flight = SingleFlight()
        self.compute_estimates: dict[tuple[str, str], float] = {}
        # Cache keys known to be in S3 (large results are offloaded there before they are named).
        self._persisted: set[str] = set()
        self.recorder = Recorder(
            settings,
            flow_run=flow_run,
            gauges=self._gauges,
            ready=lambda: self.ready,
            identity={"queue_url": self.queue_url, "topic_arn": self.topic_arn, "bucket": self.bucket},
        )
        self.prepares = PrepareLauncher(
            deployment=settings.prepare_deployment,
            topic_arn=self.topic_arn,
            s3=self.store.client,
            responses=self.responses,
            delete=self.delete,
            release=self.release,
            done=self._done,
            record=self.recorder.record,
            stopping=self.stopping,
            poll_seconds=settings.prepare_poll_seconds,
        )
        self.workers = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="request")
        # Import the science stack now, not in the first request (scanpy takes seconds to import).
        import analyses  # noqa: F401

        self.background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ack")

    # -- AWS ----------------------------------------------------------------------------------------
    def _connect(self) -> None:
        settings = self.settings
        # Long polls must not time out the connection; every worker and the background may hold one.
        config = Config(
            max_pool_connections=settings.workers + 8, read_timeout=max(30, settings.poll_seconds + 10)
        )
        self.sqs = aws_client("sqs", config=config)
        self.queue_url = settings.queue_url or blocks.SqsQueue.load(blocks.WORK_QUEUE).queue_url
        self.topic_arn = settings.topic_arn or blocks.SnsTopic.load(blocks.WORK_RESULTS_TOPIC).topic_arn
        self.bucket = settings.data_bucket or data_store().bucket
        self.results_bucket = settings.results_bucket or self.bucket
        self.store = ObjectStore(self.bucket, aws_client("s3", config=config))
        self.responses = Responses(aws_client("sns", config=config), self.topic_arn, self.store)
        redrive = queue_redrive(self.sqs, self.queue_url)
        self.max_receive_count = settings.max_receive_count or redrive.max_receive_count
        self.dead_letter_queue_url = redrive.dead_letter_queue_url

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
        self.prepares.hand_back()
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
        if message.receive_count > 1 and (
            message.id in self.journal or self.responses.record_exists(message.id)
        ):
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

        if message.receive_count > 1 and self.responses.record_exists(message.id):
            # Redelivered while this instance computed (its visibility lapsed) and answered by another.
            logger.info("message %s was answered by another instance meanwhile; deleting it", message.id)
            self.delete(message)
            self.recorder.record(
                "duplicate",
                messageId=message.id,
                uuid=request.get("uuid"),
                receiveCount=message.receive_count,
            )
            return False
        try:
            sns_id = self.responses.publish(response, message_text)
        except (ClientError, BotoCoreError) as error:
            logger.warning(
                "could not publish the response to message %s: %s; it will be redelivered", message.id, error
            )
            self.release(message, min(30, 2**message.receive_count))
            return False
        service_ms = (time.perf_counter() - started) * 1000
        self.journal.add(message.id)
        self._fault("publish")
        self.background.submit(self._acknowledge, message, response, sns_id)
        details = response["response"]
        self.recorder.record(
            "failed" if details["error"] else "answered",
            uuid=request.get("uuid") or request.get("ETag"),
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
            resultKey=_offloaded_key(response),
            snsMessageId=sns_id,
        )
        return False

    def answer(self, task: Task) -> tuple[dict[str, Any], str, str, float | None]:
        """An interactive task's WorkResponse, its encoded message, where the result came from
        (``memory``, ``s3``, ``computed`` or ``shared`` with a concurrent identical request) and
        the compute time in ms."""
        if task.name == DOWNLOAD_PROCESSED:
            return self._answer_download(task)
        if task.current_envelope and task.cacheable:
            stored = self._stored_under_etag(task)
            if stored is not None:  # the real API's cache lookup: no computation
                return stored, encode(stored), "s3-etag", None
        experiment = self.experiments.get(task.experiment_id)
        key = cache_key(
            experiment_id=task.experiment_id,
            version=experiment.version,
            body=task.body,
            analysis_version=_analysis_version(),
        )
        cacheable = task.cacheable
        body = self.results.get(key) if cacheable else None
        source = "memory"
        compute_ms = None
        if body is None and cacheable and self._worth_s3_lookup(task):
            body = self._s3_cached(key)
            source = "s3"
            if body is not None:
                self.results.put(key, body)
                self._persisted.add(key)
        if body is None:

            def compute() -> str:
                began = time.perf_counter()
                value = run_task(task, experiment)
                text = value if task.content_type != RESULT_CONTENT_TYPE else encode(value)
                self._learn(task, time.perf_counter() - began)
                if cacheable:
                    self.results.put(key, text)
                return text

            began = time.perf_counter()
            body, computed_here = self.single_flight.do(key, compute)
            compute_ms = (time.perf_counter() - began) * 1000
            source = "computed" if computed_here else "shared"
        # The whole result is cached; each page, in the shape its client reads, is cut from it (as
        # the real API did for the SNS-era worker).
        shown, shown_key = present(task, body), key
        if shown is not body:
            current = {"current": True} if task.current_envelope else {}  # the current shape
            shown_key = page_key(key, {**(task.pagination or {}), **current})
        if task.current_envelope:
            response = self._store_under_etag(task, shown) if cacheable else None
            if response is None:
                response = current_response(
                    task.request, bucket=None, key=None, signed_url=task.request.get("signedUrl"),
                    body=shown, cacheable=False, content_type=task.content_type,
                )  # fmt: skip
            message = encode(response)
            if fits_sns(message):
                return response, message, source, compute_ms
        response = work_response(task.request, shown, cacheable=cacheable, content_type=task.content_type)
        message = encode(response)
        if not fits_sns(message):
            if shown_key not in self._persisted:
                self._store_s3(shown_key, shown)  # the response points at it: it must exist first
                self._remember_persisted(shown_key)
            response = offloaded_response(
                task.request, bucket=self.bucket, key=shown_key, cacheable=cacheable
            )
            message = encode(response)
        elif (
            cacheable
            and source == "computed"
            and compute_ms >= self.settings.s3_cache_min_compute_seconds * 1000
        ):
            self.background.submit(self._store_s3_quietly, key, body)
        return response, message, source, compute_ms

    def _answer_download(self, task: Task) -> tuple[dict[str, Any], str, str, None]:
        """DownloadAnnotSeuratObject, the real UI's "download the processed matrix": the processed
        ``.h5ad`` itself (its cell sets are its categorical ``.obs`` columns, its embeddings its
        ``.obsm``), never read or rewritten here. SNS-era envelope: an ``s3-path`` item naming the
        experiment's file. Current envelope: a server-side copy under the ETag in the results
        bucket (tagged as every result; the real worker uploads its ``.rds`` there the same way,
        uncompressed) and its ``signedUrl``."""
        self.experiments.get(task.experiment_id)  # EXPERIMENT_NOT_FOUND / INVALID_EXPERIMENT as usual
        source = experiment_key(task.experiment_id)
        if not task.current_envelope:
            response = file_response(task.request, bucket=self.bucket, key=source)
            return response, encode(response), "stored", None
        key = self._etag_key(task)
        self.store.client.copy_object(
            Bucket=self.results_bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": source},
            MetadataDirective="REPLACE",
            ContentType=task.content_type,
            TaggingDirective="REPLACE",
            Tagging=urlencode({"experimentId": task.experiment_id, "requestType": task.name}),
        )
        response = file_response(
            task.request, bucket=self.results_bucket, key=key, signed_url=self._signed_url(key)
        )
        return response, encode(response), "copied", None

    # -- the current envelope (ETag) ----------------------------------------------------------------
    def _etag_key(self, task: Task) -> str:
        return f"{self.settings.results_prefix}{task.request['ETag']}"

    def _signed_url(self, key: str) -> str:
        return self.store.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.results_bucket, "Key": key},
            ExpiresIn=self.settings.signed_url_seconds,
        )

    def _stored_under_etag(self, task: Task) -> dict[str, Any] | None:
        """The response for a result already stored under the request's ETag (tagged with the same
        experiment, as the real API checks), else None."""
        key = self._etag_key(task)
        try:
            tags = self.store.client.get_object_tagging(Bucket=self.results_bucket, Key=key)["TagSet"]
        except ClientError:
            return None  # not there (or not readable): compute it
        if {tag["Key"]: tag["Value"] for tag in tags}.get("experimentId") != task.experiment_id:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"ETag {task.request['ETag']!r} names a result of another experiment",
            )
        return current_response(
            task.request, bucket=self.results_bucket, key=key, signed_url=self._signed_url(key)
        )

    def _store_under_etag(self, task: Task, body: str) -> dict[str, Any]:
        """Upload the result gzip-compressed under the ETag (S3 tags ``experimentId``,
        ``requestType``: the real worker's ``Response._upload``) and answer with its signed URL."""
        key = self._etag_key(task)
        self.store.client.put_object(
            Bucket=self.results_bucket,
            Key=key,
            Body=gzip.compress(body.encode(), compresslevel=5),
            # Plain gzip bytes, no Content-Encoding header, as the real worker uploads them: the UI
            # downloads and decompresses itself (a header would make browsers decompress first).
            Tagging=urlencode({"experimentId": task.experiment_id, "requestType": task.name}),
        )
        return current_response(
            task.request,
            bucket=self.results_bucket,
            key=key,
            signed_url=self._signed_url(key),
            content_type=task.content_type,
        )

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
            return self.store.read_text(key, None)
        except (ClientError, BotoCoreError) as error:
            logger.warning("result cache read %s failed: %s", key, error)
            return None

    def _remember_persisted(self, key: str) -> None:
        if len(self._persisted) > 100_000:
            self._persisted.clear()
        self._persisted.add(key)

    def _store_s3(self, key: str, text: str) -> None:
        self.store.put(key, text, content_type="application/json")

    def _store_s3_quietly(self, key: str, text: str) -> None:
        try:
            self._store_s3(key, text)
        except Exception as error:
            logger.warning("result cache write %s failed: %s", key, error)

    # -- messages ---------------------------------------------------------------------------------------
    def _acknowledge(self, message: Message, response: dict[str, Any], sns_id: str) -> None:
        """After publishing (and journaling locally): write the response record, the journal every
        instance shares, then delete the message. A redelivery (this instance died before the
        delete, or the delete failed) is then recognised by whichever instance receives it.

        The record is a conditional write: if one exists, another instance answered this delivery
        first, and this answer was a second one; that is logged and recorded, never silent."""
        try:
            if not self.responses.write_record(message.id, response, sns_id):
                logger.warning("message %s had already been answered by another instance", message.id)
                self.recorder.record(
                    "answered-twice",
                    messageId=message.id,
                    uuid=response["request"].get("uuid"),
                    receiveCount=message.receive_count,
                )
        except Exception as error:
            logger.warning(
                "could not record the response to message %s (%s); deleting it all the same",
                message.id,
                error,
            )
        self._fault("record")
        try:
            self.delete(message)
        except Exception as error:
            logger.warning("could not delete answered message %s (%s)", message.id, error)

    def _fault(self, step: str) -> None:
        """Fault injection for tests (``fault_after``): die like a crash right after ``step``."""
        if self.settings.fault_after == step:
            logger.error("fault injection: killing the service after %s", step)
            os.kill(os.getpid(), signal.SIGKILL)

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

    def _gauges(self) -> dict[str, Any]:
        """What the recorder's snapshot shows of the service's state."""
        entries, size = self.results.size
        return {
            "resultCache": {"entries": entries, "bytes": size},
            "experiments": [entry.describe() for entry in self.experiments.cached()],
            "inFlight": len(self.in_flight),
            "prepareRuns": len(self.prepares.watching),
        }

    def _ui_log(self, line: str) -> None:
        if self.flow_run is None:
            return
        with contextlib.suppress(Exception):
            from prefect.logging.loggers import flow_run_logger

            flow_run_logger(self.flow_run).warning(line)


def _offloaded_key(response: dict[str, Any]) -> str | None:
    """The S3 key of an offloaded result (an ``s3-path`` item), for the service's records."""
    for item in response.get("results") or []:
        where = s3_path_of(item)
        if where is not None:
            return where[1]
    return None


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
