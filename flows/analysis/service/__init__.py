"""The analysis service (seed 001): a warm, long-running worker answering single-cell tasks.

``python -m flows.analysis.service`` (what ``interlinked up`` starts), or the ``analysis-service``
flow deployed on ECS: long-polls the FIFO work queue, answers every task with exactly one
WorkResponse on the ``work_results`` topic, and records every request in Prefect.

Request path (no Prefect API round trip, no synchronous S3 call for a warm experiment)::

    receive ─ parse/validate ─ experiment (memory, ETag-refreshed in the background)
      ─ result: memory cache │ S3 cache (only where computing costs more than a GET) │ compute
      ─ publish to SNS ─ journal the message id ─► background: delete the message;
                                                  recorder thread: Prefect events, statistics

- **Exactly one response, with any number of instances.** A message is deleted only after its
  response is published and recorded. Right after the publish its id goes into a local journal
  (one ``write(2)``), then (in the background, before the delete) into a response record in S3
  (``analysis-responses/{MessageId}.json``, a conditional write, ``If-None-Match: *``): the journal
  every instance shares, also written by the ``prepare-experiment`` flow. A redelivered message
  (``ApproximateReceiveCount > 1``) found in either is deleted without a second response, and a
  redelivery is checked again just before its publish (another instance may have answered while
  this one computed); any other redelivery (the service died mid-request) is answered normally.
  What remains is a crash between the SNS publish returning and the record write (milliseconds):
  a standard SNS topic cannot deduplicate that; a second answer that does happen is found by the
  conditional write, logged and recorded (``answered-twice``). ``fault_after`` kills the process
  at those points for the fault tests.
- **Errors are responses** with stable ``errorCode``s (see ``flows.analysis.protocol.ErrorCode``).
  Transient AWS failures release the message for a retry instead, and get a
  ``SERVICE_UNAVAILABLE`` response on the queue's last allowed receive. A message that is not a
  task at all is released until that last receive, then moved to the dead-letter queue with the
  reason in its message attributes.
- **Result cache.** Content-addressed (experiment ETag + body + analysis version): an in-memory
  LRU for everything, and S3 (``analysis-cache/{experimentId}/{sha256}.json``) for results whose
  computation took longer than ``s3_cache_min_compute_seconds`` (a GET costs ~3 ms; re-reading a
  gene list from S3 would be slower than computing it). Results too large for SNS are always
  stored there and the response's result item is ``{"type": "s3-path", "body": "bucket/key"}``
  (the real Cellenics worker's form). ``ClusterCells`` results are not cached (``cacheable:
  false``, as the real worker), and ``pagination`` pages are cut from the cached whole result.
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
``blocks.status.service_ready(PATH)`` is the check.

The package, by role (each module imports only those above it):

- :mod:`.settings` — :class:`ServiceSettings` (``INTERLINKED_ANALYSIS_*``);
- :mod:`.messages` — :class:`Message`, :class:`SingleFlight`, :class:`MemoryResults`;
- :mod:`.journal` — :class:`Journal`, the ids of the messages answered here;
- :mod:`.responses` — :class:`Responses`: publishing WorkResponses, the response records;
- :mod:`.recorder` — :class:`Recorder`: Prefect events, statistics, status file, summary;
- :mod:`.prepare_launcher` — :class:`PrepareLauncher`: ``prepare-experiment`` flow runs;
- :mod:`.service` — :class:`AnalysisService`: the receive loop, answering, the caches;
- :mod:`.flow` — the ``analysis-service`` flow and :func:`main` (``__main__``).
"""

from flows.analysis.service.flow import FLOW_NAME, analysis_service, main
from flows.analysis.service.journal import Journal
from flows.analysis.service.messages import MemoryResults, Message, SingleFlight
from flows.analysis.service.prepare_launcher import PrepareJob, PrepareLauncher
from flows.analysis.service.recorder import BATCH_EVENT, EVENT_PREFIX, SUMMARY_ARTIFACT_KEY, Recorder
from flows.analysis.service.responses import Responses
from flows.analysis.service.service import STOP, AnalysisService
from flows.analysis.service.settings import ServiceSettings

__all__ = [
    "BATCH_EVENT",
    "EVENT_PREFIX",
    "FLOW_NAME",
    "STOP",
    "SUMMARY_ARTIFACT_KEY",
    "AnalysisService",
    "Journal",
    "MemoryResults",
    "Message",
    "PrepareJob",
    "PrepareLauncher",
    "Recorder",
    "Responses",
    "ServiceSettings",
    "SingleFlight",
    "analysis_service",
    "main",
]
