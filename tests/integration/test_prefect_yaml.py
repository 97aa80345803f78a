"""prefect.yaml: every deployment is well-formed, and `prefect deploy --all` applies them all."""

from __future__ import annotations

import importlib
import os
import subprocess

import pytest
import yaml

from _stack import ROOT, TEST_ENV
from interlinked.local import ensure_work_pool, local_deployment_names
from interlinked.local.processes import python_tool

CONFIG = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = CONFIG["deployments"]
POOLS = {pool["name"]: pool for pool in CONFIG["definitions"]["work_pools"].values()}
POOL_TYPES = {"local": "warm-process", "interlinked-ecs": "ecs", "interlinked-batch": "aws-batch"}


def _flow(entrypoint: str):
    path, function = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, function)


def _full_name(deployment: dict) -> str:
    return f"{_flow(deployment['entrypoint']).name}/{deployment['name']}"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}@{d['name']}")
def test_every_deployment_names_a_flow_a_declared_pool_and_a_pull_step(deployment):
    from prefect import Flow

    flow = _flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    # `interlinked up` derives `flow/local` names from the function name.
    assert flow.name == deployment["entrypoint"].split(":")[1].replace("_", "-")
    assert deployment["work_pool"]["name"] in POOLS
    assert deployment["pull"], "each deployment says where its code is"
    assert deployment["name"] in ("local", "ecs", "batch")


def test_names_are_unique_and_every_local_flow_also_runs_on_ecs_and_batch():
    names = [_full_name(d) for d in DEPLOYMENTS]
    assert len(names) == len(set(names))
    for name in local_deployment_names():
        flow = name.split("/")[0]
        assert {f"{flow}/ecs", f"{flow}/batch"} <= set(names), flow
    assert "analysis-service/ecs" in names  # the long-running service on AWS


@pytest.mark.integration
def test_deploy_all_applies_every_deployment(stack_handle):
    stack_handle.ensure_up()
    for pool, worker_type in POOL_TYPES.items():
        ensure_work_pool(pool, worker_type, "prefect.yaml test")
    result = subprocess.run(
        [python_tool("prefect"), "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env={**os.environ, **TEST_ENV, "INTERLINKED_CODE_DIR": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for deployment in DEPLOYMENTS:
            found = client.read_deployment_by_name(_full_name(deployment))
            assert found.work_pool_name == deployment["work_pool"]["name"]
            expected_variables = deployment["work_pool"].get("job_variables") or {}
            assert found.job_variables == expected_variables
        [submission] = [d for d in DEPLOYMENTS if _full_name(d) == "process-submission/local"]
        deployed = client.read_deployment_by_name("process-submission/local")
        triggers = client.read_resource_related_automations(f"prefect.deployment.{deployed.id}")
        assert [t.name for t in triggers] == [t["name"] for t in submission["triggers"]]
