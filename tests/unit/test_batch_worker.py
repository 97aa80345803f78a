"""The aws-batch worker without servers: registration, template, the submit_job request, checks,
and the shared describe_jobs calls. Its behaviour against AWS Batch (moto) and a Prefect server is
tested in tests/terraform/test_batch_pool.py."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect.settings import get_current_settings
from prefect.workers.base import BaseWorker

from interlinked.workers.batch import (
    BatchJobConfiguration,
    BatchWorker,
    batch_job_name,
    batch_tags,
    runs_prefect_engine,
)
from interlinked.workers.batch.watching import Coalesced, describe_jobs

ROOT = Path(__file__).resolve().parents[2]


def _flow_run(name: str = "amber-fox") -> FlowRun:
    return FlowRun(id=uuid.uuid4(), name=name, flow_id=uuid.uuid4())


def _configuration(**values) -> BatchJobConfiguration:
    values.setdefault("job_queue", "arn:aws:batch:us-east-1:123456789012:job-queue/interlinked-flow-runs")
    values.setdefault("job_definition", "interlinked-flow-run")
    return BatchJobConfiguration(**values)


class _NoClient:
    """from_template_and_values needs a client only for block/variable references."""

    def __getattr__(self, name):
        raise AssertionError(f"the template needed the Prefect API ({name})")


def _render(template: dict, values: dict) -> BatchJobConfiguration:
    return asyncio.run(BatchJobConfiguration.from_template_and_values(template, values, client=_NoClient()))


################################################################################
# Registration and template
################################################################################


def test_aws_batch_type_is_registered_through_the_entry_point():
    assert BaseWorker.get_worker_class_from_type("aws-batch") is BatchWorker
    assert "aws-batch" in BaseWorker.get_all_available_worker_types()


def test_base_job_template_templates_every_setting_and_requires_queue_and_definition():
    template = BatchWorker.get_default_base_job_template()
    variables = template["variables"]["properties"]
    for name in (
        "job_queue",
        "job_definition",
        "vcpu",
        "memory",
        "env",
        "retry_strategy",
        "timeout_seconds",
        "array_size",
        "aws_credentials",
        "runnable_warning_seconds",
        "runnable_timeout_seconds",
    ):
        assert name in variables, name
        assert template["job_configuration"][name] == "{{ " + name + " }}"
    assert set(template["variables"]["required"]) == {"job_queue", "job_definition"}
    assert variables["timeout_seconds"]["anyOf"][0]["minimum"] == 60
    assert variables["array_size"]["anyOf"][0]["maximum"] == 10000


def test_pool_defaults_and_deployment_values_render_into_the_configuration():
    template = BatchWorker.get_default_base_job_template()
    properties = template["variables"]["properties"]
    properties["job_queue"]["default"] = "pool-queue"
    properties["job_definition"]["default"] = "pool-definition"
    properties["env"]["default"] = {"FROM_POOL": "1"}

    configuration = _render(template, {"vcpu": 2, "env": {"FROM_DEPLOYMENT": "2"}, "timeout_seconds": 900})
    assert configuration.job_queue == "pool-queue"
    assert configuration.job_definition == "pool-definition"
    assert configuration.vcpu == 2
    assert configuration.timeout_seconds == 900
    assert configuration.env == {"FROM_POOL": "1", "FROM_DEPLOYMENT": "2"}
    assert configuration.runnable_warning_seconds == 600
    assert configuration.poll_interval_seconds == 5


################################################################################
# The submit_job request
################################################################################


def test_submit_job_request_carries_the_flow_run_and_every_override():
    flow_run = _flow_run("amber fox/1")
    configuration = _configuration(
        vcpu=0.5,
        memory=2048,
        retry_strategy={"attempts": 2, "evaluateOnExit": [{"onReason": "*", "action": "EXIT"}]},
        timeout_seconds=900,
        share_identifier="science",
        env={"MY_SETTING": "x", "UNSET_ME": None, "PREFECT_API_KEY": "pnu_secret"},
        labels={"team": "single cell!", "aws:reserved": "no"},
    )
    configuration.prepare_for_flow_run(flow_run)
    request = configuration.submit_job_request()

    assert request["jobName"] == "amber-fox-1"
    assert request["jobQueue"] == "arn:aws:batch:us-east-1:123456789012:job-queue/interlinked-flow-runs"
    assert request["jobDefinition"] == "interlinked-flow-run"
    overrides = request["containerOverrides"]
    assert overrides["command"] == ["prefect", "flow-run", "execute"]
    env = {item["name"]: item["value"] for item in overrides["environment"]}
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert env["PREFECT_API_URL"].endswith("/api")
    assert env["MY_SETTING"] == "x"
    assert "UNSET_ME" not in env
    assert "PREFECT_API_KEY" not in env, "secrets come from the job definition, never in plain overrides"
    assert [item["name"] for item in overrides["environment"]] == sorted(env)
    assert overrides["resourceRequirements"] == [
        {"type": "VCPU", "value": "0.5"},
        {"type": "MEMORY", "value": "2048"},
    ]
    assert request["retryStrategy"]["attempts"] == 2
    assert request["timeout"] == {"attemptDurationSeconds": 900}
    assert request["shareIdentifier"] == "science"
    assert "arrayProperties" not in request
    assert request["tags"]["team"] == "single cell_"
    assert request["tags"]["prefect.io/flow-run-id"] == str(flow_run.id)
    assert "aws:reserved" not in request["tags"]


def test_unset_overrides_are_left_to_the_job_definition():
    configuration = _configuration()
    configuration.prepare_for_flow_run(_flow_run())
    request = configuration.submit_job_request()
    assert set(request) == {"jobName", "jobQueue", "jobDefinition", "containerOverrides", "tags"}
    assert "resourceRequirements" not in request["containerOverrides"]
    assert configuration.describe_request().startswith(
        "queue arn:aws:batch:us-east-1:123456789012:job-queue/interlinked-flow-runs, "
        "definition interlinked-flow-run, command prefect flow-run execute"
    )


def test_worker_local_paths_stay_with_the_worker_unless_the_deployment_sets_them():
    # The session sets PREFECT_HOME (tests/_stack.py); a container must not inherit the worker's.
    assert "PREFECT_HOME" in get_current_settings().to_environment_variables(exclude_unset=True)
    configuration = _configuration()
    configuration.prepare_for_flow_run(_flow_run())
    assert "PREFECT_HOME" not in configuration.env

    configuration = _configuration(env={"PREFECT_HOME": "/data/prefect"})
    configuration.prepare_for_flow_run(_flow_run())
    assert configuration.env["PREFECT_HOME"] == "/data/prefect"


def test_array_jobs_need_their_own_command():
    configuration = _configuration(array_size=4, command="python -m interlinked.drain --collection c1")
    configuration.prepare_for_flow_run(_flow_run())
    configuration.check_submittable()
    request = configuration.submit_job_request()
    assert request["arrayProperties"] == {"size": 4}
    assert request["containerOverrides"]["command"] == [
        "python",
        "-m",
        "interlinked.drain",
        "--collection",
        "c1",
    ]

    engine = _configuration(array_size=4)
    engine.prepare_for_flow_run(_flow_run())
    with pytest.raises(ValueError, match="same flow run 4 times"):
        engine.check_submittable()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"timeout_seconds": 30}, "at least 60"),
        ({"array_size": 1}, "between 2 and 10000"),
        ({"memory": 2}, "at least 4"),
        ({"vcpu": 0}, "vcpu must be positive"),
        ({"poll_interval_seconds": 0}, "poll_interval_seconds must be positive"),
    ],
)
def test_impossible_values_are_refused_with_the_setting_named(values, message):
    with pytest.raises(ValueError, match=message):
        _configuration(**values)


def test_a_pool_without_queue_or_definition_says_which_is_missing():
    configuration = BatchJobConfiguration(job_definition="interlinked-flow-run")
    configuration.prepare_for_flow_run(_flow_run())
    with pytest.raises(ValueError, match="needs job_queue: set it in the pool's base job template"):
        configuration.check_submittable()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("amber-fox", "amber-fox"),
        ("my flow/run!", "my-flow-run"),
        ("__xy", "xy"),
        ("x", "x-prefect-flow-run"),
        ("", "prefect-flow-run"),
        (None, "prefect-flow-run"),
        ("a" * 300, "a" * 128),
    ],
)
def test_job_names_fit_batch_rules(name, expected):
    assert batch_job_name(name) == expected


def test_tags_are_capped_and_cleaned():
    tags = batch_tags({f"k{i}": "v" for i in range(80)} | {"x": "é\u2603"})
    assert len(tags) == 50
    assert batch_tags({"key": "a\u2603b"}) == {"key": "a_b"}


@pytest.mark.parametrize(
    ("command", "engine"),
    [
        ("prefect flow-run execute", True),
        ("python -m prefect.engine", True),
        ("/opt/venv/bin/python  -m   prefect.engine", True),
        ("python -m interlinked.drain", False),
        ("bash -c 'echo hi'", False),
        (None, False),
    ],
)
def test_which_commands_run_the_prefect_engine(command, engine):
    assert runs_prefect_engine(command) is engine


################################################################################
# describe_jobs (and flow-run states) shared by concurrent runs
################################################################################


class _RecordingBatch:
    """A stand-in Batch client: answers describe_jobs for the ids it knows, records each call."""

    def __init__(self, known: set[str], error: Exception | None = None):
        self.known = known
        self.error = error
        self.calls: list[list[str]] = []

    def describe_jobs(self, jobs):
        self.calls.append(list(jobs))
        if self.error:
            raise self.error
        return {"jobs": [{"jobId": job, "status": "RUNNING"} for job in jobs if job in self.known]}


def test_concurrent_describes_share_requests_of_at_most_100_jobs():
    ids = [f"job-{i}" for i in range(150)]
    client = _RecordingBatch(known=set(ids[:-1]))

    async def main():
        describe = Coalesced(describe_jobs, chunk=100)
        return await asyncio.gather(*(describe(client, job_id) for job_id in ids))

    results = asyncio.run(main())
    assert sorted(len(call) for call in client.calls) == [50, 100]
    assert [r["jobId"] for r in results[:-1]] == ids[:-1]
    assert results[-1] is None, "an unknown job is reported as missing, not as an error"


def test_each_client_gets_its_own_request():
    east, west = _RecordingBatch(known={"a"}), _RecordingBatch(known={"b"})

    async def main():
        describe = Coalesced(describe_jobs, chunk=100)
        return await asyncio.gather(describe(east, "a"), describe(west, "b"), describe(east, "a"))

    a, b, a_again = asyncio.run(main())
    assert (a["jobId"], b["jobId"], a_again["jobId"]) == ("a", "b", "a")
    assert east.calls == [["a"]] and west.calls == [["b"]]


def test_a_failing_describe_reaches_every_waiting_run():
    client = _RecordingBatch(known={"a", "b"}, error=RuntimeError("throttled"))

    async def main():
        describe = Coalesced(describe_jobs, chunk=100)
        return await asyncio.gather(describe(client, "a"), describe(client, "b"), return_exceptions=True)

    results = asyncio.run(main())
    assert len(client.calls) == 1
    assert all(isinstance(r, RuntimeError) and "throttled" in str(r) for r in results)


################################################################################
# prefect.yaml
################################################################################


def _batch_deployments() -> list[dict]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return [d for d in config.get("deployments", []) if d.get("name") == "batch"]


def test_prefect_yaml_batch_deployments_render_on_the_aws_batch_template():
    deployments = _batch_deployments()
    assert deployments, "prefect.yaml declares `batch` deployments"
    template = BatchWorker.get_default_base_job_template()
    properties = template["variables"]["properties"]
    # What `prefect work-pool create --base-job-template` gets from Terraform (README).
    properties["job_queue"]["default"] = "interlinked-flow-runs"
    properties["job_definition"]["default"] = "interlinked-flow-run"
    for deployment in deployments:
        values = (deployment.get("work_pool") or {}).get("job_variables") or {}
        configuration = _render(template, values)
        configuration.prepare_for_flow_run(_flow_run())
        configuration.check_submittable()
        assert configuration.submit_job_request()["jobQueue"] == "interlinked-flow-runs"
