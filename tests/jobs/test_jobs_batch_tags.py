"""A large job's dispatch as AWS Batch sees it, on a moto server of its own: the job variables the
triage chose, rendered by the ``aws-batch`` pool's template and the worker's request builder, are
submitted with ``batch.submit_job``; ``describe_jobs`` then shows the cost-allocation tags and the
(escalated) memory. No Prefect server: the flow run is a stand-in, the submission is real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from prefect.client.schemas.objects import FlowRun

from flows.jobs.client import JobService
from flows.jobs.policy import JobPolicy
from flows.jobs.store import MemoryJobStore
from flows.jobs.types import JobTypes
from interlinked.workers.batch import BatchJobConfiguration, BatchWorker
from tests.unit.test_batch_worker import _NoClient
from tests.unit.test_jobs_machine import FakeDispatcher


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def batch():
    moto_server = Path(sys.executable).with_name("moto_server")
    port = _free_port()
    process = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        request = urllib.request.Request(  # a submitted job succeeds at once (no Docker here)
            f"{url}/moto-api/config",
            data=json.dumps({"batch": {"use_docker": False}}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        options = dict(
            endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        role = boto3.client("iam", **options).create_role(RoleName="batch", AssumeRolePolicyDocument="{}")
        client = boto3.client("batch", **options)
        environment = client.create_compute_environment(
            computeEnvironmentName="jobs-test", type="UNMANAGED", serviceRole=role["Role"]["Arn"]
        )
        client.create_job_queue(
            jobQueueName="jobs-test",
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[
                {"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}
            ],
        )
        client.register_job_definition(
            jobDefinitionName="jobs-test",
            type="container",
            containerProperties={"image": "interlinked", "vcpus": 1, "memory": 512, "command": ["true"]},
        )
        yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def _submit(client, job_variables: dict) -> tuple[dict, dict]:
    """(the worker's submit_job request, the job as moto describes it)."""
    configuration = asyncio.run(
        BatchJobConfiguration.from_template_and_values(
            BatchWorker.get_default_base_job_template(),
            {"job_queue": "jobs-test", "job_definition": "jobs-test", **job_variables},
            client=_NoClient(),
        )
    )
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="amber-fox", flow_id=uuid.uuid4()))
    request = configuration.submit_job_request()
    submitted = client.submit_job(**request)
    return request, client.describe_jobs(jobs=[submitted["jobId"]])["jobs"][0]


def test_a_large_job_reaches_batch_with_its_cost_tags_and_escalated_memory(batch):
    service = JobService(
        MemoryJobStore(),
        dispatcher=FakeDispatcher(),
        job_types=JobTypes({"script": {"flow": "script-job"}}, "ecs"),
        policy=JobPolicy(_env_file=None, jobs_large_set="batch", jobs_batch_capacity="SPOT"),
    )
    job = service.create(
        "script",
        {"name": "n"},
        estimations={"cpu": 2, "memoryMiB": 3000, "expectedSeconds": 7200},
        group="lab-a",
    )
    placement = service.signal(job.id, "DISPATCH").placement
    assert placement["deployment"] == "script-job/batch"
    request, described = _submit(batch, placement["jobVariables"])
    assert {key: described["tags"][key] for key in described["tags"] if key.startswith("interlinked:")} == {
        "interlinked:job-id": job.id,
        "interlinked:job-type": "script",
        "interlinked:group": "lab-a",
    }
    # moto keeps the tags but does not echo resource overrides: those are checked in the request
    requirements = {r["type"]: r["value"] for r in request["containerOverrides"]["resourceRequirements"]}
    assert requirements == {"VCPU": "2", "MEMORY": "3000"}

    running = service.signal(job.id, "EXECUTE")
    service.signal_execution(
        job.id,
        running.current_execution.execution_id,
        "FAILURE",
        failure_reason="OUT_OF_MEMORY: exit code 137",
    )
    placement = service.get(job.id).placement  # dispatched again at once, with twice the memory
    request, described = _submit(batch, placement["jobVariables"])
    requirements = {r["type"]: r["value"] for r in request["containerOverrides"]["resourceRequirements"]}
    assert requirements["MEMORY"] == "6000" and described["tags"]["interlinked:job-id"] == job.id
