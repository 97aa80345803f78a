"""modules/tasks_table (the DynamoDB table of task collections) and its wiring in the root stack.

Static: the module's HCL read with python-hcl2 (on-demand, encrypted with the given key, point-in-time
recovery, the store's key schema and its three indexes, compared with ``flows.collections.dynamodb``).
Plan: the root stack with enable_tasks_table and a customer key, planned against a private moto
server that only answers the data sources. Apply: examples/local (the session's
``terraform_local_stack``) creates the table on moto; its real shape is read back with boto3, the
store runs on it as Terraform made it, and the flow runs' job definition and role point at it.
Validation, fmt and checkov of the module run in test_terraform_checks.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_terraform_checks import blocks, parse, resources
from tf_harness import TF_DIR, copy_tree, moto_provider, private_moto

from flows.collections import dynamodb as store_module

pytestmark = pytest.mark.terraform

MODULE = TF_DIR / "modules" / "tasks_table"
KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0b6f0bd8-8f4e-4c39-9ad4-5a1f3e5d9a10"
STORE_INDEXES = {name: {"hash_key": h, "range_key": r} for name, (h, r) in store_module.INDEXES.items()}
STORE_ACTIONS = {
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
}


################################################################################
# Static: the module's HCL
################################################################################


def test_table_is_on_demand_encrypted_and_recoverable():
    ((rtype, name, table),) = resources(MODULE / "main.tf")
    assert (rtype, name) == ("aws_dynamodb_table", "this")
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert not {"read_capacity", "write_capacity"} & set(table)
    assert (table["hash_key"], table["range_key"]) == ("pk", "sk")
    assert table["server_side_encryption"] == [{"enabled": True, "kms_key_arn": "${var.kms_key_arn}"}]
    assert table["point_in_time_recovery"] == [{"enabled": True}]
    assert table["ttl"] == [{"attribute_name": "expires_at", "enabled": True}]
    assert table["deletion_protection_enabled"] == "${var.deletion_protection}"
    variables = dict(blocks(MODULE / "variables.tf", "variable"))
    assert variables["deletion_protection"]["default"] is True
    assert variables["kms_key_arn"]["default"] is None


def test_indexes_are_the_ones_the_store_queries():
    (locals_,) = parse(MODULE / "main.tf")["locals"]
    assert locals_["indexes"] == STORE_INDEXES
    # None keyed on the bare state (PyAnamo's hot partition): every hash key is a per-collection
    # shard or the collection, and the state attribute is no index key.
    assert "state" not in {key for index in STORE_INDEXES.values() for key in index.values()}
    ((_, _, table),) = resources(MODULE / "main.tf")
    (gsi,) = [d["global_secondary_index"] for d in table["dynamic"] if "global_secondary_index" in d]
    assert gsi["for_each"] == "${local.indexes}"
    assert gsi["content"][0]["projection_type"] == "ALL"


################################################################################
# Plan of the root stack with enable_tasks_table = true
################################################################################

WRAPPER = (
    moto_provider(["dynamodb", "ec2", "iam", "sts"])
    + """
module "interlinked" {{
  source = "{root}"

  environment     = "plan"
  prefect_api_url = "http://127.0.0.1:4200/api"
  container_image = "interlinked:plan"
  vpc_id          = "vpc-0123456789abcdef0"
  subnet_ids      = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
  enable_bridge   = false
  kms_key_arn     = "{kms_key_arn}"

  enable_tasks_table          = true
  tasks_table_user_role_names = ["ci-runner"]
  tasks_backend               = {tasks_backend}
}}

output "tasks" {{
  description = "The root stack's task-table outputs."
  value = {{
    tasks_table_name = module.interlinked.tasks_table_name
    tasks_table_arn  = module.interlinked.tasks_table_arn
    tasks_backend    = module.interlinked.tasks_backend
  }}
}}
"""
)


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """A private moto server for the data sources of the plan (nothing is created in it)."""
    with private_moto(tmp_path_factory.mktemp("moto-tasks")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def stack_copy(tmp_path_factory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("tf-tasks") / "terraform")


def plan(terraform, stack_copy: Path, endpoint: str, name: str, check: bool = True, tasks_backend="null"):
    """Plan the root stack through a wrapper; the `terraform show -json` document (or the failed run)."""
    work = stack_copy.parent / name
    work.mkdir()
    (work / "main.tf").write_text(
        textwrap.dedent(WRAPPER).format(
            endpoint=endpoint,
            root=stack_copy.as_posix(),
            kms_key_arn=KMS_KEY_ARN,
            tasks_backend=tasks_backend,
        )
    )
    terraform.init(work)
    proc = terraform.run(work, "plan", "-no-color", "-input=false", "-out=tfplan", timeout=300, check=check)
    if not check:
        return proc
    return json.loads(terraform.run(work, "show", "-json", "tfplan", timeout=120).stdout)


@pytest.fixture(scope="module")
def tasks_plan(terraform, stack_copy, moto_endpoint) -> dict:
    return plan(terraform, stack_copy, moto_endpoint, "with-table")


def test_plan_creates_the_table_with_the_key(tasks_plan):
    changes = {change["address"]: change for change in tasks_plan["resource_changes"]}
    table = changes["module.interlinked.module.tasks_table[0].aws_dynamodb_table.this"]["change"]
    assert table["actions"] == ["create"]
    after = table["after"]
    assert after["name"] == "interlinked-plan-tasks"
    assert after["billing_mode"] == "PAY_PER_REQUEST"
    assert (after["hash_key"], after["range_key"]) == ("pk", "sk")
    assert after["server_side_encryption"] == [{"enabled": True, "kms_key_arn": KMS_KEY_ARN}]
    assert after["point_in_time_recovery"][0]["enabled"] is True
    assert after["ttl"] == [{"attribute_name": "expires_at", "enabled": True}]
    assert after["deletion_protection_enabled"] is True
    assert after["tags"]["Project"] == "interlinked" and after["tags"]["Environment"] == "plan"
    attributes = {a["name"]: a["type"] for a in after["attribute"]}
    assert attributes == {
        "pk": "S",
        "sk": "S",
        **{index["hash_key"]: "S" for index in STORE_INDEXES.values()},
        **{index["range_key"]: "N" for index in STORE_INDEXES.values()},
    }
    indexes = {
        gsi["name"]: {"hash_key": gsi["hash_key"], "range_key": gsi["range_key"]}
        for gsi in after["global_secondary_index"]
    }
    assert indexes == STORE_INDEXES
    assert {gsi["projection_type"] for gsi in after["global_secondary_index"]} == {"ALL"}

    outputs = tasks_plan["output_changes"]["tasks"]["after"]
    assert outputs["tasks_table_name"] == "interlinked-plan-tasks"
    # No database in this stack: the flow runs' store is the table.
    assert outputs["tasks_backend"] == "dynamodb"


def test_plan_grants_the_table_to_the_flow_runs_and_named_roles(tasks_plan):
    changes = {change["address"]: change for change in tasks_plan["resource_changes"]}
    users = {
        a: c["change"]
        for a, c in changes.items()
        if a.startswith("module.interlinked.aws_iam_role_policy.tasks_table")
    }
    assert set(users) == {
        'module.interlinked.aws_iam_role_policy.tasks_table["flow_run"]',
        'module.interlinked.aws_iam_role_policy.tasks_table["ci-runner"]',
    }
    assert (
        users['module.interlinked.aws_iam_role_policy.tasks_table["ci-runner"]']["after"]["role"]
        == "ci-runner"
    )
    # The document names the table's ARN: known at apply only.
    assert all(change["after_unknown"]["policy"] is True for change in users.values())
    (document,) = [
        body
        for entry in parse(TF_DIR / "main.tf").get("data", [])
        for rtype, named in entry.items()
        if rtype == "aws_iam_policy_document"
        for name, body in named.items()
        if name == "tasks_table"
    ]
    (statement,) = document["statement"]
    assert set(statement["actions"]) == STORE_ACTIONS, "CreateTable/DeleteTable/Scan stay with Terraform"
    (dynamic,) = document["dynamic"]
    (key,) = dynamic["statement"]["content"]
    assert key["condition"][0]["values"] == ["dynamodb.${data.aws_region.current.name}.amazonaws.com"]


def test_plan_with_an_unknown_backend_is_refused(terraform, stack_copy, moto_endpoint):
    proc = plan(terraform, stack_copy, moto_endpoint, "bad-backend", check=False, tasks_backend='"mysql"')
    assert proc.returncode != 0
    assert 'tasks_backend must be "postgres", "dynamodb" or null' in proc.stdout + proc.stderr


################################################################################
# Apply: examples/local on moto
################################################################################


def test_applied_table_has_the_store_shape(terraform_local_stack):
    tf = terraform_local_stack
    name = tf.outputs["tasks_table_name"]
    assert name == "interlinked-local-tasks"
    assert tf.outputs["tasks_backend"] == "dynamodb"
    client = tf.client("dynamodb")
    table = client.describe_table(TableName=name)["Table"]
    assert table["TableArn"] == tf.outputs["tasks_table_arn"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    indexes = {
        index["IndexName"]: {
            "hash_key": next(k["AttributeName"] for k in index["KeySchema"] if k["KeyType"] == "HASH"),
            "range_key": next(k["AttributeName"] for k in index["KeySchema"] if k["KeyType"] == "RANGE"),
        }
        for index in table["GlobalSecondaryIndexes"]
    }
    assert indexes == STORE_INDEXES
    assert {index["Projection"]["ProjectionType"] for index in table["GlobalSecondaryIndexes"]} == {"ALL"}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert {types[i["range_key"]] for i in STORE_INDEXES.values()} == {"N"}
    assert table["SSEDescription"]["Status"] == "ENABLED"
    backups = client.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    tags = {t["Key"]: t["Value"] for t in client.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]}
    assert tags["Project"] == "interlinked" and tags["ManagedBy"] == "terraform"


def test_store_runs_on_the_terraform_table(terraform_local_stack):
    from flows.collections.dynamodb import DynamoTaskStore
    from flows.collections.model import TaskSpec

    tf = terraform_local_stack
    client = tf.client("dynamodb")
    store = DynamoTaskStore(tf.outputs["tasks_table_name"], client=client)
    store.ensure()  # finds the table: nothing created, nothing changed
    assert client.list_tables()["TableNames"].count(tf.outputs["tasks_table_name"]) == 1
    store.add("tf-check", [TaskSpec(f"s{i}", "true") for i in range(5)])
    claimed = store.claim("tf-check", owner="tf-test", batch=3)
    assert len(claimed) == 3
    for task in claimed[:2]:
        store.complete("tf-check", task.id, task.lease_token)
    store.fail("tf-check", claimed[2].id, claimed[2].lease_token, error="boom")
    status = store.status("tf-check")["tf-check"]
    assert (status.todo, status.locked, status.done, status.failed) == (2, 0, 2, 1)
    assert status.failures[0]["error"] == "boom"  # read through the sparse "failed" index
    assert store.delete("tf-check") == 5


def test_flow_runs_find_the_table(terraform_local_stack):
    tf = terraform_local_stack
    batch = tf.client("batch")
    (definition,) = batch.describe_job_definitions(
        jobDefinitionName=tf.outputs["batch_job_definition_name"], status="ACTIVE"
    )["jobDefinitions"][-1:]
    environment = {e["name"]: e["value"] for e in definition["containerProperties"]["environment"]}
    assert environment["INTERLINKED_TASKS_TABLE"] == tf.outputs["tasks_table_name"]
    assert environment["INTERLINKED_TASKS_BACKEND"] == "dynamodb"

    iam = tf.client("iam")
    role = tf.outputs["task_role_arn"].rsplit("/", 1)[-1]
    document = iam.get_role_policy(RoleName=role, PolicyName="use-tasks-table")["PolicyDocument"]
    if isinstance(document, str):
        from urllib.parse import unquote

        document = json.loads(unquote(document))
    (statement,) = document["Statement"]
    assert set(statement["Action"]) == STORE_ACTIONS
    arn = tf.outputs["tasks_table_arn"]
    assert sorted(statement["Resource"]) == sorted([arn, f"{arn}/index/*"])
