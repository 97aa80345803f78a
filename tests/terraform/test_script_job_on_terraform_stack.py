"""A script job runs through the resources `terraform apply` of examples/local created in moto.

The Terraform outputs are turned into the blocks the flows load by name with
`interlinked.local.provision.save_blocks` (README "Path to real AWS", step 3), then the real `script-job`
flow runs: it reads its spec and script from the Terraform data bucket, writes the result, the log
and its Prefect result there, and publishes the final state to the Terraform job_events topic,
whose Terraform-created subscriber queue receives it.

The flow runs in a child process against its own throw-away Prefect API (Prefect's ephemeral
server in a temporary PREFECT_HOME): the blocks have fixed names, and saving them on the session's
Prefect server would repoint the session stack's flows, worker and services at this moto server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from tf_harness import REPO

pytestmark = pytest.mark.terraform

SCRIPT = """\
import os

import boto3


def main(arguments):
    print("adding", arguments["a"], "and", arguments["b"])
    # The script's own AWS session: the Terraform script-job role, assumed for this job.
    identity = boto3.client("sts").get_caller_identity()["Arn"]
    spec = boto3.client("s3").get_object(Bucket=os.environ["INTERLINKED_DATA_BUCKET"], Key=arguments["spec"])
    return {
        "sum": arguments["a"] + arguments["b"],
        "label": arguments["label"],
        "identity": identity,
        "spec_bytes": len(spec["Body"].read()),
    }
"""

RUNNER = """\
import json, sys

from interlinked.local.provision import Resources, save_blocks

doc = json.loads(sys.argv[1])
save_blocks(Resources(**doc["resources"]), endpoint_url=doc["endpoint_url"], credentials=doc["credentials"])

from flows.script_jobs.flow import script_job

state = script_job(doc["job_id"], return_state=True)
print("FINAL-STATE " + json.dumps({"type": state.type.value, "message": state.message}))
"""


def flow_env(stack, tmp_path) -> dict[str, str]:
    """The child's environment: the Terraform moto server, no session Prefect/AWS/interlinked settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "INTERLINKED_"))}
    env.update(stack.client_env)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        INTERLINKED_STATE_DIR=str(tmp_path / "state"),
        # The settings of the Terraform stack, as interlinked/settings.py names them.
        INTERLINKED_DATA_BUCKET=stack.env["buckets"]["data"],
        INTERLINKED_ANALYSIS_BUCKET=stack.env["buckets"]["analysis"],
        INTERLINKED_WORK_QUEUE=stack.outputs["work_queue_name"],
        # What the Terraform flow-run environment sets (modules/compute: script_job_role_arn).
        INTERLINKED_SCRIPT_JOB_ROLE_ARN=stack.outputs["script_job_role_arn"],
    )
    return env


def receive_event(sqs, url: str, job_id: str, timeout: float = 20) -> dict:
    """The job event of `job_id` from a subscriber queue (raw delivery: the body is the event)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            try:
                event = json.loads(message["Body"])
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("job_id") == job_id:
                return event
            seen.append(message["Body"][:200])
    raise AssertionError(f"no job event for {job_id} on {url} within {timeout} s; other messages: {seen}")


def test_script_job_runs_through_the_terraform_resources(terraform_local_stack, tmp_path):
    stack, out = terraform_local_stack, terraform_local_stack.outputs
    s3, sqs = stack.client("s3"), stack.client("sqs")
    bucket = stack.env["buckets"]["data"]
    job_id = str(uuid.uuid4())
    script_key = f"terraform-e2e/{job_id}/add.py"

    s3.put_object(Bucket=bucket, Key=f"scripts/{script_key}", Body=SCRIPT.encode())
    spec = {
        "name": "terraform-e2e",
        "script": script_key,
        "func": "main",
        "arguments": {"a": 2, "b": 3, "label": "through terraform", "spec": f"jobs/{job_id}.json"},
    }
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_id}.json", Body=json.dumps(spec).encode())

    document = {
        "job_id": job_id,
        "endpoint_url": stack.endpoint_url,
        "credentials": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
        # Every address from the Terraform outputs: nothing is typed twice.
        "resources": {
            "region": stack.env["region"],
            "buckets": stack.env["buckets"],
            "queues": stack.env["queues"],
            "dead_letter_queues": {"work": out["dlq_urls"]["work"], "events": out["dlq_urls"]["events"]},
            "topics": stack.env["topics"],
        },
    }
    runner = tmp_path / "run_script_job.py"
    runner.write_text(RUNNER)
    proc = subprocess.run(
        [sys.executable, str(runner), json.dumps(document)],
        capture_output=True,
        text=True,
        env=flow_env(stack, tmp_path),
        cwd=REPO,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    final = [line for line in proc.stdout.splitlines() if line.startswith("FINAL-STATE ")]
    assert proc.returncode == 0 and final, f"the flow did not finish ({proc.returncode}):\n{output[-6000:]}"
    state = json.loads(final[-1].removeprefix("FINAL-STATE "))
    assert state["type"] == "COMPLETED", f"{state}\n{output[-6000:]}"

    # The result and the log, in the Terraform bucket.
    result = json.loads(s3.get_object(Bucket=bucket, Key=f"results/{job_id}/result.json")["Body"].read())
    identity = result.pop("identity")
    assert result == {"sum": 5, "label": "through terraform", "spec_bytes": len(json.dumps(spec))}
    # The script ran as the Terraform script-job role, in a session of its own job.
    assert identity.endswith(f"assumed-role/{out['script_job_role_arn'].rsplit('/', 1)[-1]}/job-{job_id}")
    log = s3.get_object(Bucket=bucket, Key=f"logs/{job_id}.log")["Body"].read().decode()
    assert "adding 2 and 3" in log

    # The final state, through the Terraform job_events topic to its Terraform subscriber queue.
    event = receive_event(sqs, out["topic_subscriber_queue_urls"]["job_events"], job_id)
    assert event["type"] == "JobEvent"
    assert event["state"] == "COMPLETED"
    assert event["name"] == "terraform-e2e"
    assert event["result"] == f"s3://{bucket}/results/{job_id}/result.json"
    assert event["spec"] == f"s3://{bucket}/jobs/{job_id}.json"
    assert event["flow_run_id"]

    # The flow's own Prefect result went to the Terraform bucket too (result storage block).
    stored = s3.list_objects_v2(Bucket=bucket, Prefix="prefect-results/").get("KeyCount", 0)
    assert stored >= 1
