"""Helpers of the Terraform tests: tool discovery, terraform runner, the local-stack launcher, HCL
reading (python-hcl2) and the shared checks of modules/compute's session roles.

Imported by tests/terraform/conftest.py (fixtures) and the test modules (constants).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "infra" / "terraform"
PACKAGE_SCRIPT = TF_DIR / "scripts" / "package_lambda.py"
# Configurations checked with init + validate, relative to infra/terraform.
CONFIG_DIRS = (
    ".",
    "modules/storage",
    "modules/messaging",
    "modules/compute",
    "modules/bridge",
    "modules/database",
    "modules/tasks_table",
    "modules/script_api",
    "modules/jobs_api",
    "modules/group",
    "examples/local",
    "examples/aws",
)
COMPUTE_DIR = TF_DIR / "modules" / "compute"
LOCAL_REGION = "us-east-1"
LOCAL_STACK_TIMEOUT = 420  # seconds for moto start + init + apply


################################################################################
# HCL, as python-hcl2 reads it (expressions stay strings: "${...}")
################################################################################


def clean(value):
    """python-hcl2 >= 7 keeps the quotes of strings and keys and marks blocks; drop both."""
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse(path: Path) -> dict:
    with path.open() as fh:
        return clean(hcl2.load(fh))


def blocks(path: Path, kind: str) -> list[tuple[str, dict]]:
    """(name, body) of every `kind` block (variable/output) in a file."""
    found = []
    for entry in parse(path).get(kind, []):
        for name, body in entry.items():
            found.append((name, body))
    return found


def resources(path: Path) -> list[tuple[str, str, dict]]:
    found = []
    for entry in parse(path).get("resource", []):
        for rtype, named in entry.items():
            for name, body in named.items():
                found.append((rtype, name, body))
    return found


def policy_documents(path: Path) -> dict[str, dict]:
    """Body of every ``aws_iam_policy_document`` data source of a file, by name."""
    return {
        name: body
        for kind, found in blocks(path, "data")
        if kind == "aws_iam_policy_document"
        for name, body in found.items()
    }


def hcl_locals(path: Path) -> dict:
    """Every local of a file, its ``locals`` blocks merged."""
    merged: dict = {}
    for body in parse(path).get("locals", []):
        merged.update(body)
    return merged


def assert_uses_key_statement(document: dict) -> None:
    """A modules/compute policy document gets the KMS key only through the shared ``use_key``
    document: kms:Decrypt and kms:GenerateDataKey on ``kms_key_arn``, only when one is given."""
    assert "dynamic" not in document
    assert document["source_policy_documents"] == "${data.aws_iam_policy_document.use_key[*].json}"
    use_key = policy_documents(COMPUTE_DIR / "main.tf")["use_key"]
    assert use_key["count"] == "${var.kms_key_arn == null ? 0 : 1}"
    (statement,) = use_key["statement"]
    assert statement["actions"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["resources"] == ["${var.kms_key_arn}"]


def check_session_role(key: str, *, name: str, env: str, create: str, assume_sid: str) -> dict:
    """Check one of modules/compute's session roles (``local.session_role_specs[key]``) and return
    its policy document's body.

    A session role is created when ``create`` (the module variable) is true, as
    ``aws_iam_role.session[key]`` named ``{name_prefix}-{name}``; only the flow-run role may assume
    it (the shared trust document); the flow-run role has one inline policy for it, named
    ``assume-{name}`` (statement ``assume_sid``), that may assume this role's ARN only; its inline
    policy (named ``name``) is ``data.aws_iam_policy_document.{key}``; the flow runs' environment
    (the Batch job definition and the ECS pool's ``env``) names its ARN under ``env``; and ``moved``
    blocks carry the state of the former ``count`` addresses (the role, its policy and the flow-run
    role's ``flow_run_assume_{key}``) to the ``for_each`` key, so an upgrade replaces none of them.
    """
    main = COMPUTE_DIR / "main.tf"
    documents = policy_documents(main)
    local = hcl_locals(main)
    found = {(rtype, rname): body for rtype, rname, body in resources(main)}

    spec = local["session_role_specs"][key]
    assert spec["create"] == f"${{var.{create}}}"
    assert spec["name"] == name
    assert spec["env"] == env
    assert spec["assume_sid"] == assume_sid
    assert spec["policy"] == f"${{one(data.aws_iam_policy_document.{key}[*].json)}}"
    assert documents[key]["count"] == f"${{var.{create} ? 1 : 0}}"
    assert (
        local["session_roles"]
        == "${{for key, role in local.session_role_specs : key => role if role.create}}"
    )

    role = found[("aws_iam_role", "session")]
    assert role["for_each"] == "${local.session_roles}"
    assert role["name"] == "${var.name_prefix}-${each.value.name}"
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.session_assume.json}"
    (assume,) = documents["session_assume"]["statement"]
    assert assume["effect"] == "Allow" and assume["actions"] == ["sts:AssumeRole"]
    assert assume["principals"] == [{"type": "AWS", "identifiers": ["${aws_iam_role.flow_run.arn}"]}]

    policy = found[("aws_iam_role_policy", "session")]
    assert policy["for_each"] == "${local.session_roles}"
    assert (policy["name"], policy["policy"]) == ("${each.value.name}", "${each.value.policy}")
    assert policy["role"] == "${aws_iam_role.session[each.key].id}"

    may_assume = found[("aws_iam_role_policy", "flow_run_assume_session")]
    assert may_assume["for_each"] == "${local.session_roles}"
    assert may_assume["name"] == "assume-${each.value.name}"  # the former policies' names
    assert may_assume["role"] == "${aws_iam_role.flow_run.id}"
    assert may_assume["policy"] == "${data.aws_iam_policy_document.flow_run_assume_session[each.key].json}"
    assume_document = documents["flow_run_assume_session"]
    assert assume_document["for_each"] == "${local.session_roles}"
    (statement,) = assume_document["statement"]
    assert statement["sid"] == "${each.value.assume_sid}"
    assert statement["effect"] == "Allow" and statement["actions"] == ["sts:AssumeRole"]
    assert statement["resources"] == ["${aws_iam_role.session[each.key].arn}"]  # this role only

    assert local["session_role_environment"] == (
        "${{for key, role in local.session_roles : role.env => aws_iam_role.session[key].arn}}"
    )
    assert "local.session_role_environment," in main.read_text()  # Batch jobs' environment
    outputs = (COMPUTE_DIR / "outputs.tf").read_text()
    assert "env                       = local.session_role_environment" in outputs  # ECS work pool

    moved = {(entry["from"], entry["to"]) for entry in parse(main).get("moved", [])}
    for rtype in ("aws_iam_role", "aws_iam_role_policy"):
        assert (f"${{{rtype}.{key}[0]}}", f'${{{rtype}.session["{key}"]}}') in moved
    assert (
        f"${{aws_iam_role_policy.flow_run_assume_{key}[0]}}",
        f'${{aws_iam_role_policy.flow_run_assume_session["{key}"]}}',
    ) in moved
    return documents[key]


################################################################################
# Tools
################################################################################


def moto_provider(services: list[str]) -> str:
    """The ``aws`` provider block of a plan/apply against a private moto server, as a
    ``str.format`` template: its ``{endpoint}`` serves every one of ``services``."""
    width = max(len(service) for service in services)
    endpoints = "\n".join(f'    {service:<{width}} = "{{endpoint}}"' for service in sorted(services))
    return (
        'provider "aws" {{\n'
        '  region     = "us-east-1"\n'
        '  access_key = "test"\n'
        '  secret_key = "test"\n\n'
        "  s3_use_path_style           = true\n"
        "  skip_credentials_validation = true\n"
        "  skip_requesting_account_id  = true\n"
        "  skip_metadata_api_check     = true\n"
        "  skip_region_validation      = true\n\n"
        "  endpoints {{\n" + endpoints + "\n  }}\n}}\n"
    )


def find_terraform() -> str | None:
    return shutil.which("terraform")


def find_plugin_dir() -> Path | None:
    """The offline provider mirror (HOST/hashicorp/aws/VERSION/PLATFORM layout), or None."""
    candidates: list[Path] = []
    if os.environ.get("TF_PLUGIN_DIR"):
        candidates.append(Path(os.environ["TF_PLUGIN_DIR"]))
    helper = REPO.parent / "shared" / "tools" / "tf-plugin-dir"
    if helper.exists():
        try:
            out = subprocess.run(
                ["bash", str(helper)], capture_output=True, text=True, timeout=60, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if out:
            candidates.append(Path(out))
    candidates.append(Path("/opt/tf-plugins"))
    for candidate in candidates:
        if list(candidate.glob("*/hashicorp/aws/*/linux_*")):
            return candidate
    return None


def find_checkov() -> str | None:
    local = REPO / ".tools" / "checkov-venv" / "bin" / "checkov"
    if local.exists():
        return str(local)
    return shutil.which("checkov")


def find_moto_server() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    if beside.exists():
        return str(beside)
    return shutil.which("moto_server")


def terraform_env(tmp_root: Path) -> dict[str, str]:
    """A clean environment for terraform: no AWS_* from the test session, no user CLI config."""
    cli_config = tmp_root / "terraformrc"
    cli_config.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
    )
    return env


def copy_tree(dest: Path) -> Path:
    """Copy infra/terraform (sources only) to dest and return the copy."""
    shutil.copytree(
        TF_DIR,
        dest,
        ignore=shutil.ignore_patterns(
            ".terraform", "build", "*.tfstate", "*.tfstate.*", ".terraform.lock.hcl"
        ),
    )
    return dest


@dataclass
class Terraform:
    binary: str
    plugin_dir: Path
    env: dict[str, str]

    def run(
        self, cwd: Path, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.binary, f"-chdir={cwd}", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"terraform {' '.join(args)} in {cwd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def init(self, cwd: Path) -> subprocess.CompletedProcess:
        return self.run(cwd, "init", "-backend=false", "-no-color", f"-plugin-dir={self.plugin_dir}")


################################################################################
# Static checks: one workspace, every configuration initialized and validated
################################################################################


@dataclass
class ValidatedWorkspace:
    root: Path
    results: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)


################################################################################
# The local stack: moto server + terraform apply of examples/local
################################################################################


@dataclass
class TerraformLocalStack:
    """examples/local applied to a private moto server.

    outputs:      every root-stack output (`module.interlinked`), plain values
    env:          the `interlinked_env` output (the `interlinked env --json` contract)
    endpoint_url: the moto server every client must use
    package_path: the bridge zip that was deployed
    """

    endpoint_url: str
    region: str
    outputs: dict[str, Any]
    env: dict[str, Any]
    package_path: Path
    workdir: Path

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    @property
    def client_env(self) -> dict[str, str]:
        """Environment variables pointing boto3 / the AWS CLI at this stack."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _LocalStackLauncher:
    """Starts moto and applies examples/local in a background thread; `result()` waits for it."""

    def __init__(self, terraform: Terraform, moto_server: str, tmp_root: Path) -> None:
        self.terraform = terraform
        self.moto_server = moto_server
        self.tmp_root = tmp_root
        self.moto: subprocess.Popen | None = None
        self._stack: TerraformLocalStack | None = None
        self._error: BaseException | None = None
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._run, name="terraform-local-stack", daemon=True)

    def start(self) -> _LocalStackLauncher:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self._stack = self._launch()
        except BaseException as exc:  # reported by result()
            self._error = exc
        self.seconds = time.monotonic() - started

    def _launch(self) -> TerraformLocalStack:
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = open(self.tmp_root / "moto.log", "wb")  # noqa: SIM115 - lives as long as the server
        moto_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.moto = subprocess.Popen(
            [self.moto_server, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=moto_env,
            start_new_session=True,
        )
        _wait_http(f"{endpoint}/moto-api/", timeout=60)

        workdir = copy_tree(self.tmp_root / "terraform")
        package = workdir / "build" / "bridge.zip"
        subprocess.run(
            [sys.executable, str(PACKAGE_SCRIPT), "--output", str(package)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        script_api_package = workdir / "build" / "script_api.zip"
        subprocess.run(
            [
                sys.executable,
                str(PACKAGE_SCRIPT),
                "--installed",
                "pydantic",
                "--output",
                str(script_api_package),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        example = workdir / "examples" / "local"
        self.terraform.init(example)
        self.terraform.run(
            example,
            "apply",
            "-auto-approve",
            "-no-color",
            "-parallelism=20",
            f"-var=aws_endpoint_url={endpoint}",
            f"-var=bridge_package_path={package}",
            f"-var=script_api_package_path={script_api_package}",
            timeout=LOCAL_STACK_TIMEOUT,
        )
        raw = json.loads(self.terraform.run(example, "output", "-json", "-no-color").stdout)
        return TerraformLocalStack(
            endpoint_url=endpoint,
            region=LOCAL_REGION,
            outputs=raw["stack"]["value"],
            env=raw["interlinked_env"]["value"],
            package_path=package,
            workdir=example,
        )

    def result(self) -> TerraformLocalStack:
        self._thread.join(LOCAL_STACK_TIMEOUT + 120)
        if self._thread.is_alive():
            raise RuntimeError("terraform apply of examples/local did not finish in time")
        if self._error is not None:
            raise self._error
        assert self._stack is not None
        return self._stack

    def stop(self) -> None:
        self._thread.join(LOCAL_STACK_TIMEOUT + 120)
        if self.moto is not None and self.moto.poll() is None:
            self.moto.terminate()
            try:
                self.moto.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.moto.kill()
                self.moto.wait(timeout=10)


@contextlib.contextmanager
def private_moto(log_dir: Path) -> Iterator[str]:
    """A moto server of its own for a plan's data sources (nothing is created in it unless the
    caller does); yields its endpoint URL and stops it afterwards. Skips without ``moto_server``."""
    import pytest

    moto_server = find_moto_server()
    if moto_server is None:
        pytest.skip(
            "moto_server not found next to the Python interpreter or on PATH (pip install 'moto[server]')"
        )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with (log_dir / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [moto_server, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            endpoint = f"http://127.0.0.1:{port}"
            _wait_http(f"{endpoint}/moto-api/", timeout=60)
            yield endpoint
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
