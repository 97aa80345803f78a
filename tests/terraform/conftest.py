"""Fixtures for the Terraform checks of infra/terraform.

Everything runs on copies of infra/terraform in temporary directories (init, .terraform/, state),
so the repository tree stays clean. Terraform and the offline hashicorp/aws mirror are required;
without them the tests skip and say what is missing.

`terraform_local_stack` is the entry point for tests that need real resources: one moto server on
a free port, `terraform apply` of examples/local against it (once per session, started in the
background as soon as the session knows it will be needed), and a `TerraformLocalStack` with the
outputs, the `interlinked_env` document, the endpoint URL and a boto3 client factory. The moto
server is killed at the end of the session (no destroy: nothing outlives it).
"""

from __future__ import annotations

import contextlib
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from tf_harness import (
    CONFIG_DIRS,
    PACKAGE_SCRIPT,
    Terraform,
    TerraformLocalStack,
    ValidatedWorkspace,
    _LocalStackLauncher,
    copy_tree,
    find_moto_server,
    find_plugin_dir,
    find_terraform,
    terraform_env,
)

__all__ = ["TerraformLocalStack"]


@pytest.fixture(scope="session")
def terraform(tmp_path_factory) -> Terraform:
    binary = find_terraform()
    if binary is None:
        pytest.skip("terraform binary not found on PATH (Terraform >= 1.5 is needed)")
    plugin_dir = find_plugin_dir()
    if plugin_dir is None:
        pytest.skip(
            "offline provider mirror with hashicorp/aws not found "
            "(set TF_PLUGIN_DIR or provide ../shared/tools/tf-plugin-dir)"
        )
    return Terraform(binary, plugin_dir, terraform_env(tmp_path_factory.mktemp("tf-env")))


@pytest.fixture(scope="session")
def validated_workspace(terraform, tmp_path_factory) -> ValidatedWorkspace:
    """A copy of infra/terraform with every configuration inited and validated (2 at a time)."""
    ws = ValidatedWorkspace(copy_tree(tmp_path_factory.mktemp("tf-static") / "terraform"))

    def check(rel: str) -> tuple[str, subprocess.CompletedProcess]:
        cwd = ws.root / rel
        init = terraform.init(cwd)
        if init.returncode != 0:
            return rel, init
        return rel, terraform.run(cwd, "validate", "-no-color", "-json", check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for rel, proc in pool.map(check, CONFIG_DIRS):
            ws.results[rel] = proc
    return ws


@pytest.fixture(scope="session")
def _local_stack_launcher(terraform, tmp_path_factory):
    moto_server = find_moto_server()
    if moto_server is None:
        pytest.skip(
            "moto_server not found next to the Python interpreter or on PATH (pip install 'moto[server]')"
        )
    launcher = _LocalStackLauncher(terraform, moto_server, tmp_path_factory.mktemp("tf-local")).start()
    yield launcher
    launcher.stop()


@pytest.fixture(scope="session", autouse=True)
def _start_local_stack_early(request):
    """Start the apply at the beginning of the session when any selected test will need it.

    The apply mostly waits on the AWS provider's SQS/S3 propagation timers, so it runs while the
    static checks use the CPU.
    """
    if any("terraform_local_stack" in getattr(item, "fixturenames", ()) for item in request.session.items):
        # When a tool is missing, the tests that need the stack skip with the reason themselves.
        with contextlib.suppress(pytest.skip.Exception):
            request.getfixturevalue("_local_stack_launcher")


@pytest.fixture(scope="session")
def terraform_local_stack(_local_stack_launcher) -> TerraformLocalStack:
    """examples/local applied to a fresh moto server: outputs, interlinked_env, endpoint URL, clients."""
    return _local_stack_launcher.result()


@pytest.fixture(scope="session")
def package_lambda_module():
    """The packaging script imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("package_lambda", PACKAGE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


################################################################################
# Work pools on the Terraform-created compute (test_ecs_pool.py, test_batch_pool.py)
################################################################################


class PoolHarness:
    """The session's Prefect server driving work pools whose AWS side is the Terraform moto server.

    Flow runs are created on the real Prefect server of the session stack; workers are real
    `prefect worker start` processes; AWS is reached through an AwsCredentials block whose
    client parameters point at the moto server that examples/local was applied to.
    """

    def __init__(self, tf: TerraformLocalStack, tmp_dir):
        import uuid

        from prefect_aws import AwsClientParameters, AwsCredentials

        self.tf = tf
        self.tmp_dir = tmp_dir
        self.workers: list[tuple[subprocess.Popen, object]] = []
        block_name = f"tf-moto-{uuid.uuid4().hex[:8]}"
        AwsCredentials(
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name=tf.region,
            aws_client_parameters=AwsClientParameters(endpoint_url=tf.endpoint_url),
        ).save(block_name)
        self.credentials_block_name = block_name
        self.credentials_block_id = AwsCredentials.load(block_name)._block_document_id
        # How a pool's template (or the UI) refers to a saved block.
        self.credentials_ref = {"$ref": {"block_document_id": str(self.credentials_block_id)}}

    @staticmethod
    def client():
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def create_pool(self, name: str, worker_type: str, defaults: dict, edit=None) -> dict:
        """A work pool whose base job template is the worker type's default with `defaults` set
        (and `edit(template)` applied)."""
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.workers.base import BaseWorker

        template = BaseWorker.get_worker_class_from_type(worker_type).get_default_base_job_template()
        properties = template["variables"]["properties"]
        for key, value in defaults.items():
            assert key in properties, f"{worker_type} pools have no variable {key!r}"
            properties[key]["default"] = value
        if edit is not None:
            edit(template)
        with self.client() as client:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=worker_type, base_job_template=template), overwrite=True
            )
        return template

    def create_deployment(self, pool: str, name: str, job_variables: dict | None = None):
        with self.client() as client:
            flow_id = client.create_flow_from_name("script-job")
            return client.create_deployment(
                flow_id=flow_id,
                name=name,
                work_pool_name=pool,
                entrypoint="flows/script_jobs/flow.py:script_job",
                job_variables=job_variables or {},
                pull_steps=[
                    {
                        "prefect.deployments.steps.set_working_directory": {
                            "directory": "{{ $INTERLINKED_CODE_DIR }}"
                        }
                    }
                ],
            )

    def run(self, deployment_id, job_variables: dict | None = None):
        with self.client() as client:
            return client.create_flow_run_from_deployment(
                deployment_id, parameters={"job_id": "pool-test"}, job_variables=job_variables or {}
            )

    def read(self, flow_run_id):
        with self.client() as client:
            return client.read_flow_run(flow_run_id)

    def wait_for(self, flow_run_id, predicate, what: str, timeout: float = 60):
        import time

        deadline = time.monotonic() + timeout
        flow_run = self.read(flow_run_id)
        while time.monotonic() < deadline:
            if predicate(flow_run):
                return flow_run
            time.sleep(0.3)
            flow_run = self.read(flow_run_id)
        state = flow_run.state
        raise AssertionError(
            f"flow run {flow_run_id}: {what} not reached within {timeout} s; state "
            f"{state.type.value if state else None} {state.message if state else ''!r}, "
            f"infrastructure_pid {flow_run.infrastructure_pid!r}\n--- worker log ---\n{self.worker_log()}"
        )

    def logs(self, flow_run_id) -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with self.client() as client:
            found = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return [log.message for log in found]

    def wait_for_log(self, flow_run_id, fragment: str, timeout: float = 20) -> str:
        import time

        deadline = time.monotonic() + timeout
        while True:
            messages = self.logs(flow_run_id)
            for message in messages:
                if fragment in message:
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {fragment!r} in flow run {flow_run_id}: {messages}")
            time.sleep(0.5)

    def worker_env(self) -> dict[str, str]:
        import os

        return {
            **os.environ,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        }

    def start_worker(self, pool: str, worker_type: str) -> subprocess.Popen:
        import sys
        from pathlib import Path

        log = open(self.tmp_dir / f"worker-{pool}.log", "wb")  # noqa: SIM115 - closed with the worker
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("prefect")),
                "worker",
                "start",
                "--pool",
                pool,
                "--type",
                worker_type,
                "--name",
                f"{pool}-worker",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.worker_env(),
            start_new_session=True,
        )
        self.workers.append((process, log))
        return process

    def run_worker_once(
        self, pool: str, worker_type: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> str:
        import sys
        from pathlib import Path

        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("prefect")),
                "worker",
                "start",
                "--pool",
                pool,
                "--type",
                worker_type,
                "--run-once",
            ],
            capture_output=True,
            text=True,
            env={**self.worker_env(), **(env or {})},
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"`prefect worker start --run-once` exited {result.returncode}:\n{output}"
        )
        return output

    def worker_log(self) -> str:
        chunks = []
        for path in sorted(self.tmp_dir.glob("worker-*.log")):
            chunks.append(f"[{path.name}]\n" + path.read_text(errors="replace")[-6000:])
        return "\n".join(chunks) or "(no long-running worker)"

    def stop_workers(self) -> None:
        for process, log in self.workers:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            log.close()
        self.workers.clear()


@pytest.fixture(scope="session")
def pool_harness(stack_handle, terraform_local_stack, tmp_path_factory):
    """Work pools of the session's Prefect server on the Terraform-created moto resources."""
    stack_handle.ensure_up()
    harness = PoolHarness(terraform_local_stack, tmp_path_factory.mktemp("pools"))
    yield harness
    harness.stop_workers()
