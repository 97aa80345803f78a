"""A script job's code on the stack (emulator enforcing IAM): what it can reach is its own keys.

The script is ordinary user code: it calls boto3 with whatever its environment gives it. Every
"denied" here is the emulator's AccessDenied for the job's STS session (the script-job role with the
job's session policy, :mod:`flows.script_jobs.scoped`), not a check of ours.
"""

from __future__ import annotations

import json
import uuid

import pytest

from _stack import put_scripts, run_cli

pytestmark = pytest.mark.integration

PROBE = """
    import json
    import os

    import boto3
    from botocore.exceptions import ClientError


    def probe(args):
        s3 = boto3.client("s3")
        job = os.environ["LAMBDA_JOB_ID"]
        data, analysis = args["data"], args["analysis"]

        def code(call):
            try:
                call()
            except ClientError as error:
                return error.response["Error"]["Code"]
            return "OK"

        return {
            "own_spec": code(lambda: s3.get_object(Bucket=data, Key=f"jobs/{job}.json")),
            "own_output": code(lambda: s3.put_object(Bucket=data, Key=f"results/{job}/extra.txt", Body=b"mine")),
            "other_result": code(lambda: s3.get_object(Bucket=data, Key=args["other_result"])),
            "overwrite_other_result": code(
                lambda: s3.put_object(Bucket=data, Key=args["other_result"], Body=b"overwritten")
            ),
            "other_group_input": code(lambda: s3.get_object(Bucket=analysis, Key=args["group_input"])),
            "budget_ledger": code(lambda: s3.get_object(Bucket=args["ledger_bucket"], Key=args["ledger"])),
            "list_data_bucket": code(lambda: s3.list_objects_v2(Bucket=data)),
            "secrets_in_env": sorted(
                name for name in os.environ
                if name.startswith(("PREFECT_", "INTERLINKED_DATABASE")) or name == "AWS_PROFILE"
            ),
            "key_kind": os.environ.get("AWS_ACCESS_KEY_ID", "")[:4],
        }
"""


def test_a_script_job_reaches_only_its_own_keys(stack, tmp_path):
    import boto3

    data, analysis = stack["buckets"]["data"], stack["buckets"]["analysis"]
    s3 = boto3.client("s3")  # the test's own keys: the stack's admin
    other = f"results/{uuid.uuid4()}/result.json"
    s3.put_object(Bucket=data, Key=other, Body=b"42")
    s3.put_object(Bucket=analysis, Key="scope-other-group/inputs/data.csv", Body=b"secret")
    ledger_bucket, ledger = data, "accounting/submissions/scope-other-group.json"
    s3.put_object(Bucket=ledger_bucket, Key=ledger, Body=b"{}")
    put_scripts(s3, data, {"scope/probe.py": PROBE})
    description = {
        "func": "probe",
        "name": "scope-probe",
        "script": "scope/probe.py",
        "arguments": {
            "data": data,
            "analysis": analysis,
            "other_result": other,
            "group_input": "scope-other-group/inputs/data.csv",
            "ledger_bucket": ledger_bucket,
            "ledger": ledger,
        },
    }
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(description))
    result = run_cli("submit", str(path), "--wait")
    assert result.returncode == 0, result.stderr
    job_id, _, value = result.stdout.strip().partition("\n")
    seen = json.loads(value)
    assert seen == {
        "own_spec": "OK",
        "own_output": "OK",
        "other_result": "AccessDenied",
        "overwrite_other_result": "AccessDenied",
        "other_group_input": "AccessDenied",
        "budget_ledger": "AccessDenied",
        "list_data_bucket": "AccessDenied",
        "secrets_in_env": [],
        "key_kind": "ASIA",  # an STS session, not the worker's own user key
    }
    assert s3.get_object(Bucket=data, Key=other)["Body"].read() == b"42"
    assert s3.get_object(Bucket=data, Key=f"results/{job_id}/extra.txt")["Body"].read() == b"mine"


PREFECT_PROBE = """
    import json
    import os
    import urllib.error
    import urllib.request


    def status(url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code


    def probe(args):
        api = args["api"]
        return {
            "health": status(f"{api}/health"),
            "read_runs": status(f"{api}/flow_runs/filter", {"limit": 1}),
            "create_flow": status(f"{api}/flows/", {"name": "from-a-script-job"}),
            "prefect_env": sorted(name for name in os.environ if name.startswith("PREFECT_")),
        }
"""


def test_a_script_job_cannot_drive_the_prefect_api(stack, tmp_path):
    """User code that guesses the stack's Prefect URL (here: is told it) reaches the server, whose
    open health check answers, but every API call is 401: it has no secret. The job succeeds."""
    import boto3

    put_scripts(boto3.client("s3"), stack["buckets"]["data"], {"scope/prefect_probe.py": PREFECT_PROBE})
    path = tmp_path / "prefect_probe.json"
    path.write_text(
        json.dumps(
            {
                "func": "probe",
                "name": "prefect-probe",
                "script": "scope/prefect_probe.py",
                "arguments": {"api": stack["prefect_api_url"]},
            }
        )
    )
    result = run_cli("submit", str(path), "--wait")
    assert result.returncode == 0, result.stderr
    _, _, value = result.stdout.strip().partition("\n")
    assert json.loads(value) == {"health": 200, "read_runs": 401, "create_flow": 401, "prefect_env": []}
