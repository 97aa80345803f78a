"""IAM enforcement of the local emulator, on an emulator process of its own (no Prefect).

Every denial asserted here is the emulator's AccessDenied (moto's policy evaluator, with the
session-policy intersection and ``s3:prefix`` conditions of :mod:`interlinked.local.emulator.iam`),
never our own validation: the policies are the ones the stack generates
(:mod:`interlinked.local.identities`, :mod:`flows.script_jobs.scoped`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import pytest
from _nasty_keys import nasty_keys
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _stack import aws_error_code
from flows.script_jobs.scoped import ScopeError, session_policy
from flows.submissions import scoped as submission_scope
from interlinked.local import identities
from interlinked.settings import Settings

pytestmark = pytest.mark.integration

REGION = "us-east-1"
DATA, ANALYSIS = "iam-data", "iam-analysis"
JOB, OTHER_JOB = "0b4d6c1e-1111-4a2b-9c3d-000000000001", "0b4d6c1e-2222-4a2b-9c3d-000000000002"
CONFIG = Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulator:
    def __init__(self, state_dir: Path, log: Path):
        self.state_dir, self.log = state_dir, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "interlinked.local.emulator", "--port", str(self.port)]
        command += ["--state-dir", str(self.state_dir), "--enforce-iam"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/config", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"the emulator did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    def cleanup(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def client(self, service: str, key: str = "test", secret: str = "test", token: str | None = None):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            config=CONFIG,
        )


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    base = tmp_path_factory.mktemp("iam")
    process = Emulator(base / "aws", base / "emulator.log")
    process.start()
    old = {
        name: os.environ.get(name)
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    os.environ.update(AWS_ENDPOINT_URL=process.url, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    try:
        s3 = process.client("s3")
        for bucket in (DATA, ANALYSIS):
            s3.create_bucket(Bucket=bucket)
        settings_ = Settings(state_dir=base / "state", data_bucket=DATA, analysis_bucket=ANALYSIS)
        identities.ensure_identities(settings_, {})
        process.settings = settings_
        process.base = base
        yield process
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.cleanup()


def _user(emu, part: str):
    keys = json.loads(identities.credentials_file(emu.settings, identities.SERVICE_USERS[part]).read_text())
    return keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"]


def _job_session(emu, job_id: str, script: str):
    """What the script-job flow does: the flow-run user assumes the job role with the job's session policy."""
    sts = emu.client("sts", *_user(emu, "worker"))
    arn = json.loads(identities.credentials_file(emu.settings, identities.SCRIPT_JOB_ROLE).read_text())["arn"]
    credentials = sts.assume_role(
        RoleArn=arn, RoleSessionName=f"job-{job_id}", Policy=json.dumps(session_policy(DATA, job_id, script))
    )["Credentials"]
    return emu.client(
        "s3", credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
    )


def test_keys_are_checked_and_test_test_is_admin(emu):
    assert aws_error_code(lambda: emu.client("s3").list_buckets()) == "OK"
    assert (
        aws_error_code(lambda: emu.client("s3", "AKIAUNKNOWN000000000", "x").list_buckets())
        == "InvalidAccessKeyId"
    )
    assert aws_error_code(lambda: emu.client("s3", "test", "wrong").list_buckets()) == "SignatureDoesNotMatch"


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_urls_of_both_signature_versions_are_served(emu, signature_version):
    """The analysis service hands out presigned result URLs (SigV4's X-Amz-Signature, or SigV2's
    AWSAccessKeyId/Signature/Expires query string, whichever its client makes): both are served."""
    emu.client("s3").put_object(Bucket=DATA, Key="worker-results/presigned", Body=b"result")
    s3 = boto3.client(
        "s3",
        endpoint_url=emu.url,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(signature_version=signature_version),
    )
    url = s3.generate_presigned_url("get_object", Params={"Bucket": DATA, "Key": "worker-results/presigned"})
    assert ("X-Amz-Signature" in url) == (signature_version == "s3v4")
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.read() == b"result"


def test_a_service_user_has_only_its_own_access(emu):
    bridge = emu.client("s3", *_user(emu, "bridge"))
    assert aws_error_code(lambda: bridge.list_objects_v2(Bucket=DATA)) == "OK"  # reads events' objects
    assert (
        aws_error_code(lambda: bridge.put_object(Bucket=DATA, Key="results/x/result.json", Body=b"1"))
        == "AccessDenied"
    )
    assert aws_error_code(lambda: emu.client("iam", *_user(emu, "worker")).list_users()) == "AccessDenied"


def test_a_script_job_session_reaches_its_own_keys_only(emu):
    admin = emu.client("s3")
    admin.put_object(Bucket=DATA, Key=f"jobs/{JOB}.json", Body=b"{}")
    admin.put_object(Bucket=DATA, Key=f"scripts/{JOB}/work.py", Body=b"print(1)")
    admin.put_object(Bucket=DATA, Key=f"results/{OTHER_JOB}/result.json", Body=b"42")
    admin.put_object(Bucket=DATA, Key=f"jobs/{OTHER_JOB}.json", Body=b"{}")
    admin.put_object(Bucket=DATA, Key="budgets/ledger.json", Body=b"{}")
    admin.put_object(Bucket=ANALYSIS, Key="grp-b/inputs/data.csv", Body=b"1")
    job = _job_session(emu, JOB, f"{JOB}/work.py")
    # its own work
    assert aws_error_code(lambda: job.get_object(Bucket=DATA, Key=f"jobs/{JOB}.json")) == "OK"
    assert aws_error_code(lambda: job.get_object(Bucket=DATA, Key=f"scripts/{JOB}/work.py")) == "OK"
    assert (
        aws_error_code(lambda: job.put_object(Bucket=DATA, Key=f"results/{JOB}/extra.csv", Body=b"1")) == "OK"
    )
    assert aws_error_code(lambda: job.put_object(Bucket=DATA, Key=f"logs/{JOB}.log", Body=b"1")) == "OK"
    # everything else
    denied = {
        "another job's result": lambda: job.get_object(Bucket=DATA, Key=f"results/{OTHER_JOB}/result.json"),
        "overwrite another job's result": lambda: job.put_object(
            Bucket=DATA, Key=f"results/{OTHER_JOB}/result.json", Body=b"0"
        ),
        "another job's spec": lambda: job.get_object(Bucket=DATA, Key=f"jobs/{OTHER_JOB}.json"),
        "rewrite its own spec": lambda: job.put_object(Bucket=DATA, Key=f"jobs/{JOB}.json", Body=b"{}"),
        "the budget ledger": lambda: job.get_object(Bucket=DATA, Key="budgets/ledger.json"),
        "another group's input": lambda: job.get_object(Bucket=ANALYSIS, Key="grp-b/inputs/data.csv"),
        "listing the bucket": lambda: job.list_objects_v2(Bucket=DATA),
        "deleting its own result": lambda: job.delete_object(Bucket=DATA, Key=f"results/{JOB}/extra.csv"),
    }
    outcome = {what: aws_error_code(call) for what, call in denied.items()}
    assert outcome == dict.fromkeys(denied, "AccessDenied")


def test_the_script_job_role_trusts_only_the_flow_run_user(emu):
    arn = json.loads(identities.credentials_file(emu.settings, identities.SCRIPT_JOB_ROLE).read_text())["arn"]
    sts = emu.client("sts", *_user(emu, "bridge"))
    assert aws_error_code(lambda: sts.assume_role(RoleArn=arn, RoleSessionName="x-job")) == "AccessDenied"


def test_a_group_reaches_its_own_prefix_only(emu):
    own = identities.ensure_group(emu.settings, "grp-a")
    identities.ensure_group(emu.settings, "grp-b")
    s3 = emu.client("s3", own["AWS_ACCESS_KEY_ID"], own["AWS_SECRET_ACCESS_KEY"])
    submission = json.dumps({"dataname": "inputs/a.csv", "configname": "configs/c.json", "timestamp": "t1"})
    assert aws_error_code(lambda: s3.put_object(Bucket=ANALYSIS, Key="grp-a/inputs/a.csv", Body=b"1")) == "OK"
    assert (
        aws_error_code(
            lambda: s3.put_object(Bucket=ANALYSIS, Key="grp-a/submissions/submit.json", Body=submission)
        )
        == "OK"
    )
    assert aws_error_code(lambda: s3.list_objects_v2(Bucket=ANALYSIS, Prefix="grp-a/")) == "OK"
    assert (
        aws_error_code(lambda: s3.put_object(Bucket=ANALYSIS, Key="grp-a/results/job__x/end.txt", Body=b"1"))
        == "AccessDenied"
    )
    for call in (
        lambda: s3.list_objects_v2(Bucket=ANALYSIS, Prefix="grp-b/"),
        lambda: s3.list_objects_v2(Bucket=ANALYSIS),
        lambda: s3.list_objects_v2(Bucket=ANALYSIS, Prefix="grp-a"),  # would list grp-ab/ too
        lambda: s3.put_object(Bucket=ANALYSIS, Key="grp-b/submissions/submit.json", Body=submission),
        lambda: s3.get_object(Bucket=ANALYSIS, Key="grp-b/inputs/data.csv"),
        lambda: s3.put_object(Bucket=DATA, Key="grp-a/inputs/a.csv", Body=b"1"),
    ):
        assert aws_error_code(call) == "AccessDenied"


def test_iam_state_survives_a_restart(emu):
    group = identities.ensure_group(emu.settings, "grp-restart")
    emu.stop()
    emu.start()
    s3 = emu.client("s3", group["AWS_ACCESS_KEY_ID"], group["AWS_SECRET_ACCESS_KEY"])
    assert (
        aws_error_code(lambda: s3.put_object(Bucket=ANALYSIS, Key="grp-restart/inputs/x", Body=b"1")) == "OK"
    )
    assert (
        aws_error_code(lambda: s3.put_object(Bucket=ANALYSIS, Key="grp-a/inputs/x", Body=b"1"))
        == "AccessDenied"
    )
    assert aws_error_code(lambda: emu.client("s3").list_buckets()) == "OK"
    # ... and `up` finds the saved keys still valid instead of making new ones
    assert (
        identities.ensure_group(emu.settings, "grp-restart")["AWS_ACCESS_KEY_ID"]
        == group["AWS_ACCESS_KEY_ID"]
    )


# ---- property: the generated session policy never grants outside the job's own keys ---------------

_PIECES = [f"results/{JOB}/", f"results/{JOB}", f"logs/{JOB}", f"jobs/{JOB}", "results/", OTHER_JOB, JOB]
_KEYS = st.one_of(
    nasty_keys(_PIECES, max_pieces=6),
    st.builds(lambda n: f"results/{JOB}/" + "a" * n, st.integers(900, 1010)),
)


def _allowed(key: str) -> bool:
    # IAM matches keys literally: "results/JOB/../x" is under the prefix (S3 never resolves "..").
    return key in {f"jobs/{JOB}.json", f"scripts/{JOB}/work.py", f"logs/{JOB}.log"} or key.startswith(
        f"results/{JOB}/"
    )


@pytest.fixture(scope="module")
def job_s3(emu):
    return _job_session(emu, JOB, f"{JOB}/work.py")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_KEYS)
def test_nasty_keys_are_never_granted_outside_the_job(job_s3, key):
    key = key.lstrip("/") or "x"  # S3 keys: botocore sends a leading "/" as part of the path
    if len(key.encode()) > 1024:
        return
    code = aws_error_code(lambda: job_s3.put_object(Bucket=DATA, Key=key, Body=b"p"))
    # Granted means written. Keys the emulator's HTTP layer cannot route (e.g. "\n": a bare 404 from
    # the web server, not S3) are refused before any policy is read, which is no grant either.
    if code == "OK":
        assert _allowed(key), f"{key!r} was granted"
    elif not _allowed(key):
        assert code in {"AccessDenied", "404"}, f"{key!r}: {code}"


def test_policy_refuses_wildcards_in_keys():
    with pytest.raises(ScopeError):
        session_policy(DATA, "a*", None)


# ---- a submission's session (flows.submissions.scoped) ----------------------------------------------

SUBMISSION_PREFIX = f"grp-a/results/job__{ANALYSIS}_t1/"


def _submission_session(emu):
    """What the submission flow does: the flow-run user assumes the submission role with the
    submission's session policy."""
    sts = emu.client("sts", *_user(emu, "worker"))
    arn = json.loads(identities.credentials_file(emu.settings, identities.SUBMISSION_ROLE).read_text())["arn"]
    policy = submission_scope.session_policy(ANALYSIS, "grp-a", SUBMISSION_PREFIX)
    credentials = sts.assume_role(RoleArn=arn, RoleSessionName="submission-grp-a", Policy=json.dumps(policy))[
        "Credentials"
    ]
    return emu.client(
        "s3", credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
    )


@pytest.fixture(scope="module")
def submission_s3(emu):
    return _submission_session(emu)


def test_the_submission_role_trusts_only_the_flow_run_user(emu):
    arn = json.loads(identities.credentials_file(emu.settings, identities.SUBMISSION_ROLE).read_text())["arn"]
    sts = emu.client("sts", *_user(emu, "bridge"))
    assert (
        aws_error_code(lambda: sts.assume_role(RoleArn=arn, RoleSessionName="x-submission")) == "AccessDenied"
    )


_SUBMISSION_PIECES = [
    "grp-a/",
    "grp-ab/",
    "grp-b/",
    "inputs/",
    "configs/",
    "results/",
    f"job__{ANALYSIS}_t1/",
    "process_results/",
    "logs/",
]
_SUBMISSION_KEYS = nasty_keys(_SUBMISSION_PIECES, max_pieces=7)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_SUBMISSION_KEYS)
def test_nasty_keys_are_never_granted_outside_the_submission(submission_s3, key):
    key = key.lstrip("/") or "x"
    if len(key.encode()) > 1024:
        return
    own = key.startswith(SUBMISSION_PREFIX + "process_results/")
    code = aws_error_code(lambda: submission_s3.put_object(Bucket=ANALYSIS, Key=key, Body=b"p"))
    if code == "OK":  # granted means written
        assert own, f"{key!r} was granted"
    elif not own:
        assert code in {"AccessDenied", "404"}, f"{key!r}: {code}"
    # Reading: its group's inputs/ and configs/ and its own results (a missing key is NoSuchKey
    # only where reading is granted).
    readable = own or key.startswith(("grp-a/inputs/", "grp-a/configs/"))
    code = aws_error_code(lambda: submission_s3.get_object(Bucket=ANALYSIS, Key=key))
    if code == "AccessDenied":
        assert not readable, f"{key!r} was refused"
    elif code != "404":
        assert readable, f"{key!r}: {code}"


def test_groups_add_prints_keys_that_work_for_its_own_prefix_only(emu):
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "INTERLINKED_", "PREFECT_"))
    }
    env.update(
        INTERLINKED_AWS_PORT=str(emu.port),
        INTERLINKED_STATE_DIR=str(emu.settings.state_dir),
        INTERLINKED_ANALYSIS_BUCKET=ANALYSIS,
        INTERLINKED_DATA_BUCKET=DATA,
    )
    cli = [sys.executable, "-m", "interlinked.cli", "groups", "add"]
    shown = subprocess.run([*cli, "grp-cli"], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"s3://{ANALYSIS}/grp-cli/" in shown.stdout and "export AWS_ACCESS_KEY_ID=" in shown.stdout
    assert "[interlinked-grp-cli]" in shown.stdout
    assert f"s3://{DATA}/groups/grp-cli.json" in shown.stdout  # the writer check's registry
    done = subprocess.run([*cli, "grp-cli", "--json"], env=env, capture_output=True, text=True, timeout=120)
    group = json.loads(done.stdout)
    s3 = emu.client("s3", group["AWS_ACCESS_KEY_ID"], group["AWS_SECRET_ACCESS_KEY"])
    assert (
        aws_error_code(
            lambda: s3.put_object(Bucket=ANALYSIS, Key="grp-cli/submissions/submit.json", Body=b"{}")
        )
        == "OK"
    )
    assert aws_error_code(lambda: s3.list_objects_v2(Bucket=ANALYSIS, Prefix="grp-a/")) == "AccessDenied"
    bad = subprocess.run([*cli, "../etc"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "group name" in bad.stderr


# ---- the writer of an object, in S3's notifications (userIdentity.principalId) -----------------------


def _notifications(emu, bucket: str, *, create: bool = True):
    """A queue receiving the bucket's object-created notifications (as the stack wires them)."""
    sqs = emu.client("sqs")
    url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    if create:
        emu.client("s3").create_bucket(Bucket=bucket)
    emu.client("s3").put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )

    def received(key: str) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                body = json.loads(message["Body"])
                for record in body.get("Records", []):
                    if unquote_plus(record["s3"]["object"]["key"]) == key:
                        return record
        pytest.fail(f"no notification for {key}")

    return received


def test_notifications_name_the_identity_that_wrote_the_object(emu):
    """As on AWS: ``AWS:<UserId>`` for an IAM user (a group's, the admin's), ``AWS:<RoleId>:<session>``
    for an assumed role; each request its own caller, also on one kept-alive connection."""
    received = _notifications(emu, "iam-writers")
    group = identities.ensure_group(emu.settings, "grp-w", "iam-writers")
    iam = emu.client("iam")
    group_id = iam.get_user(UserName=group["user"])["User"]["UserId"]
    admin_id = iam.get_user(UserName="interlinked-admin")["User"]["UserId"]
    s3 = emu.client("s3", group["AWS_ACCESS_KEY_ID"], group["AWS_SECRET_ACCESS_KEY"])
    admin = emu.client("s3")
    s3.put_object(Bucket="iam-writers", Key="grp-w/submissions/a.json", Body=b"{}")
    assert received("grp-w/submissions/a.json")["userIdentity"] == {"principalId": f"AWS:{group_id}"}
    admin.put_object(Bucket="iam-writers", Key="grp-w/submissions/b.json", Body=b"{}")
    assert received("grp-w/submissions/b.json")["userIdentity"] == {"principalId": f"AWS:{admin_id}"}
    s3.put_object(Bucket="iam-writers", Key="grp-w/submissions/c.json", Body=b"{}")  # same connection
    assert received("grp-w/submissions/c.json")["userIdentity"] == {"principalId": f"AWS:{group_id}"}
    # a presigned upload: the owner of the key that signed it
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "iam-writers", "Key": "grp-w/submissions/d.json"}
    )
    upload = urllib.request.Request(
        url, data=b"{}", method="PUT", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(upload, timeout=30):
        pass
    assert received("grp-w/submissions/d.json")["userIdentity"] == {"principalId": f"AWS:{group_id}"}

    received_data = _notifications(emu, DATA, create=False)
    role_id = iam.get_role(RoleName=identities.SCRIPT_JOB_ROLE)["Role"]["RoleId"]
    _job_session(emu, JOB, f"{JOB}/work.py").put_object(Bucket=DATA, Key=f"logs/{JOB}.log", Body=b"1")
    assert received_data(f"logs/{JOB}.log")["userIdentity"] == {"principalId": f"AWS:{role_id}:job-{JOB}"}
