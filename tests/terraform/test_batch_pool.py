"""The aws-batch work pool end to end: flow runs on the session's Prefect server, a real
`prefect worker start --type aws-batch`, and the job queue / job definition that Terraform created
in moto (examples/local).

moto's Batch runs no container here, so these tests check what the worker submits and how it
reacts. Two switches of the moto server (its documented /moto-api endpoints) choose how a job
behaves:

- ``{"batch": {"use_docker": false}}``: a submitted job is SUCCEEDED at once;
- otherwise the job goes through moto's state machine and, as moto cannot start its container
  without a Docker engine, ends FAILED. With the ``batch::job`` transition set to
  ``{"progression": "time", "seconds": N}`` each state lasts N seconds; a large N keeps the job
  waiting (SUBMITTED, or RUNNABLE when switched there), as a job that no compute can place does.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid

import pytest
from prefect.client.schemas.objects import StateType
from prefect.exceptions import InfrastructureNotFound
from prefect.states import Cancelling
from prefect_aws import AwsCredentials

from interlinked.workers.batch import (
    CANCEL_REASON,
    RUNNABLE_TIMEOUT_REASON,
    BatchJobConfiguration,
    BatchWorker,
)

pytestmark = [pytest.mark.terraform, pytest.mark.integration]


class MotoBatch:
    """The moto server's Batch behaviour switches and its Batch API."""

    def __init__(self, tf):
        self.endpoint = tf.endpoint_url
        self.batch = tf.client("batch")

    def _post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def jobs_succeed_at_once(self, value: bool) -> None:
        self._post("config", {"batch": {"use_docker": not value}})

    def each_state_lasts(self, seconds: float | None) -> None:
        if seconds is None:
            self._post("state-manager/unset-transition", {"model_name": "batch::job"})
        else:
            self._post(
                "state-manager/set-transition",
                {"model_name": "batch::job", "transition": {"progression": "time", "seconds": seconds}},
            )

    def job(self, job_id: str) -> dict:
        jobs = self.batch.describe_jobs(jobs=[job_id])["jobs"]
        assert jobs, f"moto does not know job {job_id}"
        return jobs[0]

    def wait_for_status(self, job_id: str, statuses: set[str], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job['status']}, not {statuses}, after {timeout} s")
            time.sleep(0.1)


def environment(job: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in job["container"]["environment"]}


@pytest.fixture(scope="module")
def batch_pool(pool_harness, terraform_local_stack):
    tf = terraform_local_stack
    name = f"test-batch-{uuid.uuid4().hex[:8]}"
    pool_harness.create_pool(
        name,
        "aws-batch",
        {
            # What README's `terraform output` → `prefect work-pool create` steps put there.
            **tf.outputs["batch_work_pool_job_variables"],
            "aws_credentials": pool_harness.credentials_ref,
            "poll_interval_seconds": 0.5,
        },
    )
    deployment_id = pool_harness.create_deployment(name, "batch-pool-test")
    pool_harness.start_worker(name, "aws-batch")
    return deployment_id


@pytest.fixture
def moto(terraform_local_stack):
    control = MotoBatch(terraform_local_stack)
    yield control
    control.each_state_lasts(None)
    control.jobs_succeed_at_once(False)


def test_flow_run_becomes_a_job_on_the_terraform_queue_with_its_overrides(
    batch_pool, pool_harness, terraform_local_stack, moto, stack
):
    outputs = terraform_local_stack.outputs
    moto.jobs_succeed_at_once(True)
    flow_run = pool_harness.run(
        batch_pool,
        job_variables={
            "vcpu": 2,
            "memory": 4096,
            "timeout_seconds": 900,
            "retry_strategy": {"attempts": 2},
            "env": {"INTERLINKED_MARK": "batch-pool-test"},
        },
    )
    final = pool_harness.wait_for(flow_run.id, lambda r: r.state.is_final(), "a final state")

    job_id = final.infrastructure_pid
    assert job_id, "the Batch job id is the run's infrastructure id"
    labelled = pool_harness.wait_for(
        flow_run.id, lambda r: r.labels.get("aws-batch.job-id"), "the aws-batch.job-id label", timeout=20
    )
    assert labelled.labels["aws-batch.job-id"] == job_id
    job = moto.job(job_id)
    assert job["jobQueue"] == outputs["batch_job_queue_arn"]
    assert job["jobDefinition"] == outputs["batch_job_definition_arn"]
    assert job["jobName"] == flow_run.name
    assert job["container"]["command"] == ["prefect", "flow-run", "execute"]
    env = environment(job)
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert env["PREFECT_API_URL"] == stack["prefect_api_url"]
    assert env["INTERLINKED_MARK"] == "batch-pool-test"
    assert "PREFECT_HOME" not in env, "the worker's own Prefect home must not leak into the job"
    # The job definition's own environment (Terraform) is still there underneath.
    assert env["AWS_REGION"] == "us-east-1"
    assert job["timeout"] == {"attemptDurationSeconds": 900}
    assert job["tags"]["prefect.io/flow-run-id"] == str(flow_run.id)
    assert job["status"] == "SUCCEEDED"

    # moto ran no container, so the flow never reported a state: the worker says so.
    assert final.state.type == StateType.CRASHED
    assert f"AWS Batch job {job_id} SUCCEEDED" in final.state.message
    assert "never reported a final state" in final.state.message
    # moto does not echo resourceRequirements or retryStrategy; the run's log records them.
    submitted = pool_harness.wait_for_log(flow_run.id, "Submitting flow run to AWS Batch")
    assert f"queue {outputs['batch_job_queue_arn']}" in submitted
    assert f"definition {outputs['batch_job_definition_name']}" in submitted
    assert "vCPU 2, memory 4096 MiB, attempt timeout 900 s" in submitted
    assert 'retry strategy {"attempts": 2}' in submitted
    pool_harness.wait_for_log(flow_run.id, f"AWS Batch job {job_id} is SUCCEEDED")


def test_array_job_with_its_own_command_is_the_run(batch_pool, pool_harness, moto):
    moto.jobs_succeed_at_once(True)
    flow_run = pool_harness.run(
        batch_pool, job_variables={"command": "python -m interlinked.drain --share", "array_size": 3}
    )
    final = pool_harness.wait_for(flow_run.id, lambda r: r.state.is_final(), "a final state")

    job = moto.job(final.infrastructure_pid)
    assert job["arrayProperties"]["size"] == 3
    children = moto.batch.list_jobs(arrayJobId=final.infrastructure_pid)["jobSummaryList"]
    assert len(children) == 3
    assert final.state.type == StateType.COMPLETED, final.state.message
    assert "3 array children: 3 SUCCEEDED" in final.state.message


def test_a_failed_job_ends_the_run_with_batchs_reason(batch_pool, pool_harness, moto):
    # moto without a Docker engine fails every job it would have to start a container for.
    engine_run = pool_harness.run(batch_pool)
    own_command_run = pool_harness.run(batch_pool, job_variables={"command": "bash -c 'exit 3'"})

    engine = pool_harness.wait_for(engine_run.id, lambda r: r.state.is_final(), "a final state")
    assert moto.job(engine.infrastructure_pid)["status"] == "FAILED"
    assert engine.state.type == StateType.CRASHED, "the engine never ran: the infrastructure failed"
    assert engine.state.message.startswith(f"AWS Batch job {engine.infrastructure_pid} FAILED: ")

    own = pool_harness.wait_for(own_command_run.id, lambda r: r.state.is_final(), "a final state")
    assert own.state.type == StateType.FAILED, "the job is the run when it runs its own command"
    assert f"AWS Batch job {own.infrastructure_pid} FAILED" in own.state.message


def test_a_job_stuck_runnable_is_reported_then_terminated(batch_pool, pool_harness, moto):
    moto.each_state_lasts(2)
    flow_run = pool_harness.run(
        batch_pool, job_variables={"runnable_warning_seconds": 1, "runnable_timeout_seconds": 3}
    )
    submitted = pool_harness.wait_for(flow_run.id, lambda r: r.infrastructure_pid, "a Batch job id")
    job_id = submitted.infrastructure_pid
    moto.wait_for_status(job_id, {"RUNNABLE"}, timeout=20)
    moto.each_state_lasts(3600)  # nothing places it any more

    final = pool_harness.wait_for(flow_run.id, lambda r: r.state.is_final(), "a final state", timeout=30)
    assert final.state.type == StateType.CRASHED
    assert f"AWS Batch job {job_id} stayed RUNNABLE for" in final.state.message
    warning = pool_harness.wait_for_log(flow_run.id, f"AWS Batch job {job_id} has been RUNNABLE for")
    assert "compute environment cannot place it" in warning
    assert moto.job(job_id)["statusReason"] == RUNNABLE_TIMEOUT_REASON

    moto.each_state_lasts(None)
    assert moto.wait_for_status(job_id, {"SUCCEEDED", "FAILED"})["status"] == "FAILED"


def test_cancelling_a_waiting_run_terminates_its_job(batch_pool, pool_harness, moto):
    moto.each_state_lasts(3600)  # the job waits in SUBMITTED
    flow_run = pool_harness.run(batch_pool)
    submitted = pool_harness.wait_for(flow_run.id, lambda r: r.infrastructure_pid, "a Batch job id")
    job_id = submitted.infrastructure_pid
    assert moto.job(job_id)["status"] == "SUBMITTED"

    with pool_harness.client() as client:
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
    deadline = time.monotonic() + 20
    while moto.job(job_id).get("statusReason") != CANCEL_REASON:
        assert time.monotonic() < deadline, f"job {job_id} was not terminated\n{pool_harness.worker_log()}"
        time.sleep(0.2)
    # AWS fails a terminated job at once; moto's waits for its state machine to move on.
    moto.each_state_lasts(None)
    assert moto.wait_for_status(job_id, {"SUCCEEDED", "FAILED"})["status"] == "FAILED"

    final = pool_harness.wait_for(
        flow_run.id, lambda r: r.state.type == StateType.CANCELLED, "CANCELLED", timeout=30
    )
    assert f"AWS Batch job {job_id} ended FAILED: {CANCEL_REASON}" in final.state.message
    pool_harness.wait_for_log(
        flow_run.id, f"Flow run cancelled: terminated AWS Batch job {job_id} (was SUBMITTED)"
    )


def test_kill_infrastructure_terminates_only_a_live_job(terraform_local_stack, pool_harness, moto):
    """Prefect's own worker-side cancellation (PREFECT_WORKER_ENABLE_CANCELLATION=true) calls this."""
    outputs = terraform_local_stack.outputs
    moto.each_state_lasts(3600)
    job_id = moto.batch.submit_job(
        jobName="kill-me",
        jobQueue=outputs["batch_job_queue_arn"],
        jobDefinition=outputs["batch_job_definition_name"],
    )["jobId"]
    worker = BatchWorker(work_pool_name="unused")
    configuration = BatchJobConfiguration(
        aws_credentials=AwsCredentials.load(pool_harness.credentials_block_name),
        job_queue=outputs["batch_job_queue_arn"],
        job_definition=outputs["batch_job_definition_name"],
    )

    asyncio.run(worker.kill_infrastructure(job_id, configuration))
    assert moto.job(job_id)["statusReason"] == CANCEL_REASON

    moto.each_state_lasts(None)
    moto.wait_for_status(job_id, {"FAILED"})
    with pytest.raises(InfrastructureNotFound, match="already FAILED"):
        asyncio.run(worker.kill_infrastructure(job_id, configuration))
    with pytest.raises(InfrastructureNotFound, match="not found"):
        asyncio.run(worker.kill_infrastructure(str(uuid.uuid4()), configuration))
