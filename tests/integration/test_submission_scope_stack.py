"""A submission's analysis on the stack (emulator enforcing IAM) reaches only its own keys.

The flow reads a submission's datasets and config and writes its results with a session of the
submission role narrowed to the group and the job (:mod:`flows.submissions.scoped`). Every "denied"
here is the emulator's AccessDenied for that session (botocore's ClientError code), not a check of
ours; the same reads with the flow run's own keys (what the flow used before) succeed.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from test_bridge_fixtures import bridge_env, put_json, read_text, wait_for_object

from _stack import aws_error_code
from blocks.s3 import ObjectStore
from flows.submissions.quotas import ledger_key
from flows.submissions.scoped import scoped_store, session_policy
from flows.submissions.validation import results_prefix
from interlinked.local import identities

pytestmark = pytest.mark.integration

GROUP, OTHER = "scope-a", "scope-b"


@pytest.fixture(scope="module")
def env(stack_handle, aws, tmp_path_factory):
    environment = bridge_env(stack_handle, aws, tmp_path_factory)
    s3, bucket = environment.s3, environment.analysis
    for group in (GROUP, OTHER):
        s3.put_object(Bucket=bucket, Key=f"{group}/inputs/data.csv", Body=b"x,y\n1,2\n3,4\n")
        s3.put_object(Bucket=bucket, Key=f"{group}/inputs/folder/part.csv", Body=b"x\n1\n")
        put_json(
            s3, bucket, f"{group}/configs/describe.json", {"analysis": "describe", "duration_hours": 0.01}
        )
    s3.put_object(Bucket=environment.data, Key=ledger_key(GROUP), Body=b"{}")
    yield environment
    environment.consumer.stop()


def _keys(stack_handle, user: str) -> dict[str, str]:
    from interlinked.settings import Settings

    settings = Settings(state_dir=stack_handle.state_dir)
    return json.loads(identities.credentials_file(settings, user).read_text())


@pytest.fixture(scope="module")
def flow_run_keys(stack_handle) -> dict[str, str]:
    """The flow runs' own identity (the worker's IAM user)."""
    keys = _keys(stack_handle, identities.SERVICE_USERS["worker"])
    return {
        "aws_access_key_id": keys["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": keys["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def as_flow_run(monkeypatch, flow_run_keys):
    """This process assumes roles as a flow run does: its STS caller is the flow-run user."""
    import blocks.clients

    real = blocks.clients.aws_client
    sts = boto3.client("sts", **flow_run_keys)
    monkeypatch.setattr(
        blocks.clients,
        "aws_client",
        lambda service, **options: sts if service == "sts" else real(service, **options),
    )


def _role(stack_handle) -> str:
    return _keys(stack_handle, identities.SUBMISSION_ROLE)["arn"]


def test_a_submissions_session_reaches_only_its_groups_inputs_and_its_own_results(
    env, stack_handle, as_flow_run, flow_run_keys
):
    bucket = env.analysis
    prefix = results_prefix(GROUP, bucket, f"scope-{uuid.uuid4().hex[:8]}")
    store = scoped_store(bucket, session_policy(bucket, GROUP, prefix), group=GROUP, role=_role(stack_handle))
    s3 = store.client
    mine = prefix + "process_results/data_summary.json"
    allowed = {
        "its input": lambda: s3.get_object(Bucket=bucket, Key=f"{GROUP}/inputs/data.csv"),
        "its config": lambda: s3.get_object(Bucket=bucket, Key=f"{GROUP}/configs/describe.json"),
        "its folder dataset": lambda: list(store.keys(f"{GROUP}/inputs/folder/")),
        "its result": lambda: s3.put_object(Bucket=bucket, Key=mine, Body=b"{}"),
        "its result, read back": lambda: s3.get_object(Bucket=bucket, Key=mine),
    }
    assert {what: aws_error_code(call) for what, call in allowed.items()} == dict.fromkeys(allowed, "OK")
    other_job = results_prefix(GROUP, bucket, "scope-other") + "process_results/x.json"
    denied = {
        "another group's input": lambda: s3.get_object(Bucket=bucket, Key=f"{OTHER}/inputs/data.csv"),
        "another group's config": lambda: s3.get_object(Bucket=bucket, Key=f"{OTHER}/configs/describe.json"),
        "listing another group's inputs": lambda: s3.list_objects_v2(
            Bucket=bucket, Prefix=f"{OTHER}/inputs/"
        ),
        "listing the bucket": lambda: s3.list_objects_v2(Bucket=bucket),
        "the budget ledger": lambda: s3.get_object(Bucket=env.data, Key=ledger_key(GROUP)),
        "writing its own certificate": lambda: s3.put_object(
            Bucket=bucket, Key=prefix + "logs/certificate.txt", Body=b"forged"
        ),
        "writing another job's results": lambda: s3.put_object(Bucket=bucket, Key=other_job, Body=b"1"),
        "overwriting its input": lambda: s3.put_object(
            Bucket=bucket, Key=f"{GROUP}/inputs/data.csv", Body=b"0"
        ),
        "writing another group's results": lambda: s3.put_object(
            Bucket=bucket, Key=results_prefix(OTHER, bucket, "t") + "process_results/x", Body=b"1"
        ),
        "deleting its own result": lambda: s3.delete_object(Bucket=bucket, Key=mine),
    }
    assert {what: aws_error_code(call) for what, call in denied.items()} == dict.fromkeys(
        denied, "AccessDenied"
    )
    # The flow run's own keys, which the submission used before, read all of it.
    unscoped = ObjectStore(bucket, boto3.client("s3", **flow_run_keys))
    assert unscoped.read_bytes(f"{OTHER}/inputs/data.csv") == b"x,y\n1,2\n3,4\n"
    assert unscoped.client.get_object(Bucket=env.data, Key=ledger_key(GROUP))["Body"].read() == b"{}"
    assert (
        env.s3.get_object(Bucket=bucket, Key=f"{GROUP}/inputs/data.csv")["Body"].read() == b"x,y\n1,2\n3,4\n"
    )


def _submit(env, timestamp: str, dataname: str = f"{GROUP}/inputs/data.csv") -> str:
    document = {"dataname": dataname, "configname": f"{GROUP}/configs/describe.json", "timestamp": timestamp}
    put_json(env.s3, env.analysis, f"{GROUP}/submissions/{timestamp}.json", document)
    return results_prefix(GROUP, env.analysis, timestamp)


def test_a_submission_runs_with_its_session_and_ends_completed_with_its_results(env):
    prefix = _submit(env, f"scoped-{uuid.uuid4().hex[:8]}", f"{GROUP}/inputs/folder/")
    end = wait_for_object(env.s3, env.analysis, prefix + "process_results/end.txt", consumer=env.consumer)
    certificate = read_text(env.s3, env.analysis, prefix + "logs/certificate.txt")
    assert end.startswith("COMPLETED"), certificate
    assert "credentials: a session of the submission role, limited to scope-a/inputs/" in certificate
    summary = json.loads(read_text(env.s3, env.analysis, prefix + "process_results/part_summary.json"))
    assert summary["describe"]["x"]["max"] == 1.0
    assert read_text(env.s3, env.analysis, prefix + "process_results/describe.json")


def test_results_are_written_by_the_session_not_by_the_flow(env, stack_handle):
    """Take the role's results/ grant away: the submission cannot write its outputs (the session is
    what writes them) while the flow's own records (certificate, end.txt) are still written."""
    iam = boto3.client("iam")
    own = {env.analysis}
    policy = identities.submission_statements(sorted(own))
    withheld = [statement for statement in policy if "s3:PutObject" not in statement["Action"]]
    saved = iam.get_role_policy(RoleName=identities.SUBMISSION_ROLE, PolicyName="main")["PolicyDocument"]
    iam.put_role_policy(
        RoleName=identities.SUBMISSION_ROLE,
        PolicyName="main",
        PolicyDocument=json.dumps({"Version": identities.VERSION, "Statement": withheld}),
    )
    try:
        prefix = _submit(env, f"withheld-{uuid.uuid4().hex[:8]}")
        end = wait_for_object(env.s3, env.analysis, prefix + "process_results/end.txt", consumer=env.consumer)
    finally:
        iam.put_role_policy(
            RoleName=identities.SUBMISSION_ROLE,
            PolicyName="main",
            PolicyDocument=saved if isinstance(saved, str) else json.dumps(saved),
        )
    certificate = read_text(env.s3, env.analysis, prefix + "logs/certificate.txt")
    assert end.startswith("FAILED") and "AccessDenied" in end, certificate
    listed = env.s3.list_objects_v2(Bucket=env.analysis, Prefix=prefix + "process_results/")
    assert [item["Key"] for item in listed.get("Contents", [])] == [prefix + "process_results/end.txt"]


def test_a_timestamp_that_would_widen_the_session_is_refused_saying_why(env):
    """``*`` in the timestamp would make the results grant every job of the group."""
    prefix = _submit(env, "t*")
    end = wait_for_object(env.s3, env.analysis, prefix + "process_results/end.txt", consumer=env.consumer)
    assert end.startswith("REFUSED"), end
    assert "cannot limit this submission's credentials to its own keys" in end and "'*'" in end
