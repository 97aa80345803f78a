"""The AWS Batch work pool: each flow run is one AWS Batch job (``prefect worker start --type aws-batch``).

``prefect_aws.batch.batch_submit`` fires a job and forgets it. This worker owns the job's life:

- submits ``batch.submit_job`` to the pool's job queue and job definition, with the flow run's
  command (``prefect flow-run execute`` unless the deployment sets one), its environment
  (``PREFECT__FLOW_RUN_ID``, ``PREFECT_API_URL``, the deployment's ``env``), vCPU/memory,
  retry strategy, attempt timeout, array size and the run's labels as tags;
- records the Batch job id as the run's infrastructure id (and as the label ``aws-batch.job-id``);
- watches ``describe_jobs`` until the job ends, logging every status change in the flow run's log
  and emitting an ``aws-batch.job.<status>`` event; the calls of all runs of the worker that
  poll on the same tick are merged into one request per 100 jobs;
- maps the job's end onto the flow run (see "States" below), with Batch's ``statusReason`` and
  exit code in the message;
- warns in the flow run's log when the job stays RUNNABLE longer than ``runnable_warning_seconds``
  (the compute environment cannot place it), and with ``runnable_timeout_seconds`` terminates it
  and reports the run crashed;
- terminates the job when its flow run is cancelled: at once while the job waits to start or runs
  a command of its own; after ``cancel_grace_seconds`` when it runs the Prefect engine, which
  stops the flow itself (``prefect flow-run execute``); the run then ends Cancelled. The worker
  reads its runs' states itself (merged into one request per tick): Prefect's own worker-side
  cancellation is off unless ``PREFECT_WORKER_ENABLE_CANCELLATION=true``, and with it on,
  ``kill_infrastructure`` terminates the job of a run that has not started in the same way.

States: when the command runs the Prefect engine (the default), the engine owns the flow run's
state and the worker only reports what the engine could not: a FAILED job, or a SUCCEEDED job
whose flow run never reached a final state, make the run Crashed. Any other command (for example
an array job whose children each take a share of the work through ``AWS_BATCH_JOB_ARRAY_INDEX``)
makes the job itself the run: SUCCEEDED becomes Completed and FAILED becomes Failed.

AWS is reached through the ``aws_credentials`` block (region, keys, and
``aws_client_parameters.endpoint_url`` for an emulator); without one, boto3's own configuration
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ...) applies.

Modules (split by role, as prefect-aws splits its ECS worker):

- :mod:`.configuration` — :class:`BatchVariables` (job variables) and :class:`BatchJobConfiguration`
  (checks and the ``submit_job`` request);
- :mod:`.watching` — shared ``describe_jobs`` calls and :class:`~.watching.JobWatch` (one job until
  it ends: status changes, cancellation, RUNNABLE warnings);
- :mod:`.worker` — :class:`BatchWorker`: submit, map the job's end onto the flow run, cancel.
"""

from interlinked.workers.batch.configuration import (
    BatchJobConfiguration,
    BatchVariables,
    batch_job_name,
    batch_tags,
    runs_prefect_engine,
)
from interlinked.workers.batch.watching import CANCEL_REASON, RUNNABLE_TIMEOUT_REASON, TERMINAL, WAITING
from interlinked.workers.batch.worker import WORKER_TYPE, BatchWorker, BatchWorkerResult

__all__ = [
    "CANCEL_REASON",
    "RUNNABLE_TIMEOUT_REASON",
    "TERMINAL",
    "WAITING",
    "WORKER_TYPE",
    "BatchJobConfiguration",
    "BatchVariables",
    "BatchWorker",
    "BatchWorkerResult",
    "batch_job_name",
    "batch_tags",
    "runs_prefect_engine",
]
