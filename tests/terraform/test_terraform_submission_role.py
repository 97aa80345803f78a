"""modules/compute's submission role (what a submission's analysis reads and writes with on AWS)
against the local one.

Static: the module's HCL read with python-hcl2. The role's S3 statements, with one bucket
substituted, are the ones the local stack's emulator enforces
(``interlinked.local.identities.submission_statements``, tested on the stack in
``tests/integration/test_submission_scope_stack.py``); only the flow-run role may assume it; the flow
runs' environment names it under the variable the flow reads (``flows.submissions.scoped.ROLE_ENV``);
and the root stack creates it for every analysis bucket. The role is the ``submission`` entry of the
module's session roles (``tf_harness.check_session_role``).
"""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from tf_harness import (
    COMPUTE_DIR,
    TF_DIR,
    assert_uses_key_statement,
    blocks,
    check_session_role,
    policy_documents,
)

from flows.submissions.scoped import ROLE_ENV
from interlinked.local.identities import submission_statements

pytestmark = pytest.mark.terraform

BUCKET = "lab-analysis"
ARN = f"arn:aws:s3:::{BUCKET}"


def test_the_role_reaches_the_areas_the_local_role_does_and_nothing_more():
    document = policy_documents(COMPUTE_DIR / "main.tf")["submission"]
    statements = {statement["sid"]: statement for statement in document["statement"]}
    assert set(statements) == {"ListGroupInputs", "ReadGroupInputs", "WriteResults"}
    # The HCL expressions, evaluated for one bucket by hand ...
    assert statements["ListGroupInputs"]["resources"] == "${var.submission_bucket_arns}"
    assert statements["ReadGroupInputs"]["resources"] == (
        '${flatten([for arn in var.submission_bucket_arns : ["${arn}/*/inputs/*", "${arn}/*/configs/*"]])}'
    )
    assert statements["WriteResults"]["resources"] == (
        '${concat([for arn in var.submission_bucket_arns : "${arn}/*/results/*"], var.submission_result_arns)}'
    )
    planned = {
        "ListGroupInputs": ([ARN], ["s3:ListBucket"]),
        "ReadGroupInputs": ([f"{ARN}/*/inputs/*", f"{ARN}/*/configs/*"], ["s3:GetObject"]),
        "WriteResults": ([f"{ARN}/*/results/*"], sorted(statements["WriteResults"]["actions"])),
    }
    # ... are the local role's statements.
    local = submission_statements([BUCKET])
    assert [
        (sorted(s["Resource"]), sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
        for s in local
    ] == [(sorted(resources_), actions) for resources_, actions in planned.values()]
    ((condition,),) = [statements["ListGroupInputs"]["condition"]]
    assert condition == {"test": "StringLike", "variable": "s3:prefix", "values": ["*/inputs/*"]}
    assert local[0]["Condition"] == {"StringLike": {"s3:prefix": ["*/inputs/*"]}}
    # Anything else is the bucket's KMS key, only when one is given.
    assert_uses_key_statement(document)


def test_only_the_flow_run_role_assumes_it_and_flow_runs_are_told_its_arn():
    document = check_session_role(
        "submission",
        name="submission",
        env=ROLE_ENV,
        create="create_submission_role",
        assume_sid="AssumeSubmissionRole",
    )
    assert {statement["sid"] for statement in document["statement"]} == {
        "ListGroupInputs",
        "ReadGroupInputs",
        "WriteResults",
    }


def test_the_root_stack_creates_it_for_every_analysis_bucket():
    (compute,) = [body for name, body in blocks(TF_DIR / "main.tf", "module") if name == "compute"]
    assert compute["create_submission_role"] is True
    buckets = compute["submission_bucket_arns"]
    assert (
        "module.storage.analysis_bucket_arn" in buckets
        and "module.storage.analysis_buckets[name].arn" in buckets
    )
    assert "data_bucket" not in buckets


def _normal(statement: dict) -> tuple:
    """A statement as comparable data: actions and resources as sorted lists, its condition."""

    def listed(value):
        return sorted([value] if isinstance(value, str) else value)

    condition = {
        test: {name: listed(values) for name, values in body.items()}
        for test, body in statement.get("Condition", {}).items()
    }
    return (listed(statement["Action"]), listed(statement["Resource"]), json.dumps(condition, sort_keys=True))


def test_the_applied_role_has_the_local_roles_statements_and_the_flow_runs_trust(terraform_local_stack):
    """examples/local applied: the rendered policy (the for-expressions evaluated by Terraform) is
    the local role's for the stack's analysis bucket(s), and the trust names the flow-run role."""
    stack = terraform_local_stack
    arn = stack.outputs["submission_role_arn"]
    iam = stack.client("iam")
    name = arn.rsplit("/", 1)[-1]
    document = iam.get_role_policy(RoleName=name, PolicyName="submission")["PolicyDocument"]
    document = json.loads(unquote(document)) if isinstance(document, str) else document
    analysis = [stack.env["buckets"]["analysis"], *(stack.env.get("analysis_buckets") or {}).values()]
    rendered = sorted(_normal(s) for s in document["Statement"] if not s["Action"][0].startswith("kms:"))
    assert rendered == sorted(_normal(s) for s in submission_statements(sorted(set(analysis))))
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(unquote(trust)) if isinstance(trust, str) else trust
    (principal,) = [s["Principal"]["AWS"] for s in trust["Statement"]]
    assert principal.endswith("-flow-run"), principal
