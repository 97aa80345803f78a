"""The ``aws-batch`` worker: submit a flow run as an AWS Batch job, map the job's end onto the run,
terminate it on cancellation (the package docstring tells the whole life of a job).

The job variables and the request live in :mod:`.configuration`; following the job in
:mod:`.watching`.
"""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.events import emit_event
from prefect.exceptions import Abort, InfrastructureNotFound
from prefect.states import Cancelled, Completed, Crashed, Failed
from prefect.utilities.asyncutils import run_sync_in_worker_thread
from prefect.utilities.engine import propose_state
from prefect.workers.base import BaseWorker, BaseWorkerResult

from blocks.clients import aws_client
from interlinked.workers.batch.configuration import (
    BatchJobConfiguration,
    BatchVariables,
    runs_prefect_engine,
)
from interlinked.workers.batch.watching import (
    CANCEL_REASON,
    TERMINAL,
    Coalesced,
    JobWatch,
    describe_jobs,
    flow_run_states,
)

WORKER_TYPE = "aws-batch"


class BatchWorkerResult(BaseWorkerResult):
    """How an AWS Batch job ended (identifier: the job id)."""


class BatchWorker(BaseWorker[BatchJobConfiguration, BatchVariables, BatchWorkerResult]):
    """Runs each flow run as an AWS Batch job and follows it to the end."""

    type = WORKER_TYPE
    job_configuration = BatchJobConfiguration
    job_configuration_variables = BatchVariables
    _description = (
        "Execute flow runs as AWS Batch jobs (EC2, Spot or Fargate compute environments): submit to a "
        "job queue with a job definition, follow the job's states, terminate it on cancellation."
    )
    _display_name = "AWS Batch"
    _documentation_url = "https://docs.aws.amazon.com/batch/latest/userguide/jobs.html"
    _logo_url = (
        "https://raw.githubusercontent.com/PrefectHQ/prefect/main/docs/images/logos/prefect-logo-mark.png"
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._describe = Coalesced(describe_jobs, chunk=100)
        self._states = Coalesced(flow_run_states, chunk=200)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: BatchJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None = None,
    ) -> BatchWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        configuration.check_submittable()
        client = await run_sync_in_worker_thread(_batch_client, configuration)
        request = configuration.submit_job_request()
        logger.info("Submitting flow run to AWS Batch: %s", configuration.describe_request())
        try:
            response = await run_sync_in_worker_thread(client.submit_job, **request)
        except Exception as error:
            raise RuntimeError(
                f"AWS Batch refused the job (queue {configuration.job_queue!r}, definition "
                f"{configuration.job_definition!r}): {error}"
            ) from error
        job_id = response["jobId"]
        logger.info("AWS Batch job %s (%s) submitted", job_id, response.get("jobArn", request["jobName"]))
        if task_status is not None:
            task_status.started(job_id)
        labelling = asyncio.get_running_loop().create_task(
            self._label(flow_run, {"aws-batch.job-id": job_id})
        )
        try:
            return await self._watch(flow_run, configuration, client, job_id)
        finally:
            await labelling

    async def _label(self, flow_run: FlowRun, labels: dict[str, str]) -> None:
        try:
            await self.client.update_flow_run_labels(flow_run.id, labels)
        except Exception as error:  # labels are a convenience; the infrastructure id is recorded
            self._logger.debug("could not label flow run %s: %s", flow_run.id, error)

    def _emit(self, flow_run: FlowRun, job_id: str, name: str, payload: dict[str, Any]) -> None:
        try:
            emit_event(
                event=f"aws-batch.job.{name}",
                resource={"prefect.resource.id": f"aws-batch.job.{job_id}", "prefect.resource.name": job_id},
                related=[
                    {
                        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                        "prefect.resource.role": "flow-run",
                        "prefect.resource.name": flow_run.name,
                    }
                ],
                payload=payload,
            )
        except Exception as error:
            self._logger.debug("could not emit aws-batch.job.%s: %s", name, error)

    async def _watch(
        self,
        flow_run: FlowRun,
        configuration: BatchJobConfiguration,
        client: Any,
        job_id: str,
    ) -> BatchWorkerResult:
        watch = JobWatch(
            job_id=job_id,
            client=client,
            configuration=configuration,
            describe=self._describe,
            cancel_requested=lambda: self._cancel_requested(flow_run),
            emit=lambda name, payload: self._emit(flow_run, job_id, name, payload),
            logger=self.get_flow_run_logger(flow_run),
        )
        end = await watch.run()
        if end.job is not None:
            return await self._finish(flow_run, configuration, end.job)
        await self._propose(flow_run, Crashed(message=end.crash))
        return BatchWorkerResult(identifier=job_id, status_code=-1)

    async def _cancel_requested(self, flow_run: FlowRun) -> bool:
        """Whether the run was cancelled (CANCELLING, or CANCELLED by someone else) in Prefect."""
        try:
            state = await self._states(self.client, str(flow_run.id))
        except Exception as error:
            self._logger.debug("could not read the state of flow run %s: %s", flow_run.id, error)
            return False
        return state is not None and (state.is_cancelling() or state.is_cancelled())

    async def _finish(
        self, flow_run: FlowRun, configuration: BatchJobConfiguration, job: dict[str, Any]
    ) -> BatchWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        job_id = job["jobId"]
        status = job["status"]
        container = job.get("container") or {}
        exit_code = container.get("exitCode")
        if container.get("logStreamName"):
            logger.info("AWS Batch job %s container log stream: %s", job_id, container["logStreamName"])
        summary = (job.get("arrayProperties") or {}).get("statusSummary")
        summary_text = (
            ", ".join(f"{count} {name}" for name, count in sorted(summary.items()) if count)
            if summary
            else ""
        )
        engine_owns_state = runs_prefect_engine(configuration.command)
        reason = job.get("statusReason")
        current = await self._flow_run_state(flow_run)
        if current is not None and (current.is_cancelling() or current.is_cancelled()):
            message = f"Flow run cancelled; AWS Batch job {job_id} ended {status}" + (
                f": {reason}" if reason else ""
            )
            logger.info(message)
            if current.is_cancelling():
                await self._propose(flow_run, Cancelled(message=message))
            return BatchWorkerResult(identifier=job_id, status_code=0)
        settled = current is not None and current.is_final()

        if status == "SUCCEEDED":
            if not settled:
                if engine_owns_state:
                    message = (
                        f"AWS Batch job {job_id} SUCCEEDED, but the flow run never reported a final state "
                        f"(still {current.name if current else 'unknown'}): the job's command "
                        f"({shlex.join(configuration.command_args)}) did not run it"
                    )
                    logger.error(message)
                    await self._propose(flow_run, Crashed(message=message))
                else:
                    size = (job.get("arrayProperties") or {}).get("size")
                    message = f"AWS Batch job {job_id} SUCCEEDED" + (
                        f" ({size} array children: {summary_text})" if size else ""
                    )
                    await self._propose(flow_run, Completed(message=message))
            return BatchWorkerResult(identifier=job_id, status_code=0)

        message = f"AWS Batch job {job_id} FAILED: {reason or 'no status reason given'}"
        if exit_code is not None:
            message += f" (exit code {exit_code})"
        if summary_text:
            message += f"; array children: {summary_text}"
        if settled:
            logger.info(message)
        else:
            logger.error(message)
            await self._propose(
                flow_run, Crashed(message=message) if engine_owns_state else Failed(message=message)
            )
        # The container's exit code (the base worker explains known ones, e.g. 137: out of memory);
        # -1 when Batch reports none (the container never ran).
        return BatchWorkerResult(identifier=job_id, status_code=exit_code if exit_code else -1)

    async def _flow_run_state(self, flow_run: FlowRun):
        try:
            return (await self.client.read_flow_run(flow_run.id)).state
        except Exception as error:
            self._logger.warning("could not read flow run %s: %s", flow_run.id, error)
            return None

    async def _propose(self, flow_run: FlowRun, state) -> None:
        try:
            await propose_state(self.client, state, flow_run_id=flow_run.id)
        except Abort:
            pass  # the run reached a final state meanwhile; it keeps it
        except Exception:
            self.get_flow_run_logger(flow_run).exception(
                "Could not set the flow run's state to %s", state.type.value
            )

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: BatchJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """Terminate the run's Batch job (Batch stops a running container with SIGTERM, then SIGKILL)."""
        job_id = infrastructure_pid
        client = await run_sync_in_worker_thread(_batch_client, configuration)
        response = await run_sync_in_worker_thread(client.describe_jobs, jobs=[job_id])
        jobs = response.get("jobs", [])
        if not jobs:
            raise InfrastructureNotFound(f"AWS Batch job {job_id} not found")
        status = jobs[0]["status"]
        if status in TERMINAL:
            raise InfrastructureNotFound(f"AWS Batch job {job_id} already {status}")
        await run_sync_in_worker_thread(client.terminate_job, jobId=job_id, reason=CANCEL_REASON)
        self._logger.info("Terminated AWS Batch job %s (was %s)", job_id, status)


def _batch_client(configuration: BatchJobConfiguration) -> Any:
    """The Batch client of the pool's credentials block (the one client factory, cached)."""
    return aws_client("batch", credentials=configuration.aws_credentials)
