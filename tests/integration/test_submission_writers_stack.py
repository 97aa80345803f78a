"""The writer check on the real stack: a submit file is accepted only from its group's identity.

Group identities are made the way users make them (``interlinked groups add``: an IAM user on the
emulator, recorded in the group registry ``s3://{data}/groups/{group}.json``). The emulator
enforces IAM, so group B cannot normally write group A's prefix; here B's user is misconfigured
with an extra policy allowing A's ``submissions/``, which the emulator honours, and the writer
check (the emulator's ``userIdentity.principalId`` → the bridge → ``process_submission``'s
``writer``) is what refuses the upload.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest
from test_bridge_fixtures import (
    bridge_env,
    final_run_for_key,
    listing,
    put_json,
    read_text,
    runs_for_key,
    wait_for_object,
)

from _stack import cli_json

pytestmark = pytest.mark.integration

A, B = "lab-wa", "lab-wb"
TIMESTAMP = "writer-check"


@pytest.fixture(scope="module")
def env(stack_handle, aws, tmp_path_factory):
    environment = bridge_env(stack_handle, aws, tmp_path_factory)
    yield environment
    environment.consumer.stop()


@pytest.fixture(scope="module")
def groups(env):
    """Both groups' keys (``interlinked groups add --json``) and their IAM UserIds."""
    made = {group: cli_json("groups", "add", group) for group in (A, B)}
    iam = boto3.client("iam")
    for described in made.values():
        described["user_id"] = iam.get_user(UserName=described["user"])["User"]["UserId"]
        described["s3"] = boto3.client(
            "s3",
            aws_access_key_id=described["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=described["AWS_SECRET_ACCESS_KEY"],
        )
        assert described["bucket"] == env.analysis
    return made


def _final_run(env, key: str, timeout: float = 120):
    """The run the bridge started for ``key``, once it has ended."""
    deadline = time.monotonic() + timeout
    while not runs_for_key(key):
        assert time.monotonic() < deadline, f"no run for {key}; bridge log:\n{env.consumer.log()[-2500:]}"
        time.sleep(0.3)
    return final_run_for_key(key, timeout=max(1.0, deadline - time.monotonic()))


def _end(env, prefix: str) -> str:
    return wait_for_object(env.s3, env.analysis, prefix + "process_results/end.txt", consumer=env.consumer)


def test_groups_add_records_the_identity_in_the_registry(env, groups):
    record = json.loads(read_text(env.s3, env.data, f"groups/{A}.json"))
    assert record["group"] == A and record["principal_ids"] == [groups[A]["user_id"]]
    # the flow runs read it, and cannot change it
    from interlinked.local.identities import SERVICE_USERS, credentials_file
    from interlinked.settings import get_settings

    keys = json.loads(credentials_file(get_settings(), SERVICE_USERS["worker"]).read_text())
    worker = boto3.client(
        "s3", aws_access_key_id=keys["AWS_ACCESS_KEY_ID"], aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"]
    )
    assert json.loads(worker.get_object(Bucket=env.data, Key=f"groups/{A}.json")["Body"].read()) == record
    with pytest.raises(worker.exceptions.ClientError, match="AccessDenied"):
        worker.put_object(Bucket=env.data, Key=f"groups/{B}.json", Body=b"{}")


def test_a_groups_own_identity_submits_and_it_runs(env, groups):
    s3 = groups[A]["s3"]
    s3.put_object(Bucket=env.analysis, Key=f"{A}/inputs/table.csv", Body=b"a,b\n1,2\n3,4\n")
    put_json(s3, env.analysis, f"{A}/configs/describe.json", {"analysis": "describe"})
    key = f"{A}/submissions/own.json"
    put_json(
        s3,
        env.analysis,
        key,
        {
            "dataname": f"{A}/inputs/table.csv",
            "configname": f"{A}/configs/describe.json",
            "timestamp": TIMESTAMP,
        },
    )
    prefix = f"{A}/results/job__{env.analysis}_{TIMESTAMP}/"
    assert _end(env, prefix).startswith("COMPLETED")
    run = _final_run(env, key)
    assert run.parameters["writer"] == f"AWS:{groups[A]['user_id']}"  # emulator → bridge → flow
    certificate = read_text(env.s3, env.analysis, prefix + "logs/certificate.txt")
    assert f"written by AWS:{groups[A]['user_id']}, the identity of group '{A}'" in certificate


def test_another_groups_identity_under_this_prefix_is_refused_and_nothing_else_changes(env, groups):
    """B's user, given (by mistake) a policy allowing A's submissions/, uploads a submit file there
    with the timestamp of A's finished job: refused by the writer check, in a folder of its own;
    A's job folder, inputs and configs are as they were, and nothing ran."""
    own_prefix = f"{A}/results/job__{env.analysis}_{TIMESTAMP}/"
    _end(env, own_prefix)  # A's job has ended (the test above)
    boto3.client("iam").put_user_policy(
        UserName=groups[B]["user"],
        PolicyName="misconfigured",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{env.analysis}/{A}/submissions/*",
                    }
                ],
            }
        ),
    )
    before = listing(env.s3, env.analysis, f"{A}/")
    key = f"{A}/submissions/from-b.json"
    put_json(
        groups[B]["s3"],  # the emulator lets it through: the policy allows it
        env.analysis,
        key,
        {
            "dataname": f"{A}/inputs/table.csv",
            "configname": f"{A}/configs/describe.json",
            "timestamp": TIMESTAMP,
        },
    )
    run = _final_run(env, key)
    b_principal = f"AWS:{groups[B]['user_id']}"
    assert run.parameters["writer"] == b_principal
    assert run.state.name == "Refused", run.state.message
    assert f"written by the identity of group '{B}', not '{A}'" in run.state.message

    after = listing(env.s3, env.analysis, f"{A}/")
    added = sorted(set(after) - set(before))
    [refusal] = {k.split("/")[2] for k in added if k.startswith(f"{A}/results/")}
    assert refusal.startswith(f"job__{env.analysis}_{TIMESTAMP}__refused-")
    assert all(k == key or k.startswith(f"{A}/results/{refusal}/") for k in added), added
    assert {k: v for k, v in after.items() if k in before} == before  # A's job, inputs, configs
    end = read_text(env.s3, env.analysis, f"{A}/results/{refusal}/process_results/end.txt")
    certificate = read_text(env.s3, env.analysis, f"{A}/results/{refusal}/logs/certificate.txt")
    assert end.startswith("REFUSED") and f"group '{B}', not '{A}'" in end
    assert f"written by the identity of group '{B}', not '{A}' ({b_principal})" in certificate
    assert not any("STATUS.txt" in k for k in added)  # no dataset ran
