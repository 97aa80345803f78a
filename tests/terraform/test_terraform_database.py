"""modules/database (PostgreSQL on RDS) and its wiring in the root stack.

Static: the module's security properties read from its HCL with python-hcl2 (encrypted storage, no
public access, TLS forced, password managed by RDS, ingress from security groups only).
Plan: the root stack with enable_database = true planned against a private moto server (it only
answers the data sources: caller identity, region, default VPC), read from `terraform show -json`:
the instance as it would be created, its parameter group, its security group admitting the compute
security group, the flow-run role's policy naming only the database secret, and the flow runs'
environment. Validation and fmt of the module run in test_terraform_checks.py (CONFIG_DIRS).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from test_terraform_checks import blocks, parse, resources
from tf_harness import TF_DIR, copy_tree, moto_provider, private_moto

pytestmark = pytest.mark.terraform

MODULE = TF_DIR / "modules" / "database"


def module_resource(rtype: str, name: str = "this") -> dict:
    found = {(t, n): body for t, n, body in resources(MODULE / "main.tf")}
    assert (rtype, name) in found, f"modules/database has no {rtype}.{name}"
    return found[(rtype, name)]


################################################################################
# Static: the module's HCL
################################################################################


def test_instance_is_encrypted_private_and_password_managed_by_rds():
    db = module_resource("aws_db_instance")
    assert db["engine"] == "postgres"
    assert db["storage_encrypted"] is True
    assert db["kms_key_id"] == "${var.kms_key_arn}"
    assert db["publicly_accessible"] is False
    assert db["manage_master_user_password"] is True
    assert db["master_user_secret_kms_key_id"] == "${var.kms_key_arn}"
    # No password of ours anywhere: it would land in the state.
    assert not {"password", "password_wo"} & set(db), "the master password must be left to RDS"
    assert db["iam_database_authentication_enabled"] is True
    assert db["auto_minor_version_upgrade"] is True
    assert db["performance_insights_enabled"] is True
    assert db["monitoring_interval"] == "${var.monitoring_interval}"
    assert db["backup_retention_period"] == "${var.backup_retention_days}"
    assert db["deletion_protection"] == "${var.deletion_protection}"
    assert db["copy_tags_to_snapshot"] is True
    assert db["enabled_cloudwatch_logs_exports"] == "${var.cloudwatch_logs_exports}"
    assert db["db_subnet_group_name"] == "${aws_db_subnet_group.this.name}"
    assert db["vpc_security_group_ids"] == ["${aws_security_group.this.id}"]
    assert db["parameter_group_name"] == "${aws_db_parameter_group.this.name}"

    variables = dict(blocks(MODULE / "variables.tf", "variable"))
    assert variables["deletion_protection"]["default"] is True
    assert variables["backup_retention_days"]["default"] >= 7
    assert variables["monitoring_interval"]["default"] > 0
    assert variables["kms_key_arn"]["default"] is None
    assert "default" not in variables["subnet_ids"], "the subnets must be given (private ones)"


def test_parameter_group_forces_ssl_over_any_caller_parameter():
    group = module_resource("aws_db_parameter_group")
    assert group["family"] == "postgres${local.major_version}"
    (dynamic,) = group["dynamic"]
    assert dynamic["parameter"]["for_each"] == "${local.parameters}"
    (locals_,) = parse(MODULE / "main.tf")["locals"]
    merged = locals_["parameters"]
    # merge() lets later maps win: rds.force_ssl = 1 comes after the caller's parameters.
    assert re.search(r'var\.parameters,\s*\{\s*"rds\.force_ssl"\s*[=:]\s*"1"\s*\}\s*\)\}$', merged), merged
    validation = dict(blocks(MODULE / "variables.tf", "variable"))["parameters"]["validation"]
    assert "rds.force_ssl" in validation[0]["condition"]


def test_security_group_admits_the_port_from_security_groups_only():
    group = module_resource("aws_security_group")
    (ingress,) = group["ingress"]
    assert ingress["from_port"] == ingress["to_port"] == "${var.port}"
    assert ingress["protocol"] == "tcp"
    assert ingress["security_groups"] == "${var.allowed_security_group_ids}"
    assert not {"cidr_blocks", "ipv6_cidr_blocks", "prefix_list_ids", "self"} & set(ingress)
    assert group["egress"] == [], "the database needs no egress"
    # No separate rule resources that could widen the group.
    kinds = {t for t, _, _ in resources(MODULE / "main.tf")}
    assert (
        not {
            "aws_security_group_rule",
            "aws_vpc_security_group_ingress_rule",
            "aws_vpc_security_group_egress_rule",
        }
        & kinds
    )


def test_root_grants_get_secret_value_on_the_database_secret_only():
    (policy,) = [
        body
        for entry in parse(TF_DIR / "main.tf").get("data", [])
        for rtype, named in entry.items()
        if rtype == "aws_iam_policy_document"
        for name, body in named.items()
        if name == "database_secret"
    ]
    statements = policy["statement"]
    assert statements[0]["actions"] == ["secretsmanager:GetSecretValue"]
    assert statements[0]["resources"] == ["${module.database[0].master_user_secret_arn}"]
    (dynamic,) = policy["dynamic"]
    (decrypt,) = dynamic["statement"]["content"]
    assert decrypt["actions"] == ["kms:Decrypt"]
    assert decrypt["condition"][0]["variable"] == "kms:ViaService"


################################################################################
# Plan of the root stack with enable_database = true
################################################################################

WRAPPER = (
    moto_provider(["ec2", "iam", "rds", "sts"])
    + """
module "interlinked" {{
  source = "{root}"

  environment     = "plan"
  prefect_api_url = "http://127.0.0.1:4200/api"
  container_image = "interlinked:plan"
  vpc_id          = {vpc_id}
  subnet_ids      = {subnet_ids}
  enable_bridge   = false
  kms_key_arn     = {kms_key_arn}

  enable_compute                      = {enable_compute}
  enable_database                     = true
  database_secret_reader_role_names   = ["prefect-server-task"]
  database_allowed_security_group_ids = {extra_security_groups}
}}

output "database" {{
  description = "The root stack's database outputs."
  value = {{
    database_name                    = module.interlinked.database_name
    database_port                    = module.interlinked.database_port
    database_endpoint                = module.interlinked.database_endpoint
    database_address                 = module.interlinked.database_address
    database_secret_arn              = module.interlinked.database_secret_arn
    database_security_group_id       = module.interlinked.database_security_group_id
    database_connection_url_template = module.interlinked.database_connection_url_template
    database_instance_resource_id    = module.interlinked.database_instance_resource_id
  }}
}}
"""
)
KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0b6f0bd8-8f4e-4c39-9ad4-5a1f3e5d9a10"


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """A private moto server for the data sources of the plan (nothing is created in it)."""
    with private_moto(tmp_path_factory.mktemp("moto-db")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def stack_copy(tmp_path_factory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("tf-db") / "terraform")


def plan(terraform, stack_copy: Path, endpoint: str, name: str, check: bool = True, **settings):
    """Plan the root stack through a wrapper; the `terraform show -json` document (or the failed run)."""
    values = {
        "enable_compute": "true",
        "kms_key_arn": "null",
        "extra_security_groups": "[]",
        "vpc_id": '"vpc-0123456789abcdef0"',
        "subnet_ids": '["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]',
        **settings,
    }
    work = stack_copy.parent / name
    work.mkdir()
    (work / "main.tf").write_text(
        textwrap.dedent(WRAPPER).format(endpoint=endpoint, root=stack_copy.as_posix(), **values)
    )
    terraform.init(work)
    proc = terraform.run(work, "plan", "-no-color", "-input=false", "-out=tfplan", timeout=300, check=check)
    if not check:
        return proc
    shown = terraform.run(work, "show", "-json", "tfplan", timeout=120)
    return json.loads(shown.stdout)


def planned(document: dict) -> dict[str, dict]:
    """address -> resource change (actions, after, after_unknown) of every planned resource."""
    return {change["address"]: change for change in document["resource_changes"]}


@pytest.fixture(scope="module")
def database_plan(terraform, stack_copy, moto_endpoint) -> dict:
    return plan(terraform, stack_copy, moto_endpoint, "with-compute")


PREFIX = "module.interlinked.module.database[0]"


def test_plan_creates_the_instance_as_specified(database_plan):
    changes = planned(database_plan)
    db = changes[f"{PREFIX}.aws_db_instance.this"]
    assert db["change"]["actions"] == ["create"]
    after = db["change"]["after"]
    assert after["identifier"] == "interlinked-plan-postgres"
    assert after["engine"] == "postgres"
    assert after["engine_version"] == "16"
    assert after["db_name"] == "interlinked"
    assert after["port"] == 5432
    assert after["storage_encrypted"] is True
    assert after["publicly_accessible"] is False
    assert after["manage_master_user_password"] is True
    assert after.get("password") is None
    assert after["iam_database_authentication_enabled"] is True
    assert after["multi_az"] is True
    assert after["deletion_protection"] is True
    assert after["backup_retention_period"] == 7
    assert after["auto_minor_version_upgrade"] is True
    assert after["performance_insights_enabled"] is True
    assert after["monitoring_interval"] == 60
    assert sorted(after["enabled_cloudwatch_logs_exports"]) == ["postgresql", "upgrade"]
    assert after["final_snapshot_identifier"] == "interlinked-plan-postgres-final"
    assert after["tags"]["Project"] == "interlinked" and after["tags"]["Environment"] == "plan"

    subnets = changes[f"{PREFIX}.aws_db_subnet_group.this"]["change"]["after"]
    assert sorted(subnets["subnet_ids"]) == ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]

    params = changes[f"{PREFIX}.aws_db_parameter_group.this"]["change"]["after"]
    assert params["family"] == "postgres16"
    values = {p["name"]: p["value"] for p in params["parameter"]}
    assert values["rds.force_ssl"] == "1"
    assert values["log_statement"] == "ddl"

    for log in ("postgresql", "upgrade"):
        group = changes[f'{PREFIX}.aws_cloudwatch_log_group.this["{log}"]']["change"]["after"]
        assert group["name"] == f"/aws/rds/instance/interlinked-plan-postgres/{log}"
        assert group["retention_in_days"] == 30


def test_plan_admits_only_the_compute_security_group(database_plan):
    changes = planned(database_plan)
    group = changes[f"{PREFIX}.aws_security_group.this"]["change"]
    (ingress,) = group["after"]["ingress"]
    assert (ingress["from_port"], ingress["to_port"], ingress["protocol"]) == (5432, 5432, "tcp")
    assert ingress["cidr_blocks"] == [] and ingress["ipv6_cidr_blocks"] == []
    assert group["after"]["egress"] == []
    # The only allowed group is the compute one, created in the same apply (unknown at plan time).
    assert group["after_unknown"]["ingress"][0]["security_groups"] is True
    config = database_plan["configuration"]["root_module"]["module_calls"]["interlinked"]["module"]
    allowed = config["module_calls"]["database"]["expressions"]["allowed_security_group_ids"]["references"]
    assert "module.compute[0].security_group_ids" in allowed

    compute_group = changes["module.interlinked.module.compute[0].aws_security_group.this[0]"]["change"][
        "after"
    ]
    assert sorted(rule["from_port"] for rule in compute_group["egress"]) == [443, 5432]


def test_plan_lets_the_flow_runs_read_the_secret_only(database_plan):
    changes = planned(database_plan)
    readers = {
        address: change["change"]
        for address, change in changes.items()
        if address.startswith("module.interlinked.aws_iam_role_policy.database_secret")
    }
    assert set(readers) == {
        'module.interlinked.aws_iam_role_policy.database_secret["flow_run"]',
        'module.interlinked.aws_iam_role_policy.database_secret["prefect-server-task"]',
    }
    server = readers['module.interlinked.aws_iam_role_policy.database_secret["prefect-server-task"]']
    assert server["after"]["role"] == "prefect-server-task"
    # The secret exists only after the instance: the document is computed at apply.
    assert server["after_unknown"]["policy"] is True

    # Nothing else grants the database secret: the worker and service roles stay as they are.
    roles_with_db = [
        address
        for address, change in changes.items()
        if change["type"] == "aws_iam_role_policy"
        and "database" in json.dumps(change["change"].get("after") or {})
        and "database_secret" not in address
    ]
    assert roles_with_db == []

    job = changes["module.interlinked.module.compute[0].aws_batch_job_definition.flow_run[0]"]["change"]
    assert job["after_unknown"]["container_properties"] is True  # holds the secret ARN and URL


def test_plan_database_outputs(database_plan):
    change = database_plan["output_changes"]["database"]
    outputs, unknown = change["after"], change["after_unknown"]
    assert outputs["database_name"] == "interlinked"
    assert outputs["database_port"] == 5432
    # Known only once the instance and its secret exist.
    for name in (
        "database_endpoint",
        "database_address",
        "database_secret_arn",
        "database_security_group_id",
        "database_connection_url_template",
        "database_instance_resource_id",
    ):
        assert unknown.get(name) is True, name


def test_plan_with_a_customer_key_encrypts_everything_with_it(terraform, stack_copy, moto_endpoint):
    document = plan(
        terraform,
        stack_copy,
        moto_endpoint,
        "with-key",
        kms_key_arn=f'"{KMS_KEY_ARN}"',
    )
    changes = planned(document)
    after = changes[f"{PREFIX}.aws_db_instance.this"]["change"]["after"]
    assert after["kms_key_id"] == KMS_KEY_ARN
    assert after["master_user_secret_kms_key_id"] == KMS_KEY_ARN
    assert after["performance_insights_kms_key_id"] == KMS_KEY_ARN
    group = changes[f'{PREFIX}.aws_cloudwatch_log_group.this["postgresql"]']["change"]["after"]
    assert group["kms_key_id"] == KMS_KEY_ARN


def test_plan_without_any_client_security_group_is_refused(terraform, stack_copy, moto_endpoint):
    proc = plan(
        terraform,
        stack_copy,
        moto_endpoint,
        "no-clients",
        check=False,
        enable_compute="false",
    )
    assert proc.returncode != 0
    assert "allowed_security_group_ids needs at least one security group" in proc.stdout + proc.stderr


def test_plan_with_an_extra_client_security_group(terraform, stack_copy, moto_endpoint):
    document = plan(
        terraform,
        stack_copy,
        moto_endpoint,
        "extra-client",
        enable_compute="false",
        extra_security_groups='["sg-0123456789abcdef0"]',
    )
    changes = planned(document)
    (ingress,) = changes[f"{PREFIX}.aws_security_group.this"]["change"]["after"]["ingress"]
    assert ingress["security_groups"] == ["sg-0123456789abcdef0"]
    readers = [a for a in changes if a.startswith("module.interlinked.aws_iam_role_policy.database_secret")]
    # Without compute there is no flow-run role; the named role still gets the grant.
    assert readers == ['module.interlinked.aws_iam_role_policy.database_secret["prefect-server-task"]']


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("no-vpc", {"vpc_id": "null"}, "vpc_id is required"),
        ("one-subnet", {"subnet_ids": '["subnet-0123456789abcdef0"]'}, "at least two subnets"),
    ],
)
def test_plan_without_network_is_refused(terraform, stack_copy, moto_endpoint, name, settings, message):
    settings = {"enable_compute": "false", "extra_security_groups": '["sg-0123456789abcdef0"]', **settings}
    proc = plan(terraform, stack_copy, moto_endpoint, name, check=False, **settings)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
