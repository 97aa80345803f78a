"""The ECS work pool end to end: a flow run on the session's Prefect server, the stock prefect-aws
`ecs` worker (`prefect worker start --type ecs --run-once`), and the cluster, roles, log group,
network and Prefect API secret that Terraform created in moto (examples/local).

The pool's base job template gets its defaults from the Terraform output
`ecs_work_pool_job_variables` (as README's `terraform output` → `prefect work-pool create` steps
do). moto's ECS records the task definition and the task without running them: the test checks
what the worker registered and asked RunTask for.
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = [pytest.mark.terraform, pytest.mark.integration]


def container_memory_for_moto(template: dict) -> None:
    """moto's RunTask needs a container-level memory (it fails with a 500 without one); Fargate
    on AWS takes the task-level one alone. A container limit equal to the task's is valid on both."""
    container = template["job_configuration"]["task_definition"]["containerDefinitions"][0]
    container["memory"] = "{{ memory }}"


def test_ecs_worker_registers_the_task_definition_and_runs_it_on_the_terraform_cluster(
    pool_harness, terraform_local_stack, stack
):
    outputs = terraform_local_stack.outputs
    variables = outputs["ecs_work_pool_job_variables"]
    pool = f"test-ecs-{uuid.uuid4().hex[:8]}"
    pool_harness.create_pool(
        pool,
        "ecs",
        {
            **variables,
            "aws_credentials": pool_harness.credentials_ref,
            "memory": 2048,
        },
        edit=container_memory_for_moto,
    )
    deployment_id = pool_harness.create_deployment(
        pool, "ecs-pool-test", job_variables={"env": {"INTERLINKED_MARK": "ecs-pool-test"}}
    )
    flow_run = pool_harness.run(deployment_id)

    # As in the Terraform worker service, whose container gets the secret as PREFECT_API_KEY (the
    # local server ignores it). prefect-aws removes the worker's own key from the flow run's plain
    # environment when prefect_api_key_secret_arn is set, and expects it to be there.
    output = pool_harness.run_worker_once(pool, "ecs", env={"PREFECT_API_KEY": "local-no-auth"})
    flow_run = pool_harness.read(flow_run.id)
    assert flow_run.infrastructure_pid, f"the worker did not record a task:\n{output}"
    cluster, task_arn = flow_run.infrastructure_pid.split("::")
    assert cluster == outputs["ecs_cluster_arn"] == variables["cluster"]

    ecs = terraform_local_stack.client("ecs")
    tasks = ecs.describe_tasks(cluster=cluster, tasks=[task_arn], include=["TAGS"])["tasks"]
    assert len(tasks) == 1, f"RunTask did not reach the Terraform cluster:\n{output}"
    task = tasks[0]
    assert task["clusterArn"] == outputs["ecs_cluster_arn"]
    assert task["launchType"] == "FARGATE"

    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert definition["executionRoleArn"] == outputs["execution_role_arn"]
    assert definition["networkMode"] == "awsvpc"
    assert "FARGATE" in definition["requiresCompatibilities"]
    container = definition["containerDefinitions"][0]
    assert definition["memory"] == "2048"
    assert container["image"] == variables["image"] == "interlinked:local"
    logs = container["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert logs["options"]["awslogs-group"] == outputs["log_group_name"]
    # The Terraform secret, named in the job variables after prefect_api_key_env_name (PREFECT_API_KEY).
    assert variables["prefect_api_key_secret_arn"] == outputs["prefect_api_key_secret_arn"]
    assert {
        "name": "PREFECT_API_KEY",
        "valueFrom": outputs["prefect_api_key_secret_arn"],
    } in container["secrets"]

    overrides = task["overrides"]
    assert overrides["taskRoleArn"] == outputs["task_role_arn"]
    (prefect_container,) = [c for c in overrides["containerOverrides"] if c["name"] == container["name"]]
    assert prefect_container["command"] == ["prefect", "flow-run", "execute"]
    env = {item["name"]: item["value"] for item in prefect_container["environment"]}
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert env["PREFECT_API_URL"] == stack["prefect_api_url"]
    assert env["INTERLINKED_MARK"] == "ecs-pool-test"
    assert "PREFECT_API_KEY" not in env, "the secret, not a plain variable, carries it"

    tags = {tag["key"]: tag["value"] for tag in task.get("tags", [])}
    assert tags.get("prefect.io/flow-run-id") == str(flow_run.id)
