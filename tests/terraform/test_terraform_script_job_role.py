"""modules/compute's script-job role (what a script job's code runs as on AWS) against the local one.

Static: the module's HCL read with python-hcl2. The role's S3 statement, with the bucket
substituted, is the one the local stack's emulator enforces (``interlinked.local.identities
.script_job_role_policy``, tested against the emulator in ``tests/integration/test_emulator_iam.py``);
only the flow-run role may assume it; and the flow runs' environment names it under the variable
the flow reads (``flows.script_jobs.scoped.ROLE_ENV``). That a script really runs as this role is
tested on the applied stack in ``test_script_job_on_terraform_stack.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_terraform_checks import blocks, parse, resources
from tf_harness import TF_DIR

from flows.script_jobs.scoped import ROLE_ENV
from interlinked.local.identities import script_job_role_policy

pytestmark = pytest.mark.terraform

MODULE = TF_DIR / "modules" / "compute"
BUCKET = "lab-data"


def _documents() -> dict[str, dict]:
    return {
        name: body
        for kind, found in blocks(MODULE / "main.tf", "data")
        if kind == "aws_iam_policy_document"
        for name, body in found.items()
    }


def _locals() -> dict:
    merged: dict = {}
    for body in parse(MODULE / "main.tf").get("locals", []):
        merged.update(body)
    return merged


def test_the_role_reaches_the_script_job_keys_the_local_role_does_and_nothing_more():
    statements = _documents()["script_job"]["statement"]
    (s3,) = [statement for statement in statements if statement["sid"] == "ScriptJobKeys"]
    prefixes = _locals()["script_job_prefixes"]
    planned = sorted(f"arn:aws:s3:::{BUCKET}/{prefix}*" for prefix in prefixes)
    assert (
        s3["resources"]
        == '${[for prefix in local.script_job_prefixes : "${var.script_job_bucket_arn}/${prefix}*"]}'
    )
    (local,) = script_job_role_policy(SimpleNamespace(data_bucket=BUCKET))["Statement"]
    assert sorted(local["Resource"]) == planned
    assert sorted(s3["actions"]) == sorted(local["Action"])
    # Anything else is the bucket's KMS key, only when one is given.
    assert len(statements) == 1
    ((dynamic,),) = [entry.values() for entry in _documents()["script_job"]["dynamic"]]
    assert dynamic["content"][0]["actions"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert dynamic["for_each"] == "${var.kms_key_arn == null ? [] : [var.kms_key_arn]}"


def test_only_the_flow_run_role_assumes_it_and_flow_runs_are_told_its_arn():
    (assume,) = _documents()["script_job_assume"]["statement"]
    assert assume["actions"] == ["sts:AssumeRole"]
    assert assume["principals"] == [{"type": "AWS", "identifiers": ["${aws_iam_role.flow_run.arn}"]}]
    (may_assume,) = _documents()["flow_run_assume_script_job"]["statement"]
    assert may_assume["resources"] == ["${aws_iam_role.script_job[0].arn}"]
    found = {(rtype, name): body for rtype, name, body in resources(MODULE / "main.tf")}
    assert (
        found[("aws_iam_role_policy", "flow_run_assume_script_job")]["role"] == "${aws_iam_role.flow_run.id}"
    )
    environment = _locals()["script_job_environment"]
    assert f"{ROLE_ENV} = aws_iam_role.script_job[0].arn" in environment.replace('"', "")
    main = (MODULE / "main.tf").read_text()
    outputs = (MODULE / "outputs.tf").read_text()
    assert "local.script_job_environment," in main  # Batch jobs' environment
    assert "env                       = merge(local.script_job_environment," in outputs  # ECS work pool
