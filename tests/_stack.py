"""The test session's local stack: environment, CLI runner and handle.

Integration tests share one real local stack (PostgreSQL, a Prefect server on it, a moto server
and the services), started once per session through the real `interlinked up` on free ports and a
temporary state directory, so a developer's own stack is never touched. The environment is set
here, at import time, because Prefect reads its settings when it is first imported.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTERLINKED = str(Path(sys.executable).with_name("interlinked"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_STATE_DIR = Path(tempfile.mkdtemp(prefix="interlinked-test-"))
_PREFECT_PORT = _free_port()
_AWS_PORT = _free_port()
_POSTGRES_PORT = _free_port()
_SCRIPT_API_PORT = _free_port()
TEST_ENV = {
    "INTERLINKED_STATE_DIR": str(_STATE_DIR / "state"),
    "INTERLINKED_PREFECT_PORT": str(_PREFECT_PORT),
    "INTERLINKED_AWS_PORT": str(_AWS_PORT),
    "INTERLINKED_POSTGRES_PORT": str(_POSTGRES_PORT),
    "INTERLINKED_SCRIPT_API_PORT": str(_SCRIPT_API_PORT),
    "INTERLINKED_SCRIPT_API_URL": f"http://127.0.0.1:{_SCRIPT_API_PORT}/",
    "PREFECT_API_URL": f"http://127.0.0.1:{_PREFECT_PORT}/api",
    "PREFECT_UI_URL": f"http://127.0.0.1:{_PREFECT_PORT}",
    "PREFECT_HOME": str(_STATE_DIR / "prefect-home"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The stack's Prefect API secret, given (as a user may) rather than made by `up`: this process's
    # Prefect client reads it once, at import, and must keep reaching the stack after `down --wipe`.
    "PREFECT_API_AUTH_STRING": f"interlinked-test:{secrets.token_urlsafe(16)}",
    # Storage bypass (a submit file's resultpath) may write here, and only here (test_submissions).
    "INTERLINKED_SUBMISSION_RESULTPATH_ALLOWED": '["interlinked-bypass-test/lab-out"]',
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_AWS_PORT}",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
os.environ.update(TEST_ENV)


def run_cli(*args: str, input: str | None = None, timeout: float = 600, cwd: Path | None = None):
    """Run the real `interlinked` console script with the test stack's environment."""
    return subprocess.run(
        [INTERLINKED, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **TEST_ENV},
        cwd=cwd or ROOT,
    )


def cli_json(*args: str) -> dict:
    """``interlinked ARGS --json`` on the test stack: its JSON (the command must succeed)."""
    result = run_cli(*args, "--json")
    assert result.returncode == 0, f"{args} failed ({result.returncode}): {result.stderr}"
    return json.loads(result.stdout)


JOB_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def wait_for_job(job_id: str, until=lambda job: job["state"] in JOB_TERMINAL, timeout: float = 180) -> dict:
    """``jobs show JOB_ID`` once ``until(job)`` holds (by default: the job ended), or at the timeout."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        job = cli_json("jobs", "show", job_id)
        if until(job) or time.monotonic() > deadline:
            return job
        time.sleep(1)


def put_scripts(s3, bucket: str, scripts: dict[str, str]) -> None:
    """Upload ``{key: source}`` (dedented) to ``s3://bucket/scripts/{key}``."""
    import textwrap

    for key, source in scripts.items():
        s3.put_object(Bucket=bucket, Key=f"scripts/{key}", Body=textwrap.dedent(source).lstrip().encode())


class StackHandle:
    """The session's local stack; a test that stops it leaves it to be started again on demand."""

    def __init__(self) -> None:
        self.state_dir = Path(TEST_ENV["INTERLINKED_STATE_DIR"])
        self.description: dict | None = None
        self.ups = 0

    def ensure_up(self) -> dict:
        if self.description is None:
            result = run_cli("up")
            self.ups += 1
            if result.returncode != 0:
                pytest.fail(
                    f"`interlinked up` failed ({result.returncode}):\n{result.stderr}\n{result.stdout}"
                )
            self.description = json.loads(run_cli("env", "--json").stdout)
        return self.description

    def mark_down(self) -> None:
        self.description = None

    def pids(self) -> dict[str, int]:
        pid_dir = self.state_dir / "pids"
        return (
            {p.stem: json.loads(p.read_text())["pid"] for p in pid_dir.glob("*.json")}
            if pid_dir.exists()
            else {}
        )


STACK = StackHandle()


def aws_error_code(call) -> str:
    """The AWS error code ``call()`` raised (``AccessDenied``, ...), or ``"OK"`` when it succeeded."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"]
    return "OK"


def grant_stack_access(*buckets: str) -> None:
    """Let the stack's own identities use buckets a test made (as an admin attaches a policy on AWS):
    the flow runs read and write them (and the submission role its areas), the bridge and the
    analysis service read them. With IAM enforced (the default), a bucket outside the stack's
    configuration is otherwise AccessDenied."""
    import boto3

    from interlinked.local import identities

    iam = boto3.client("iam")
    access = {
        "worker": identities.OBJECT_WRITE,
        "bridge": identities.OBJECT_READ,
        "analysis-service": identities.OBJECT_READ,
    }
    for part, actions in access.items():
        for bucket in buckets:
            iam.put_user_policy(
                UserName=identities.SERVICE_USERS[part],
                PolicyName=f"test-bucket-{bucket}"[:128],
                PolicyDocument=json.dumps(
                    {"Version": identities.VERSION, "Statement": identities._s3(actions, [bucket])}
                ),
            )
    for bucket in buckets:  # and the submissions' own sessions read and write their keys there
        iam.put_role_policy(
            RoleName=identities.SUBMISSION_ROLE,
            PolicyName=f"test-bucket-{bucket}"[:128],
            PolicyDocument=json.dumps(
                {"Version": identities.VERSION, "Statement": identities.submission_statements([bucket])}
            ),
        )
