"""The optional long-running ECS services of modules/compute (services.tf), as examples/local creates
them in moto: the aws-batch worker, the event bridge and the analysis service. moto records the
services and task definitions without running tasks, so these tests check what a task would start
with (command, environment, secrets, role, logs) against what the code reads, and the roles'
policies against what the code calls."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tf_harness import TF_DIR

pytestmark = pytest.mark.terraform

PREFECT_API_URL = "http://127.0.0.1:4200/api"
TEMPLATE_SCRIPT = TF_DIR / "scripts" / "work_pool_template.py"


def service_container(stack, service_name: str) -> tuple[dict, dict, dict]:
    """(service, task definition, its only container) of an ECS service of the Terraform cluster."""
    ecs = stack.client("ecs")
    cluster = stack.outputs["ecs_cluster_arn"]
    (service,) = ecs.describe_services(cluster=cluster, services=[service_name])["services"]
    assert service["status"] == "ACTIVE"
    assert service["launchType"] == "FARGATE"
    assert service["desiredCount"] == 1
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = task["containerDefinitions"]
    return service, task, container


def environment(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["environment"]}


def role_statements(stack, role_arn: str) -> dict[str, dict]:
    iam = stack.client("iam")
    name = role_arn.rsplit("/", 1)[1]
    (policy,) = iam.list_role_policies(RoleName=name)["PolicyNames"]
    doc = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    return {s["Sid"]: s for s in doc["Statement"]}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def check_common(stack, key: str, task: dict, container: dict) -> dict[str, str]:
    """What every service container shares with the ECS worker: role, API, secret, logs, scratch."""
    out = stack.outputs
    assert task["taskRoleArn"] == out["service_task_role_arns"][key]
    assert task["executionRoleArn"] == out["execution_role_arn"]
    assert container["image"] == "interlinked:local"
    assert container["readonlyRootFilesystem"] is True
    assert container["mountPoints"] == [
        {"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": False}
    ]
    assert container["secrets"] == [
        {"name": "PREFECT_API_KEY", "valueFrom": out["prefect_api_key_secret_arn"]}
    ]
    assert container["logConfiguration"]["options"]["awslogs-group"] == out["log_group_names"][key]
    env = environment(container)
    assert env["PREFECT_API_URL"] == PREFECT_API_URL
    assert env["PREFECT_HOME"].startswith("/scratch/")
    assert env["AWS_REGION"] == "us-east-1"
    for sid, statement in role_statements(stack, task["taskRoleArn"]).items():
        assert "*" not in as_list(statement["Action"]), sid
    return env


################################################################################
# aws-batch worker
################################################################################


def test_batch_worker_service(terraform_local_stack):
    stack, out = terraform_local_stack, terraform_local_stack.outputs
    _, task, container = service_container(stack, out["batch_worker_service_name"])
    assert container["command"] == [
        "prefect",
        "worker",
        "start",
        "--pool",
        out["batch_worker_pool_name"],
        "--type",
        "aws-batch",
    ]
    assert out["batch_worker_pool_name"] == "interlinked-batch"
    env = check_common(stack, "batch_worker", task, container)
    assert env["PREFECT_WORKER_ENABLE_CANCELLATION"] == "true"

    statements = role_statements(stack, task["taskRoleArn"])
    assert set(statements) == {"SubmitFlowRunJobs", "TagSubmittedJobs", "TerminateJobs", "DescribeJobs"}
    submit = as_list(statements["SubmitFlowRunJobs"]["Resource"])
    assert out["batch_job_queue_arn"] in submit
    definition = out["batch_job_definition_arn"].rsplit(":", 1)[0]  # without the revision
    assert {definition, definition + ":*"} <= set(submit)
    assert len(submit) == 3
    job_arns = "arn:aws:batch:us-east-1:123456789012:job/*"
    assert statements["TerminateJobs"]["Resource"] == job_arns
    assert statements["TagSubmittedJobs"]["Resource"] == job_arns
    assert statements["TagSubmittedJobs"]["Condition"] == {
        "StringEquals": {"batch:CreateAction": "SubmitJob"}
    }
    assert as_list(statements["DescribeJobs"]["Action"]) == ["batch:DescribeJobs"]


def test_work_pool_job_variables_fit_the_worker_templates(terraform_local_stack, tmp_path):
    """scripts/work_pool_template.py turns the two job-variable outputs into base job templates."""
    out = terraform_local_stack.outputs
    assert out["batch_work_pool_job_variables"] == {
        "job_queue": out["batch_job_queue_arn"],
        "job_definition": out["batch_job_definition_name"],
    }
    assert (
        out["ecs_work_pool_job_variables"]["prefect_api_key_secret_arn"] == out["prefect_api_key_secret_arn"]
    )

    # What `terraform output -json stack` writes, and what the script reads.
    stack_json = tmp_path / "stack.json"
    stack_json.write_text(json.dumps(out))
    for worker_type, output in (
        ("aws-batch", "batch_work_pool_job_variables"),
        ("ecs", "ecs_work_pool_job_variables"),
    ):
        target = tmp_path / f"{worker_type}.json"
        proc = subprocess.run(
            [sys.executable, str(TEMPLATE_SCRIPT), worker_type, str(stack_json), "-o", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        properties = json.loads(target.read_text())["variables"]["properties"]
        for key, value in out[output].items():
            if value is not None:
                assert properties[key]["default"] == value, key


def test_work_pool_template_refuses_what_does_not_fit(tmp_path):
    stack_json = tmp_path / "stack.json"
    stack_json.write_text(
        json.dumps({"batch_work_pool_job_variables": {"job_queue": "q", "jobqueue": "typo"}})
    )
    proc = subprocess.run(
        [sys.executable, str(TEMPLATE_SCRIPT), "aws-batch", str(stack_json)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "aws-batch work pools have no variables ['jobqueue']" in proc.stderr
    stack_json.write_text(json.dumps({"batch_work_pool_job_variables": None}))
    proc = subprocess.run(
        [sys.executable, str(TEMPLATE_SCRIPT), "aws-batch", str(stack_json)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "batch_work_pool_job_variables is missing or null" in proc.stderr


################################################################################
# Event bridge (ECS service)
################################################################################


def test_bridge_service(terraform_local_stack, monkeypatch):
    stack, out = terraform_local_stack, terraform_local_stack.outputs
    _, task, container = service_container(stack, out["bridge_service_name"])
    assert container["command"] == ["python", "-m", "interlinked.bridge"]
    env = check_common(stack, "bridge_service", task, container)
    assert env["INTERLINKED_EVENTS_QUEUE_URL"] == stack.env["queues"]["events"]
    assert env["INTERLINKED_DATA_BUCKET"] == stack.env["buckets"]["data"]
    assert env["INTERLINKED_ANALYSIS_BUCKET"] == stack.env["buckets"]["analysis"]
    assert env["INTERLINKED_DEPLOYMENT_SET"] == "local"
    assert env["INTERLINKED_BRIDGE_STATUS_FILE"].startswith("/scratch/")
    assert "PREFECT_WORKER_ENABLE_CANCELLATION" not in env

    statements = role_statements(stack, task["taskRoleArn"])
    assert set(statements) == {"ConsumeEventsQueue", "WriteEventsDlq"}, "SQS only: the bridge reads no bucket"
    assert statements["ConsumeEventsQueue"]["Resource"] == out["events_queue_arn"]
    assert statements["WriteEventsDlq"]["Resource"] == out["events_dlq_arn"]

    # The consumer configured from the task's environment finds the Terraform queue and its DLQ.
    from interlinked.bridge import consumer

    # Only what config_from_env reads itself (the cached interlinked settings stay the session's).
    for name in ("INTERLINKED_EVENTS_QUEUE_URL", "INTERLINKED_BRIDGE_STATUS_FILE", "PREFECT_API_URL"):
        monkeypatch.setenv(name, env[name])
    for name, value in stack.client_env.items():
        monkeypatch.setenv(name, value)
    config, _ = consumer.config_from_env()
    assert config.queue_url == stack.env["queues"]["events"]
    assert config.dead_letter_url == out["events_dlq_url"]
    assert config.max_receives == 5
    assert config.prefect_api_url == PREFECT_API_URL
    assert str(config.status_file) == env["INTERLINKED_BRIDGE_STATUS_FILE"]


################################################################################
# Analysis service
################################################################################


def test_analysis_service(terraform_local_stack, monkeypatch):
    stack, out = terraform_local_stack, terraform_local_stack.outputs
    _, task, container = service_container(stack, out["analysis_service_name"])
    assert container["command"] == ["python", "-m", "flows.analysis.service"]
    env = check_common(stack, "analysis_service", task, container)

    # The names are the service's own settings (INTERLINKED_ANALYSIS_*).
    from flows.analysis import service as analysis_service

    for name, value in env.items():
        if name.startswith("INTERLINKED_ANALYSIS_"):
            monkeypatch.setenv(name, value)
    settings = analysis_service.ServiceSettings()
    assert settings.queue_url == stack.env["queues"]["work"]
    assert settings.topic_arn == stack.env["topics"]["work_results"]
    assert settings.data_bucket == stack.env["buckets"]["data"]
    assert settings.prepare_deployment == "prepare-experiment/local"
    assert settings.workers == 4
    assert str(settings.status_file).startswith("/scratch/")

    statements = role_statements(stack, task["taskRoleArn"])
    assert set(statements) == {
        "ConsumeWorkQueue",
        "WriteWorkDlq",
        "PublishWorkResults",
        "ListDataBucket",
        "ReadExperimentsAndRecords",
        "WriteCacheAndRecords",
    }
    assert statements["ConsumeWorkQueue"]["Resource"] == out["work_queue_arn"]
    assert statements["WriteWorkDlq"]["Resource"] == out["work_dlq_arn"]
    assert statements["PublishWorkResults"]["Resource"] == out["work_results_topic_arn"]
    assert as_list(statements["PublishWorkResults"]["Action"]) == ["sns:Publish"]
    assert statements["ListDataBucket"]["Resource"] == out["data_bucket_arn"]
    data = out["data_bucket_arn"]
    assert sorted(as_list(statements["ReadExperimentsAndRecords"]["Resource"])) == [
        f"{data}/analysis-cache/*",
        f"{data}/analysis-responses/*",
        f"{data}/experiments/*",
    ]
    assert sorted(as_list(statements["WriteCacheAndRecords"]["Resource"])) == [
        f"{data}/analysis-cache/*",
        f"{data}/analysis-responses/*",
    ]


def test_log_groups_of_the_services(terraform_local_stack):
    groups = terraform_local_stack.outputs["log_group_names"]
    assert {
        "worker",
        "flow_runs",
        "batch",
        "bridge",
        "batch_worker",
        "bridge_service",
        "analysis_service",
    } == set(groups)
    assert len(set(groups.values())) == len(groups)
