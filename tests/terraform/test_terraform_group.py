"""modules/group (a group's role on AWS) against the local identity (``interlinked groups add``).

Static: the module's HCL read with python-hcl2. Its S3 statements, with the bucket and prefix
substituted, are exactly the ones the emulator enforces for a group locally
(``interlinked.local.identities.group_policy``, tested against the emulator in
``tests/integration/test_emulator_iam.py``), and nothing in it reaches beyond the group's prefix.
The group registry: the module records its role's unique id at
``s3://{registry_bucket}/groups/{group}.json`` as ``interlinked groups add`` records the local user,
checked statically and by applying the module on a private moto server, where the record is read
back with the flow's own reader (``flows.submissions.writers``) and names the role's RoleId.
Validation, fmt and checkov of the module run in test_terraform_checks.py.
"""

from __future__ import annotations

import json
import textwrap

import boto3
import pytest
from test_terraform_checks import blocks, parse, resources
from tf_harness import TF_DIR, copy_tree, moto_provider, policy_documents, private_moto

from flows.submissions.writers import REGISTRY_PREFIX, check_writer, load_registry, registry_key
from interlinked.local.identities import group_policy

pytestmark = pytest.mark.terraform

MODULE = TF_DIR / "modules" / "group"
BUCKET, GROUP = "lab-bucket", "lab-a"


def _documents() -> dict[str, dict]:
    return policy_documents(MODULE / "main.tf")


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


# ---- the group registry -------------------------------------------------------------------------


def test_the_role_is_recorded_where_the_writer_check_reads_it():
    found = {(rtype, name): body for rtype, name, body in resources(MODULE / "main.tf")}
    record = found[("aws_s3_object", "registry")]
    assert record["bucket"] == "${var.registry_bucket}"
    assert record["key"] == "groups/${var.group}.json" == registry_key("${var.group}")
    assert record["key"].startswith(REGISTRY_PREFIX)
    content = record["content"]
    for field in ("group = var.group", "principal_ids = [aws_iam_role.this.unique_id]"):
        assert field in content.replace('"', "")
    variables = {name for name, _ in blocks(MODULE / "variables.tf", "variable")}
    assert "registry_bucket" in variables


def test_the_flow_run_role_may_not_write_the_registry():
    """modules/compute: the flow-run role writes the data bucket, but not groups/ (an explicit deny,
    as the local flow-run user has: interlinked.local.identities.service_policies)."""
    documents = {
        name: body
        for kind, found in blocks(TF_DIR / "modules" / "compute" / "main.tf", "data")
        if kind == "aws_iam_policy_document"
        for name, body in found.items()
    }
    [deny] = [
        entry["statement"]["content"][0]
        for entry in documents["flow_run"]["dynamic"]
        if entry["statement"]["content"][0].get("sid") == "GroupRegistryReadOnly"
    ]
    assert deny["effect"] == "Deny" and deny["resources"] == ["${statement.value}/" + REGISTRY_PREFIX + "*"]
    assert {"s3:PutObject", "s3:DeleteObject"} <= set(deny["actions"])
    root = parse(TF_DIR / "main.tf")
    [compute] = [body for entry in root["module"] for name, body in entry.items() if name == "compute"]
    assert compute["group_registry_bucket_arn"] == "${module.storage.data_bucket_arn}"


WRAPPER = (
    moto_provider(["iam", "s3", "sts"])
    + """
module "group" {{
  source = "{module}"

  group                  = "{group}"
  bucket_name            = "{bucket}"
  registry_bucket        = "{registry}"
  trusted_principal_arns = ["arn:aws:iam::123456789012:root"]
}}
"""
)


def test_applied_the_record_names_the_roles_unique_id(terraform, tmp_path_factory):
    with private_moto(tmp_path_factory.mktemp("moto-group")) as endpoint:
        client = {
            name: boto3.client(
                name,
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="test",
                aws_secret_access_key="test",
            )
            for name in ("s3", "iam")
        }
        for bucket in (BUCKET, "lab-data"):
            client["s3"].create_bucket(Bucket=bucket)
        work = tmp_path_factory.mktemp("tf-group") / "work"
        copied = copy_tree(work.parent / "terraform")
        work.mkdir()
        (work / "main.tf").write_text(
            textwrap.dedent(WRAPPER).format(
                endpoint=endpoint,
                module=(copied / "modules" / "group").as_posix(),
                group=GROUP,
                bucket=BUCKET,
                registry="lab-data",
            )
        )
        terraform.init(work)
        terraform.run(work, "apply", "-auto-approve", "-no-color", "-input=false", timeout=300)
        role = client["iam"].get_role(RoleName=f"interlinked-group-{GROUP}")["Role"]

        class Store:  # blocks.s3.ObjectStore's two reads, on the moto server
            def keys(self, prefix):
                listed = client["s3"].list_objects_v2(Bucket="lab-data", Prefix=prefix)
                return iter(item["Key"] for item in listed.get("Contents", []))

            def read_bytes(self, key):
                return client["s3"].get_object(Bucket="lab-data", Key=key)["Body"].read()

        record = json.loads(Store().read_bytes(registry_key(GROUP)))
        assert record == {
            "group": GROUP,
            "principal_ids": [role["RoleId"]],
            "arn": role["Arn"],
            "source": "terraform modules/group",
        }
        registry = load_registry(Store())
        assert registry.problems == ()
        # what S3 names as the writer when someone uploads with the role: AWS:<RoleId>:<session>
        writer = f"AWS:{role['RoleId']}:alice"
        assert check_writer(writer, GROUP, registry).refusal is None
        assert f"group '{GROUP}', not 'lab-b'" in check_writer(writer, "lab-b", registry).refusal
