"""modules/jobs_api (the jobs SDK as a Lambda) and its wiring in the root stack.

Static: the module's HCL read with python-hcl2 — the handler is ``interlinked.jobs_lambda.handler``
(the function exists and is what the unit tests drive), the function runs in the VPC in a security
group of its own with egress to the database port and HTTPS only, its role may read the database
secret, get/put ``results/*`` (the job copies) and list that prefix only, read the Prefect API key
and write its own log group — nothing else, no wildcard action; the log group has a retention; every
variable the function's environment names is one the handler reads.
Plan: the root stack with enable_database + enable_jobs_api and a customer key, planned against a
private moto server holding only a VPC and its subnets: the function, its environment (the database
module's URL template and secret), the role policy as planned, the database admitting the function's
security group, and the outputs. Validation, fmt and checkov of the module run in
test_terraform_checks.py (MODULE_DIRS, CONFIG_DIRS).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_terraform_checks import blocks, parse, resources
from tf_harness import TF_DIR, copy_tree, moto_provider, private_moto

from interlinked import jobs_lambda

pytestmark = pytest.mark.terraform

MODULE = TF_DIR / "modules" / "jobs_api"
KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0b6f0bd8-8f4e-4c39-9ad4-5a1f3e5d9a10"


def statements(document: dict) -> dict[str, dict]:
    return {s["sid"]: s for s in document["statement"]}


################################################################################
# Static: the module's HCL
################################################################################


def test_the_function_is_the_jobs_handler_in_the_vpc():
    found = {(rtype, name): body for rtype, name, body in resources(MODULE / "main.tf")}
    function = found[("aws_lambda_function", "this")]
    variables = dict(blocks(MODULE / "variables.tf", "variable"))
    handler = variables["handler"]["default"]
    module_name, _, function_name = handler.rpartition(".")
    assert module_name == jobs_lambda.__name__ and callable(getattr(jobs_lambda, function_name))
    assert variables["runtime"]["default"] == "python3.11"
    assert function["vpc_config"] == [
        {"subnet_ids": "${var.subnet_ids}", "security_group_ids": ["${aws_security_group.this.id}"]}
    ]
    assert function["reserved_concurrent_executions"] == "${var.reserved_concurrent_executions}"
    assert variables["reserved_concurrent_executions"]["default"] > 0  # bounds database connections
    assert function["source_code_hash"] == "${filebase64sha256(var.package_path)}"
    assert function["depends_on"] == [
        "${aws_cloudwatch_log_group.function}",
        "${aws_iam_role_policy.this}",
        "${aws_iam_role_policy_attachment.vpc}",
    ]
    # Every setting the function is given is one the handler reads.
    environment = str(function["environment"][0]["variables"])
    for name in (
        "INTERLINKED_DATABASE_URL_TEMPLATE",
        "INTERLINKED_DATABASE_SECRET_ARN",
        "INTERLINKED_DATA_BUCKET",
        "INTERLINKED_DEPLOYMENT_SET",
        "PREFECT_API_URL",
        "PREFECT_API_KEY_SECRET_ARN",
    ):
        assert name in environment, name
        assert name in jobs_lambda._CONFIG, name


def test_log_group_has_a_retention_and_the_tags():
    found = {(rtype, name): body for rtype, name, body in resources(MODULE / "main.tf")}
    group = found[("aws_cloudwatch_log_group", "function")]
    assert group["name"] == "${local.log_group}"
    assert group["retention_in_days"] == "${var.log_retention_days}"
    assert dict(blocks(MODULE / "variables.tf", "variable"))["log_retention_days"]["default"] == 30
    (locals_,) = parse(MODULE / "main.tf")["locals"]
    assert locals_["log_group"] == "/aws/lambda/${local.function_name}"


def test_security_group_allows_only_the_database_and_https_out():
    found = {(rtype, name): body for rtype, name, body in resources(MODULE / "main.tf")}
    group = found[("aws_security_group", "this")]
    assert "ingress" not in group
    ports = {(rule["from_port"], rule["to_port"], rule["protocol"]) for rule in group["egress"]}
    assert ports == {("${var.database_port}", "${var.database_port}", "tcp"), (443, 443, "tcp")}
    (prefect_port,) = [d["egress"] for d in group["dynamic"]]
    assert prefect_port["for_each"] == "${var.prefect_api_port == 443 ? [] : [var.prefect_api_port]}"


def test_role_may_do_only_what_the_job_service_calls():
    document = parse(MODULE / "main.tf")["data"]
    (policy,) = [
        body["this"]
        for entry in document
        for kind, body in entry.items()
        if kind == "aws_iam_policy_document" and "this" in body
    ]
    fixed = statements(policy)
    assert set(fixed) == {"WriteLogs", "ReadDatabaseSecret", "ReadWriteJobCopies", "ListJobCopies"}
    assert fixed["ReadDatabaseSecret"]["actions"] == ["secretsmanager:GetSecretValue"]
    assert fixed["ReadDatabaseSecret"]["resources"] == ["${var.database_secret_arn}"]
    assert sorted(fixed["ReadWriteJobCopies"]["actions"]) == ["s3:GetObject", "s3:PutObject"]
    assert fixed["ReadWriteJobCopies"]["resources"] == ["${local.copy_objects}"]
    (locals_,) = parse(MODULE / "main.tf")["locals"]
    # the copies only: results/{job_id}/job.json (flows.jobs.client.job_json_key)
    from flows.jobs.client import job_json_key

    assert locals_["copy_objects"] == "${var.data_bucket_arn}/results/*"
    assert job_json_key("J").startswith("results/")
    assert fixed["ListJobCopies"]["condition"] == [
        {"test": "StringLike", "variable": "s3:prefix", "values": ["results/*"]}
    ]
    assert fixed["WriteLogs"]["resources"] == ["${aws_cloudwatch_log_group.function.arn}:*"]
    optional = {d["statement"]["content"][0]["sid"] for d in policy["dynamic"]}
    assert optional == {"ReadPrefectApiKey", "DecryptWithKey", "EncryptCopiesWithKey", "WriteTraces"}
    actions = [a for s in policy["statement"] for a in s["actions"]] + [
        a for d in policy["dynamic"] for a in d["statement"]["content"][0]["actions"]
    ]
    assert not [a for a in actions if a == "*" or a.endswith(":*")]
    assert not [a for a in actions if a.startswith(("rds:", "dynamodb:", "sqs:", "sns:", "lambda:"))]


################################################################################
# Plan of the root stack with enable_database + enable_jobs_api
################################################################################

WRAPPER = (
    moto_provider(["ec2", "iam", "sts"])
    + """
module "interlinked" {{
  source = "{root}"

  environment     = "plan"
  prefect_api_url = "http://prefect.internal:4200/api"
  container_image = "interlinked:plan"
  vpc_id          = "{vpc_id}"
  subnet_ids      = {subnet_ids}
  enable_bridge   = false
  kms_key_arn     = "{kms_key_arn}"

  create_prefect_api_key_secret = true
  enable_database               = {enable_database}
  enable_jobs_api               = true
  jobs_api_package_path         = "{package}"
}}

output "jobs_api" {{
  description = "The root stack's jobs-API outputs."
  value = {{
    function_name  = module.interlinked.jobs_api_function_name
    log_group_name = module.interlinked.jobs_api_log_group_name
  }}
}}
"""
)


@pytest.fixture(scope="module")
def moto_network(tmp_path_factory):
    """A private moto server with a VPC and two subnets (the plan's data sources read them)."""
    import boto3

    with private_moto(tmp_path_factory.mktemp("moto-jobs-api")) as endpoint:
        ec2 = boto3.client(
            "ec2",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"us-east-1{zone}")[
                "Subnet"
            ]["SubnetId"]
            for i, zone in ((1, "a"), (2, "b"))
        ]
        yield endpoint, vpc, subnets


def plan(terraform, tmp_path: Path, network, *, enable_database: bool, check: bool = True):
    endpoint, vpc, subnets = network
    stack = copy_tree(tmp_path / "terraform")
    package = tmp_path / "jobs_api.zip"
    package.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: only its hash is planned
    work = tmp_path / "wrapper"
    work.mkdir()
    (work / "main.tf").write_text(
        textwrap.dedent(WRAPPER).format(
            endpoint=endpoint,
            root=stack.as_posix(),
            vpc_id=vpc,
            subnet_ids=json.dumps(subnets),
            kms_key_arn=KMS_KEY_ARN,
            enable_database=str(enable_database).lower(),
            package=package.as_posix(),
        )
    )
    terraform.init(work)
    proc = terraform.run(work, "plan", "-no-color", "-input=false", "-out=tfplan", timeout=600, check=check)
    if not check:
        return proc
    return json.loads(terraform.run(work, "show", "-json", "tfplan", timeout=120).stdout)


@pytest.fixture(scope="module")
def jobs_plan(terraform, moto_network, tmp_path_factory) -> dict:
    return plan(terraform, tmp_path_factory.mktemp("tf-jobs-api"), moto_network, enable_database=True)


def test_plan_creates_the_function_on_the_database(jobs_plan, moto_network):
    _, vpc, subnets = moto_network
    changes = {change["address"]: change for change in jobs_plan["resource_changes"]}
    prefix = "module.interlinked.module.jobs_api[0]"
    function = changes[f"{prefix}.aws_lambda_function.this"]["change"]
    assert function["actions"] == ["create"]
    after = function["after"]
    assert after["function_name"] == "interlinked-plan-jobs-api"
    assert after["handler"] == "interlinked.jobs_lambda.handler"
    assert after["runtime"] == "python3.11"
    assert after["kms_key_arn"] == KMS_KEY_ARN
    assert after["reserved_concurrent_executions"] == 20
    assert set(after["vpc_config"][0]["subnet_ids"]) == set(subnets)
    assert after["tags"]["Project"] == "interlinked" and after["tags"]["Environment"] == "plan"
    # The environment holds the database's URL template and secret ARN, known after apply.
    assert function["after_unknown"]["environment"][0]["variables"] is True
    calls = jobs_plan["configuration"]["root_module"]["module_calls"]["interlinked"]["module"]["module_calls"]
    expressions = calls["jobs_api"]["expressions"]
    assert "module.database[0].connection_url_template" in expressions["database_url_template"]["references"]
    assert "module.database[0].master_user_secret_arn" in expressions["database_secret_arn"]["references"]
    assert "module.storage.data_bucket_name" in expressions["data_bucket_name"]["references"]

    group = changes[f"{prefix}.aws_cloudwatch_log_group.function"]["change"]
    assert group["after"]["name"] == "/aws/lambda/interlinked-plan-jobs-api"
    assert group["after"]["retention_in_days"] == 30
    assert group["after"]["kms_key_id"] == KMS_KEY_ARN

    sg = changes[f"{prefix}.aws_security_group.this"]["change"]["after"]
    assert sg["vpc_id"] == vpc
    assert sorted((rule["from_port"], tuple(rule["cidr_blocks"])) for rule in sg["egress"]) == [
        (443, ("0.0.0.0/0",)),
        (4200, ("0.0.0.0/0",)),  # the self-hosted Prefect API's port
        (5432, ("10.42.0.0/16",)),
    ]
    assert not sg.get("ingress")

    outputs = jobs_plan["output_changes"]["jobs_api"]["after"]
    assert outputs == {
        "function_name": "interlinked-plan-jobs-api",
        "log_group_name": "/aws/lambda/interlinked-plan-jobs-api",
    }


def test_plan_lets_the_function_reach_the_database(jobs_plan):
    changes = {change["address"]: change for change in jobs_plan["resource_changes"]}
    sg = changes["module.interlinked.module.database[0].aws_security_group.this"]["change"]
    # The database admits the function's security group (unknown until apply; it is in the list).
    assert sg["after_unknown"]["ingress"], sg
    references = jobs_plan["configuration"]["root_module"]["module_calls"]["interlinked"]["module"][
        "module_calls"
    ]["database"]["expressions"]["allowed_security_group_ids"]["references"]
    assert "module.jobs_api[0].security_group_id" in references


def test_plan_refuses_the_jobs_api_without_a_database(terraform, moto_network, tmp_path):
    proc = plan(terraform, tmp_path, moto_network, enable_database=False, check=False)
    assert proc.returncode != 0
    assert "enable_jobs_api needs enable_database" in proc.stdout + proc.stderr
