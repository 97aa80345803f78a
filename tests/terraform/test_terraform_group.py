"""modules/group (a group's role on AWS) against the local identity (``interlinked groups add``).

Static: the module's HCL read with python-hcl2. Its S3 statements, with the bucket and prefix
substituted, are exactly the ones the emulator enforces for a group locally
(``interlinked.local.identities.group_policy``, tested against the emulator in
``tests/integration/test_emulator_iam.py``), and nothing in it reaches beyond the group's prefix.
Validation, fmt and checkov of the module run in test_terraform_checks.py.
"""

from __future__ import annotations

import pytest
from test_terraform_checks import blocks, resources
from tf_harness import TF_DIR

from interlinked.local.identities import group_policy

pytestmark = pytest.mark.terraform

MODULE = TF_DIR / "modules" / "group"
BUCKET, GROUP = "lab-bucket", "lab-a"


def _documents() -> dict[str, dict]:
    return {
        name: body
        for kind, found in blocks(MODULE / "main.tf", "data")
        if kind == "aws_iam_policy_document"
        for name, body in found.items()
    }


def _substitute(value: str) -> str:
    return value.replace("${local.bucket_arn}", f"arn:aws:s3:::{BUCKET}").replace(
        "${local.prefix}", f"{GROUP}/"
    )


def _normalise(statement: dict) -> tuple:
    actions = statement.get("actions") or statement.get("Action")
    resource = statement.get("resources") or statement.get("Resource")
    actions = sorted([actions] if isinstance(actions, str) else actions)
    resource = sorted(_substitute(r) for r in ([resource] if isinstance(resource, str) else resource))
    if "condition" in statement:
        ((condition),) = statement["condition"]
        conditions = {
            condition["test"]: {condition["variable"]: sorted(_substitute(v) for v in condition["values"])}
        }
    else:
        conditions = {
            op: {key: sorted(values) for key, values in keys.items()}
            for op, keys in (statement.get("Condition") or {}).items()
        }
    return tuple(actions), tuple(resource), repr(conditions)


def test_the_role_has_the_local_group_policy_and_nothing_more():
    terraform = sorted(_normalise(s) for s in _documents()["group"]["statement"])
    local = sorted(_normalise(s) for s in group_policy(BUCKET, GROUP)["Statement"])
    assert terraform == local


def test_every_object_statement_stays_under_the_prefix():
    for statement in _documents()["group"]["statement"]:
        for resource in statement["resources"]:
            assert resource == "${local.bucket_arn}" or resource.startswith(
                "${local.bucket_arn}/${local.prefix}"
            )
            assert "*" not in resource.split("}", 2)[-1].rstrip("*")  # wildcards only at the end


def test_only_the_trusted_principals_assume_it_and_it_is_tagged_with_the_group():
    (assume,) = _documents()["assume"]["statement"]
    assert assume["actions"] == ["sts:AssumeRole"]
    assert assume["principals"] == [{"type": "AWS", "identifiers": "${var.trusted_principal_arns}"}]
    found = {(rtype, name): body for rtype, name, body in resources(MODULE / "main.tf")}
    assert (
        found[("aws_iam_role", "this")]["assume_role_policy"] == "${data.aws_iam_policy_document.assume.json}"
    )
    assert found[("aws_iam_role_policy_attachment", "this")]["policy_arn"] == "${aws_iam_policy.this.arn}"
    assert "interlinked:group" in MODULE.joinpath("main.tf").read_text()
