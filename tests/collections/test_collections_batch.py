"""`tasks drain --pool batch --workers N`: one AWS Batch array job of N drains, through the aws-batch
worker's own configuration (the request it would submit), submitted to a moto server's Batch."""

from __future__ import annotations

import asyncio
import shlex
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun

from flows.collections.client import drain_requests
from flows.collections.model import TaskInputError
from interlinked.workers.batch import BatchJobConfiguration, BatchWorker

ROOT = Path(__file__).resolve().parents[2]


class _NoClient:
    def __getattr__(self, name):
        raise AssertionError(f"the template needed the Prefect API ({name})")


def _configuration(job_queue: str, job_definition: str, request) -> BatchJobConfiguration:
    """What the aws-batch worker renders for a run of ``request``: pool template, the deployment's
    job variables from prefect.yaml, then the run's own."""
    template = BatchWorker.get_default_base_job_template()
    properties = template["variables"]["properties"]
    properties["job_queue"]["default"] = job_queue
    properties["job_definition"]["default"] = job_definition
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [deployment] = [
        d
        for d in config["deployments"]
        if d["name"] == "batch" and d["entrypoint"] == "flows/collections/drain.py:drain_collection"
    ]
    values = {**deployment["work_pool"].get("job_variables", {}), **request.job_variables}
    configuration = asyncio.run(
        BatchJobConfiguration.from_template_and_values(template, values, client=_NoClient())
    )
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="drain-run", flow_id=uuid.uuid4()))
    return configuration


@pytest.fixture
def moto_batch(moto_endpoint):
    """A job queue and job definition in the moto server's Batch (an unmanaged compute environment)."""
    session = boto3.session.Session()
    kwargs = {
        "endpoint_url": moto_endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    batch, iam = session.client("batch", **kwargs), session.client("iam", **kwargs)
    name = f"drain-{uuid.uuid4().hex[:8]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    environment = batch.create_compute_environment(
        computeEnvironmentName=name, type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName=name,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )["jobQueueArn"]
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={"image": "interlinked:latest", "vcpus": 1, "memory": 512, "command": ["true"]},
    )
    return batch, queue, name


def test_workers_on_batch_become_one_array_job_of_drains(moto_batch, monkeypatch):
    batch, queue, definition = moto_batch
    request = drain_requests("align", workers=5, concurrency=8, pool="batch", time_budget=3600)
    assert (request.deployment, request.count) == ("drain-collection/batch", 1)
    assert request.job_variables["array_size"] == 5

    configuration = _configuration(queue, definition, request)
    configuration.check_submittable()  # an array job must not run the Prefect engine 5 times
    submitted = batch.submit_job(**configuration.submit_job_request())

    [job] = batch.describe_jobs(jobs=[submitted["jobId"]])["jobs"]
    assert job["arrayProperties"]["size"] == 5
    assert job["jobQueue"] == queue
    command = job["container"]["command"]
    assert command[:4] == ["python", "-m", "flows.collections.drain", "align"]
    assert shlex.join(command) == request.job_variables["command"]
    assert "--concurrency 8" in shlex.join(command) and "--time-budget 3600" in shlex.join(command)
    environment = {item["name"]: item["value"] for item in job["container"]["environment"]}
    assert "PREFECT__FLOW_RUN_ID" in environment  # the parent run, for the worker's bookkeeping

    # Each child's command is what `python -m flows.collections.drain` parses.
    from flows.collections import drain

    parsed = {}
    monkeypatch.setattr(drain, "drain_collection", lambda **values: parsed.update(values) or {})
    assert drain.main(command[3:]) == 0
    assert parsed["collection"] == "align"
    assert (parsed["concurrency"], parsed["time_budget"], parsed["batch"]) == (8, 3600.0, 25)


def test_local_and_ecs_start_n_runs_and_one_batch_worker_is_a_plain_run():
    assert drain_requests("align", workers=3, pool="local").count == 3
    ecs = drain_requests("align", workers=2, pool="ecs", concurrency=2)
    assert (ecs.deployment, ecs.count, ecs.job_variables) == ("drain-collection/ecs", 2, {})
    assert ecs.parameters == {"collection": "align", "concurrency": 2, "batch": 25}
    single = drain_requests("align", workers=1, pool="batch")
    assert (single.count, single.job_variables) == (1, {})
    with pytest.raises(TaskInputError, match="at most 10000"):
        drain_requests("align", workers=10_001, pool="batch")
    with pytest.raises(TaskInputError, match="--pool must be one of"):
        drain_requests("align", pool="lambda")


def test_lower_priority_collections_reach_every_drain_and_each_array_child(monkeypatch):
    # `tasks drain high low`: PiCaS's PrioritizedViewIterator. The flow gets the order as a
    # parameter; an array child gets it as positional collections after the first.
    local = drain_requests("high", lower_priority=["low", "lowest"], pool="local")
    assert local.parameters["lower_priority"] == ["low", "lowest"]
    request = drain_requests("high", lower_priority=["low"], workers=3, pool="batch", concurrency=2)
    command = shlex.split(request.job_variables["command"])
    assert command[:6] == ["python", "-m", "flows.collections.drain", "high", "low", "--concurrency"]
    from flows.collections import drain

    parsed = {}
    monkeypatch.setattr(drain, "drain_collection", lambda **values: parsed.update(values) or {})
    assert drain.main(command[3:]) == 0
    assert (parsed["collection"], parsed["lower_priority"], parsed["concurrency"]) == ("high", ["low"], 2)
    with pytest.raises(TaskInputError, match="named twice"):
        drain_requests("high", lower_priority=["low", "high"])
    with pytest.raises(TaskInputError, match="invalid collection name"):
        drain_requests("high", lower_priority=["no/such"])
