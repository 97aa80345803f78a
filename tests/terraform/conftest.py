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
