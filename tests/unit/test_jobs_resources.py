"""The jobs' resource policy on the in-memory job service (no servers): checkpoints, memory
escalation after OUT_OF_MEMORY, triage from estimations, cost, budgets; the local memory limit on
real child processes; the cost-allocation tags in what the ECS and Batch workers submit.

A refused request raises ``JobError`` and leaves the stored job as it was (``unchanged``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest

from flows.jobs import checkpoints, cost, memory, triage
from flows.jobs.client import JobService
from flows.jobs.model import Estimations, Execution, Job, JobError
from flows.jobs.policy import JobPolicy
from flows.jobs.store import MemoryJobStore
from flows.jobs.types import JobTypes
from tests.unit.test_jobs_machine import FakeDispatcher, unchanged

OOM_REASON = "ScriptJobError: OUT_OF_MEMORY: the script used 300 MiB, over its memory limit of 256 MiB"
TYPES = {
    "script": {"flow": "script-job"},
    "capped": {"flow": "script-job", "maxMemoryMiB": 600},
    "pinned": {"deployment": "x/y"},
}


def make_service(**policy) -> JobService:
    copies: list[dict] = []
    service = JobService(
        MemoryJobStore(),
        mirror=lambda job: copies.append(job.to_json()),
        dispatcher=FakeDispatcher(),
        job_types=JobTypes(TYPES, "local"),
        policy=JobPolicy(_env_file=None, **policy),
    )
    service.copies = copies
    return service


@pytest.fixture
def service(monkeypatch):
    for name in list(os.environ):
        if name.startswith("INTERLINKED_JOBS_"):
            monkeypatch.delenv(name)
    return make_service()


def started(service: JobService, job_type: str = "script", **create) -> tuple[Job, str]:
    job = service.create(job_type, {"name": "n"}, **create)
    service.signal(job.id, "DISPATCH")
    job = service.signal(job.id, "EXECUTE", flow_run_id="run", infrastructure_id="process:h:1")
    return job, job.current_execution.execution_id


def fail(service: JobService, job: Job, reason: str = OOM_REASON) -> Job:
    return service.signal_execution(
        job.id, job.current_execution.execution_id, "FAILURE", failure_reason=reason
    )


# -- checkpoints --------------------------------------------------------------------------------------
def test_the_next_execution_resumes_from_the_last_checkpoint(service):
    job, first = started(service, estimations={"maxAttempts": 3})
    assert job.current_execution.checkpoint is None
    service.update_execution(job.id, first, progress=0.25, checkpoint={"done": 1})
    job = service.update_execution(job.id, first, progress=0.5, checkpoint={"done": 2})
    assert job.current_execution.checkpoint == {"done": 2} and job.current_execution.checkpointed_at
    service.update_execution(job.id, first, progress=0.6)  # no checkpoint: the last one stays
    assert service.get_checkpoint(job.id) == {"done": 2}

    fail(service, job, "RuntimeError: crashed")
    service.retry(job.id)
    job = service.signal(job.id, "EXECUTE")
    second = job.current_execution
    assert second.attempt == 2 and second.checkpoint == {"done": 2}  # in the EXECUTE signal's answer
    assert job.to_json()["currentExecution"]["checkpoint"] == {"done": 2}
    assert job.to_json() == service.copies[-1]  # so in the S3 copy too
    service.update_execution(job.id, second.execution_id, checkpoint=["any", "json", 3])
    assert service.get_checkpoint(job.id) == ["any", "json", 3]


def test_a_job_without_checkpoints_starts_over(service):
    job, _ = started(service)
    fail(service, job, "RuntimeError: x")
    service.retry(job.id)
    job = service.signal(job.id, "EXECUTE")
    assert job.current_execution.checkpoint is None and service.get_checkpoint(job.id) is None


@pytest.mark.parametrize(
    "checkpoint, message",
    [
        ({"blob": "x" * 70_000}, "the limit is 65,536"),
        ({1, 2}, "plain JSON"),
        ({"x": float("nan")}, "plain JSON"),
    ],
)
def test_a_bad_checkpoint_is_refused_and_nothing_changes(service, checkpoint, message):
    job, execution_id = started(service)
    with unchanged(service, job.id) as refused:
        service.update_execution(job.id, execution_id, progress=0.5, checkpoint=checkpoint)
    assert message in str(refused.value)


def test_the_checkpoint_limit_is_a_setting(service):
    small = make_service(jobs_checkpoint_max_bytes=32)
    job, execution_id = started(small)
    with unchanged(small, job.id) as refused:
        small.update_execution(job.id, execution_id, checkpoint={"k": "v" * 40})
    assert "INTERLINKED_JOBS_CHECKPOINT_MAX_BYTES" in str(refused.value)


def test_a_checkpoint_on_an_ended_execution_is_refused(service):
    job, execution_id = started(service)
    service.signal_execution(job.id, execution_id, "SUCCESS")
    with unchanged(service, job.id) as refused:
        service.update_execution(job.id, execution_id, checkpoint={"done": 1})
    assert "already ended SUCCESS" in str(refused.value)


def test_a_checkpoint_is_a_copy_of_the_callers_value():
    value = {"done": [1]}
    copied = checkpoints.check_checkpoint(value, 1000)
    value["done"].append(2)
    assert copied == {"done": [1]}


# -- memory escalation --------------------------------------------------------------------------------
def test_out_of_memory_retries_at_once_with_twice_the_memory(service):
    job, _ = started(service, estimations={"memoryMiB": 256})
    assert job.current_execution.resources["memoryMiB"] == 256
    job = fail(service, job)
    assert job.state == "DISPATCHED" and len(service.dispatcher.runs) == 2
    assert job.executions[0].state == "FAILURE" and job.executions[0].cost is not None
    assert job.placement["memoryMiB"] == 512
    assert job.placement["jobVariables"]["env"] == {memory.MEMORY_LIMIT_ENV: "512"}
    assert "attempt 1 ran out of memory at 256 MiB" in " ".join(job.placement["reasons"])
    job = service.signal(job.id, "EXECUTE")
    assert job.current_execution.resources["memoryMiB"] == 512
    job = service.signal_execution(job.id, job.current_execution.execution_id, "SUCCESS")
    assert job.state == "SUCCEEDED" and [e.resources["memoryMiB"] for e in job.executions] == [256, 512]


def test_escalation_stops_at_the_job_types_cap(service):
    job, _ = started(service, "capped", estimations={"memoryMiB": 400, "maxAttempts": 4})
    job = fail(service, job)
    assert job.placement["memoryMiB"] == 600 and "capped" in " ".join(job.placement["reasons"])
    service.signal(job.id, "EXECUTE")
    job = fail(service, service.get(job.id))
    assert job.placement["memoryMiB"] == 600 and "already at the cap" in " ".join(job.placement["reasons"])


def test_the_default_cap_is_a_setting():
    service = make_service(jobs_max_memory_mib=1024)
    job, _ = started(service, estimations={"memoryMiB": 768})
    assert fail(service, job).placement["memoryMiB"] == 1024


def test_other_failures_and_spent_attempts_are_not_retried(service):
    job, _ = started(service, estimations={"memoryMiB": 256})
    job = fail(service, job, "RuntimeError: not memory")
    assert job.state == "FAILED" and len(service.dispatcher.runs) == 1
    retried = service.retry(job.id)  # a manual retry keeps the memory
    assert retried.placement["memoryMiB"] == 256

    job, _ = started(service, estimations={"memoryMiB": 256, "maxAttempts": 1})
    assert fail(service, job).state == "FAILED"

    off = make_service(jobs_retry_on_oom=False)
    job, _ = started(off, estimations={"memoryMiB": 256})
    job = fail(off, job)
    assert job.state == "FAILED" and len(off.dispatcher.runs) == 1
    assert off.retry(job.id).placement["memoryMiB"] == 512  # the next one still gets twice the memory


def test_an_estimate_above_the_cap_creates_nothing(service):
    with pytest.raises(JobError, match="above the cap of job type 'capped'"):
        service.create("capped", {"name": "n"}, estimations={"memoryMiB": 601})
    assert service.list() == []


def test_is_out_of_memory_reads_the_code():
    execution = Execution(execution_id="e", attempt=1, created_at="t", updated_at="t", state="FAILURE")
    assert not memory.is_out_of_memory(execution)
    execution.failure_reason = "OUT_OF_MEMORY: killed"
    assert memory.is_out_of_memory(execution)
    execution.state = "SUCCESS"
    assert not memory.is_out_of_memory(execution)
    assert not memory.is_out_of_memory(None)


@pytest.mark.parametrize("text", ["lots", "0", "-5"])
def test_a_bad_memory_limit_in_the_environment_is_an_error(text):
    with pytest.raises(JobError, match=memory.MEMORY_LIMIT_ENV):
        memory.limit_from_environment({memory.MEMORY_LIMIT_ENV: text})
    assert memory.limit_from_environment({}) is None


def test_the_memory_watch_kills_the_whole_process_group():
    child = subprocess.Popen(
        ["bash", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True, stdout=subprocess.DEVNULL
    )
    with memory.MemoryWatch(child.pid, 100, measure=lambda pgid: 101 * 1048576, interval=0.01) as watch:
        child.wait(timeout=30)
    assert watch.killed and child.returncode == -9
    assert watch.reason().startswith(
        "OUT_OF_MEMORY: the script used 101 MiB, over its memory limit of 100 MiB"
    )
    members = subprocess.run(["ps", "-o", "stat=", "-g", str(child.pid)], capture_output=True, text=True)
    assert all(state.startswith("Z") for state in members.stdout.split())  # nothing runs in the group


def test_the_memory_watch_measures_real_resident_memory():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; b = bytearray(b'1') * (64 << 20); print(1, flush=True); time.sleep(30)",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline().strip() == b"1"  # allocated and touched
        assert memory._group_rss_bytes(child.pid) >= 64 << 20
        assert memory._group_rss_bytes(child.pid + 10_000_000) == 0  # no such group
    finally:
        child.kill()
        child.wait()


HOG = """
import time

def hog(args):
    blocks = [bytearray(b"1") * (16 << 20) for _ in range(args["mib"] // 16)]
    time.sleep(1.0)
    return len(blocks) * 16
"""


def test_a_script_over_its_memory_limit_fails_out_of_memory_and_passes_with_more(tmp_path):
    from flows.script_jobs.runners import run_script

    script = tmp_path / "hog.py"
    script.write_text(textwrap.dedent(HOG))
    lines: list[str] = []

    def run(limit):
        return run_script(
            language="python",
            script=script,
            func="hog",
            arguments={"mib": 160},
            on_line=lambda stream, line: lines.append(line),
            memory_limit_mib=limit,
        )

    outcome = run(96)
    assert outcome.out_of_memory and outcome.exit_code == 137 and not outcome.succeeded
    assert outcome.error.startswith("OUT_OF_MEMORY:") and "memory limit of 96 MiB" in outcome.error
    outcome = run(512)
    assert outcome.succeeded and outcome.result == 160 and not outcome.out_of_memory


# -- triage -------------------------------------------------------------------------------------------
def test_a_small_job_runs_locally_with_an_enforced_limit_and_cost_tags(service):
    job = service.create("script", {"name": "n"}, estimations={"cpu": 1, "memoryMiB": 300}, group="lab-a")
    dispatched = service.signal(job.id, "DISPATCH")
    placement = dispatched.placement
    assert service.dispatcher.runs == [(job.id, "script-job/local")]
    assert placement["size"] == "small" and placement["pool"] == "local"
    assert placement["jobVariables"] == {
        "env": {"INTERLINKED_MEMORY_LIMIT_MIB": "300"},
        "labels": {
            "interlinked:job-id": job.id,
            "interlinked:job-type": "script",
            "interlinked:group": "lab-a",
        },
    }
    assert "triage: small → script-job/local" in triage.explain(placement)


def test_big_or_long_jobs_go_to_batch_and_small_ones_to_ecs_on_aws():
    aws = make_service(jobs_small_set="ecs", jobs_large_set="batch", jobs_batch_capacity="SPOT")
    small = aws.create(
        "script", {"name": "n"}, estimations={"cpu": 0.5, "memoryMiB": 3000, "expectedSeconds": 60}
    )
    placement = aws.signal(small.id, "DISPATCH").placement
    assert placement["deployment"] == "script-job/ecs"
    assert (
        placement["jobVariables"]["cpu"] == 512 and placement["jobVariables"]["memory"] == 3072
    )  # Fargate size
    assert placement["jobVariables"]["labels"]["interlinked:job-id"] == small.id

    for estimations, why in [
        ({"expectedSeconds": 7200}, "expectedSeconds 7200 > 3600"),
        ({"cpu": 8}, "cpu 8 > 4"),
        ({"memoryMiB": 16384}, "memory 16384 MiB > 8192 MiB"),
    ]:
        job = aws.create("script", {"name": "n"}, estimations=estimations)
        placement = aws.signal(job.id, "DISPATCH").placement
        assert placement["deployment"] == "script-job/batch" and placement["size"] == "large"
        assert why in placement["reasons"][0]
        assert set(placement["jobVariables"]) == {"vcpu", "memory", "labels"}
        assert placement["instanceType"] == "m5.xlarge"


def test_an_oom_escalation_can_move_a_job_to_the_large_pool():
    aws = make_service(jobs_small_set="ecs", jobs_large_set="batch")
    job, _ = started(aws, estimations={"memoryMiB": 6144})
    assert job.current_execution.resources["deployment"] == "script-job/ecs"
    job = fail(aws, job)
    assert job.placement["deployment"] == "script-job/batch" and job.placement["memoryMiB"] == 12288


def test_thresholds_are_settings_and_a_pinned_type_is_not_moved():
    strict = make_service(jobs_small_max_seconds=10, jobs_large_set="batch")
    job = strict.create("script", {"name": "n"}, estimations={"expectedSeconds": 11})
    assert strict.signal(job.id, "DISPATCH").placement["deployment"] == "script-job/batch"
    job = strict.create("pinned", {}, estimations={"expectedSeconds": 11})
    assert strict.signal(job.id, "DISPATCH").placement["deployment"] == "x/y"
    assert strict.dispatcher.runs[-1] == (job.id, "x/y")


def test_fargate_sizes_round_up_and_too_big_is_an_error():
    assert triage.fargate_size(0.25, 100) == (256, 512)
    assert triage.fargate_size(1, 2049) == (1024, 3072)
    assert triage.fargate_size(1, 9000) == (2048, 9216)
    with pytest.raises(JobError, match="no Fargate size"):
        triage.fargate_size(16, 200_000)


def test_estimations_no_pool_can_take_are_refused_at_create():
    aws = make_service(jobs_small_set="ecs", jobs_max_memory_mib=500_000)
    with pytest.raises(JobError, match="no Fargate size"):
        aws.create("script", {"name": "n"}, estimations={"cpu": 1, "memoryMiB": 200_000})
    assert aws.list() == []


@pytest.mark.parametrize("group", ["", "has space", "x" * 129, "-lead", 3])
def test_a_bad_group_creates_nothing(service, group):
    with pytest.raises(JobError, match="a group must be"):
        service.create("script", {"name": "n"}, group=group)
    assert service.list() == []


def test_cost_tags_reach_the_batch_job_and_the_ecs_task():
    from prefect.client.schemas.objects import FlowRun
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

    from interlinked.workers.batch import BatchJobConfiguration, BatchWorker
    from tests.unit.test_batch_worker import _NoClient

    aws = make_service(jobs_small_set="ecs", jobs_large_set="batch")
    job = aws.create("script", {"name": "n"}, estimations={"cpu": 2, "memoryMiB": 4096}, group="lab-b")
    small = aws.signal(job.id, "DISPATCH").placement["jobVariables"]
    job = aws.create("script", {"name": "n"}, estimations={"expectedSeconds": 86400}, group="lab-b")
    large = aws.signal(job.id, "DISPATCH").placement["jobVariables"]
    flow_run = FlowRun(name="amber-fox", flow_id="00000000-0000-0000-0000-000000000001")

    batch = asyncio.run(
        BatchJobConfiguration.from_template_and_values(
            BatchWorker.get_default_base_job_template(),
            {"job_queue": "q", "job_definition": "d", **large},
            client=_NoClient(),
        )
    )
    batch.prepare_for_flow_run(flow_run)
    request = batch.submit_job_request()
    assert request["tags"]["interlinked:job-id"] == job.id and request["tags"]["interlinked:group"] == "lab-b"
    assert request["tags"]["interlinked:job-type"] == "script"
    assert {"type": "MEMORY", "value": "2048"} in request["containerOverrides"]["resourceRequirements"]

    ecs = asyncio.run(
        ECSJobConfiguration.from_template_and_values(
            ECSWorker.get_default_base_job_template(), {"cluster": "c", **small}, client=_NoClient()
        )
    )
    ecs.prepare_for_flow_run(flow_run)
    run_request = ECSWorker(work_pool_name="ecs")._prepare_task_run_request(
        ecs, {"containerDefinitions": [{"name": "prefect"}]}, "arn:task-definition", False
    )
    tags = {tag["key"]: tag["value"] for tag in run_request["tags"]}
    assert tags["interlinked:group"] == "lab-b" and tags["interlinked:job-type"] == "script"
    assert run_request["overrides"]["cpu"] == "2048" and run_request["overrides"]["memory"] == "4096"


# -- cost ---------------------------------------------------------------------------------------------
def _ended(resources, seconds=3600.0, state="SUCCESS", finished="2026-12-01T01:00:00.000Z") -> Execution:
    start = cost.parse_time(finished).timestamp() - seconds
    created = cost.iso(datetime.fromtimestamp(start, UTC))
    return Execution(
        execution_id=f"e-{finished}",
        attempt=1,
        created_at=created,
        updated_at=finished,
        finished_at=finished,
        state=state,
        resources=resources,
    )


@pytest.mark.parametrize(
    "resources, per_hour",
    [
        ({"cpu": 1, "memoryMiB": 2048, "pricedAs": "FARGATE"}, 0.04048 + 2 * 0.004445),
        ({"cpu": 2, "memoryMiB": 4096, "pricedAs": "FARGATE_SPOT"}, 2 * 0.012545 + 4 * 0.001377),
        ({"cpu": 1, "memoryMiB": 8192, "pricedAs": "EC2", "instanceType": "m5.xlarge"}, 0.5 * 0.192),
        ({"cpu": 4, "memoryMiB": 1024, "pricedAs": "SPOT", "instanceType": "m5.xlarge"}, 1.0 * 0.077),
        ({"cpu": 4, "memoryMiB": 1024, "pricedAs": "FREE"}, 0.0),
    ],
)
def test_cost_is_runtime_times_resources_times_the_price(resources, per_hour):
    charged = cost.execution_cost(_ended(resources, seconds=1800), JobPolicy(_env_file=None))
    assert charged["amount"] == pytest.approx(per_hour / 2)
    assert charged["seconds"] == 1800 and charged["pricesAsOf"] == "2024-11-01"


def test_prices_are_settings_and_unknown_instances_are_an_error():
    policy = JobPolicy(_env_file=None, jobs_prices={"fargate": {"vcpu_hour": 1.0, "gb_hour": 0.0}})
    assert (
        cost.execution_cost(_ended({"cpu": 3, "memoryMiB": 1, "pricedAs": "FARGATE"}), policy)["amount"] == 3
    )
    with pytest.raises(JobError, match=r"no price for instance type 'z9\.huge'"):
        cost.execution_cost(_ended({"cpu": 1, "pricedAs": "EC2", "instanceType": "z9.huge"}), policy)


def test_the_cost_is_recorded_when_an_execution_ends(service):
    job, execution_id = started(service, estimations={"cpu": 2, "memoryMiB": 1024})
    job = service.signal_execution(job.id, execution_id, "SUCCESS")
    recorded = job.current_execution.cost
    assert recorded["seconds"] >= 0 and recorded["basis"].startswith("FARGATE: 2 vCPU")
    job, execution_id = started(service)
    job = service.cancel(job.id)
    assert job.current_execution.cost is not None  # a cancelled execution ran too


def _spent(store: MemoryJobStore, group: str, amount_hours: float, finished: str) -> None:
    job = Job(
        id=f"spent-{group}-{finished}",
        job_type="script",
        group=group,
        state="SUCCEEDED",
        created_at=finished,
        updated_at=finished,
        estimations=Estimations(),
    )
    execution = _ended(
        {"cpu": 1, "memoryMiB": 0, "pricedAs": "FARGATE"}, amount_hours * 3600, finished=finished
    )
    execution.cost = cost.execution_cost(execution, JobPolicy(_env_file=None))
    job.executions.append(execution)
    store.insert(job)


def test_cost_summary_sums_per_group_and_honours_since(service):
    _spent(service.store, "lab-a", 10, "2026-11-15T00:00:00.000Z")
    _spent(service.store, "lab-a", 100, "2026-12-01T05:00:00.000Z")
    _spent(service.store, "lab-b", 1000, "2026-12-01T06:00:00.000Z")
    everything = service.cost_summary()
    assert everything["groups"] == {"lab-a": pytest.approx(4.4528), "lab-b": pytest.approx(40.48)}
    assert everything["total"] == pytest.approx(44.9328) and len(everything["executions"]) == 3
    december = service.cost_summary(group="lab-a", since="2026-12-01")
    assert (
        december["groups"] == {"lab-a": pytest.approx(4.048)}
        and december["since"] == "2026-12-01T00:00:00.000Z"
    )
    with pytest.raises(JobError, match="ISO 8601"):
        service.cost_summary(since="last tuesday")


def test_a_dispatch_over_the_groups_budget_is_refused_and_nothing_changes():
    service = make_service(jobs_budgets={"lab-a": 1.0}, jobs_budget_period="all")
    _spent(service.store, "lab-a", 30, "2026-12-01T05:00:00.000Z")  # 1.21 spent
    job = service.create("script", {"name": "n"}, group="lab-a")
    with unchanged(service, job.id) as refused:
        service.signal(job.id, "DISPATCH")
    message = str(refused.value)
    assert "group 'lab-a' is over its budget: 1.2144 USD spent of 1 USD in all" in message
    assert "nothing was dispatched" in message and service.dispatcher.runs == []
    other = service.create("script", {"name": "n"}, group="lab-b")  # no budget: dispatched
    assert service.signal(other.id, "DISPATCH").state == "DISPATCHED"


def test_the_estimate_counts_against_the_budget():
    service = make_service(jobs_budget=1.0)
    cheap = service.create(
        "script", {"name": "n"}, estimations={"cpu": 1, "memoryMiB": 1024, "expectedSeconds": 3600}
    )
    assert service.signal(cheap.id, "DISPATCH").placement["estimate"]["amount"] == pytest.approx(0.044925)
    dear = service.create(
        "script", {"name": "n"}, estimations={"cpu": 4, "memoryMiB": 8192, "expectedSeconds": 36000}
    )
    with unchanged(service, dear.id) as refused:
        service.signal(dear.id, "DISPATCH")
    assert "estimated at 1.9748 USD" in str(refused.value)


def test_budget_periods():
    now = datetime(2026, 12, 2, 14, 5, tzinfo=UTC)
    assert cost.period_start("month", now) == "2026-12-01T00:00:00.000Z"
    assert cost.period_start("day", now) == "2026-12-02T00:00:00.000Z"
    assert cost.period_start("all", now) is None


# -- CLI ----------------------------------------------------------------------------------------------
@pytest.fixture
def cli_service(monkeypatch):
    from flows.jobs import client

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never contacted
    monkeypatch.setenv("INTERLINKED_DEPLOYMENT_SET", "local")
    service = make_service(jobs_budgets={"poor": 0.0})
    client.set_default_service(service)
    yield service
    client.set_default_service(None)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    from interlinked.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_create_explain_and_cost(cli_service, capsys):
    import json

    code, out, _ = run(
        capsys,
        "jobs",
        "create",
        "script",
        "--input",
        "{}",
        "--estimations",
        '{"memoryMiB": 300}',
        "--explain",
    )
    assert code == 0 and "triage: small → script-job/local" in out and "300 MiB from estimations" in out
    code, out, err = run(
        capsys,
        "jobs",
        "create",
        "script",
        "--input",
        "{}",
        "--group",
        "lab-a",
        "--dispatch",
        "--explain",
        "--json",
    )
    job = json.loads(out)
    assert code == 0 and job["group"] == "lab-a" and job["placement"]["pool"] == "local"
    assert "triage: small" in err
    _spent(cli_service.store, "lab-a", 1, "2026-12-01T05:00:00.000Z")
    code, out, _ = run(capsys, "jobs", "cost", "--group", "lab-a", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["groups"] == {"lab-a": pytest.approx(0.04048)}
    code, out, _ = run(capsys, "jobs", "cost")
    assert code == 0 and "group lab-a: 0.040480" in out and "as of 2024-11-01" in out

    job = cli_service.signal(job["id"], "EXECUTE")
    execution_id = job.current_execution.execution_id
    cli_service.update_execution(job.id, execution_id, checkpoint={"done": 1})
    cli_service.signal_execution(job.id, execution_id, "SUCCESS")
    code, out, _ = run(capsys, "jobs", "show", job.id)
    assert code == 0 and "group: lab-a" in out and "resources: local pool, 1 vCPU, 2048 MiB" in out
    assert "cost: " in out and "checkpoint (" in out and '{"done": 1}' in out


def test_cli_bad_input_exits_2_and_changes_nothing(cli_service, capsys):
    code, _, err = run(capsys, "jobs", "create", "script", "--input", "{}", "--group", "bad group")
    assert code == 2 and "a group must be" in err and cli_service.list() == []
    code, _, err = run(capsys, "jobs", "cost", "--since", "yesterday")
    assert code == 2 and "ISO 8601" in err
    code, out, _ = run(capsys, "jobs", "create", "script", "--input", "{}", "--group", "poor")
    job_id = out.strip()
    code, _, err = run(capsys, "jobs", "dispatch", job_id)
    assert code == 2 and "over its budget" in err
    assert cli_service.get(job_id).state == "CREATED" and cli_service.dispatcher.runs == []
