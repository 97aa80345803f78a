"""PyAnamo's manager questions: which instance holds what (``tasks status --by-instance``) and which
leases belong to holders that are gone (``--orphans``: the local process table, Batch DescribeJobs
on the moto server), on both stores."""

from __future__ import annotations

import socket
import subprocess

import boto3
import pytest

from flows.collections.client import instances, orphans, release_orphans
from flows.collections.model import TaskSpec
from flows.collections.store import new_owner, parse_owner


@pytest.fixture(scope="module")
def batch(moto_endpoint):
    return boto3.session.Session().client(
        "batch",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_owner_names_host_pid_batch_job_and_flow_run(monkeypatch):
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "8b0e-41:3")
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "run-1")
    owner = new_owner()
    info = parse_owner(owner)
    assert info["host"] == socket.gethostname()
    assert info["batch_job"] == "8b0e-41:3" and info["flow_run"] == "run-1" and info["pid"] > 0
    assert parse_owner("w") == {"host": "w", "pid": None, "batch_job": None, "flow_run": None}


def test_by_instance_and_orphans(store, batch):
    here = socket.gethostname()
    store.add("inst", [TaskSpec(f"t{i}", "true") for i in range(7)])
    store.add("other", [TaskSpec("x", "true")])
    alive = new_owner()  # this process
    dead = f"{here}:{dead_pid()}:deadbeef"
    gone_job = "ip-10-0-0-1:1:cafe0001|batch=no-such-job:4"
    elsewhere = "some-other-host:4242:abcd0001"
    held = {}
    for owner, count, collection in (
        (alive, 3, "inst"),
        (dead, 2, "inst"),
        (gone_job, 1, "inst"),
        (elsewhere, 1, "other"),
    ):
        held[owner] = store.claim(collection, owner=owner, batch=count, lease_seconds=600)
        assert len(held[owner]) == count

    document = instances(store)
    assert document["leases"] == 7
    by_owner = {entry["owner"]: entry for entry in document["instances"]}
    assert by_owner[alive]["tasks"] == 3 and by_owner[alive]["by_collection"] == {"inst": 3}
    assert by_owner[gone_job]["batch_job"] == "no-such-job:4"
    assert by_owner[elsewhere]["task_ids"] == ["other/x"]
    assert document["instances"][0]["owner"] == alive  # busiest first

    found = orphans(store, batch_client=batch)
    assert found["checked"] == 7 and found["unknown"] == 1
    got = {(o["collection"], o["id"]): o for o in found["orphans"]}
    expected = {("inst", t.id) for t in held[dead] + held[gone_job]}
    assert set(got) == expected
    assert "unknown to Batch" in got[("inst", held[gone_job][0].id)]["reason"]
    assert "is gone" in got[("inst", held[dead][0].id)]["reason"]

    # Ending them: the tasks are todo again at once, the live holders keep theirs.
    assert release_orphans(store, found["orphans"]) == 3
    for task in held[dead] + held[gone_job]:
        assert store.get("inst", task.id).state == "todo"
    for task in held[alive]:
        assert store.get("inst", task.id).state == "locked"
    assert release_orphans(store, found["orphans"]) == 0  # stale tokens: nothing changes twice
    assert orphans(store, ["inst"], batch_client=batch)["orphans"] == []


def test_orphans_ask_batch_whether_the_holders_job_ended(store, batch, moto_endpoint):
    # A lease held by a drain inside a Batch job that exists but ended (moto fails a job it cannot
    # run in a container: FAILED, as DescribeJobs reports it on AWS) is an orphan.
    import time
    import uuid

    iam = boto3.session.Session().client(
        "iam",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    name = f"orphans-{uuid.uuid4().hex[:8]}"
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
    job = batch.submit_job(jobName=name, jobQueue=queue, jobDefinition=name)["jobId"]
    deadline = time.monotonic() + 60
    while batch.describe_jobs(jobs=[job])["jobs"][0]["status"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, "the Batch job never ended"
        time.sleep(0.2)
    status = batch.describe_jobs(jobs=[job])["jobs"][0]["status"]

    store.add("ended", [TaskSpec("a", "true")])
    [task] = store.claim("ended", owner=f"ip-10-0-0-2:1:cafe0002|batch={job}", lease_seconds=600)
    found = orphans(store, ["ended"], batch_client=batch)
    assert [(o["id"], o["reason"]) for o in found["orphans"]] == [("a", f"Batch job {job} is {status}")]
    assert release_orphans(store, found["orphans"]) == 1
    assert store.get("ended", task.id).state == "todo"
