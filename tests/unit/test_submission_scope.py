"""The session policy a submission's analysis runs with (flows.submissions.scoped), read with IAM's own
matching rules: literal keys, one trailing wildcard per grant, nothing outside the submission's
own keys whatever the names (Hypothesis). That the emulator enforces it is tested in
tests/integration/test_emulator_iam.py and, on the whole stack, tests/integration/test_submission_scope_stack.py."""

from __future__ import annotations

import json

import pytest
from _nasty_keys import nasty_keys
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flows.submissions.scoped import ScopeError, session_policy
from flows.submissions.validation import SubmissionRefused, check_timestamp, results_prefix
from interlinked.local.emulator.iam import _match

BUCKET, GROUP, TIMESTAMP = "lab-analysis", "grp-a", "t1"
PREFIX = results_prefix(GROUP, BUCKET, TIMESTAMP)  # grp-a/results/job__lab-analysis_t1/


def _allows(policy: dict, action: str, resource: str, *, prefix: str | None = None) -> bool:
    """Whether ``policy`` allows ``action`` on ``resource`` (IAM's wildcard matching; ``prefix``:
    the ListBucket request's s3:prefix)."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if action not in actions or not any(_match(pattern, resource) for pattern in resources):
            continue
        condition = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if condition is not None and (prefix is None or not any(_match(p, prefix) for p in condition)):
            continue
        return True
    return False


def _object(key: str, bucket: str = BUCKET) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def test_the_policy_names_the_groups_areas_and_the_jobs_results_literally():
    policy = session_policy(BUCKET, GROUP, PREFIX)
    assert policy["Statement"] == [
        {
            "Sid": "GroupInputs",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [_object("grp-a/inputs/*"), _object("grp-a/configs/*")],
        },
        {
            "Sid": "ListGroupInputs",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{BUCKET}",
            "Condition": {"StringLike": {"s3:prefix": ["grp-a/inputs/*"]}},
        },
        {
            "Sid": "OwnResults",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [_object("grp-a/results/job__lab-analysis_t1/process_results/*")],
        },
    ]


def test_a_storage_bypass_target_is_granted_instead_of_nothing_more():
    policy = session_policy(
        BUCKET, GROUP, PREFIX, result_target=("out", "lab-out/run1/job__x_t1/process_results/")
    )
    target = "arn:aws:s3:::out/lab-out/run1/job__x_t1/process_results/"
    assert _allows(policy, "s3:PutObject", target + "a.csv")
    assert not _allows(policy, "s3:PutObject", "arn:aws:s3:::out/lab-out/run1/other.csv")
    assert not _allows(
        policy, "s3:GetObject", "arn:aws:s3:::out/grp-a/inputs/x.csv"
    )  # only its bucket's inputs


@pytest.mark.parametrize(
    ("group", "prefix", "target"),
    [
        (GROUP, results_prefix(GROUP, BUCKET, "*"), None),  # would be every job of the group
        (GROUP, results_prefix(GROUP, BUCKET, "t?"), None),
        (GROUP, results_prefix(GROUP, BUCKET, "${aws:username}"), None),  # a policy variable
        (GROUP, PREFIX, ("out", "lab-out/*/process_results/")),
        ("grp-*", "grp-*/results/job__b_t1/", None),
        (GROUP, "grp-b/results/job__b_t1/", None),  # another group's folder
        (GROUP, "grp-a/results/", None),  # the whole results area
        (GROUP, "grp-a/results/job__b_t1/deeper/", None),
        (GROUP, PREFIX, ("out", "no-slash")),
        ("a/b", "a/b/results/job__b_t1/", None),
    ],
)
def test_names_that_would_widen_the_grant_are_refused(group, prefix, target):
    with pytest.raises(ScopeError):
        session_policy(BUCKET, group, prefix, result_target=target)


# ---- properties ----------------------------------------------------------------------------------

_PIECES = [
    "grp-a/",
    "grp-a",
    "grp-ab/",
    "grp-b/",
    "GRP-A/",
    "grp\u2010a/",  # a look-alike hyphen
    "inputs/",
    "configs/",
    "results/",
    "submissions/",
    "job__lab-analysis_t1/",
    "job__lab-analysis_t10/",
    "process_results/",
    "logs/",
    "accounting/",
]
_KEYS = nasty_keys(_PIECES, max_pieces=8)


def _own_read(key: str) -> bool:
    # IAM matches keys literally: "grp-a/inputs/../../grp-b/x" is a key under grp-a/inputs/ (S3
    # never resolves "..").
    return key.startswith(("grp-a/inputs/", "grp-a/configs/")) or _own_write(key)


def _own_write(key: str) -> bool:
    return key.startswith(PREFIX + "process_results/")


@settings(max_examples=500, deadline=None)
@given(key=_KEYS)
@example(key="grp-a/inputs/../../grp-b/inputs/x.csv")
@example(key="grp-ab/inputs/x.csv")
@example(key=PREFIX + "logs/certificate.txt")
@example(key="grp-a/results/job__lab-analysis_t10/process_results/x")
@example(key="accounting/submissions/grp-a.json")
def test_nasty_keys_are_never_granted_outside_the_submission(key):
    policy = session_policy(BUCKET, GROUP, PREFIX)
    assert _allows(policy, "s3:GetObject", _object(key)) == _own_read(key)
    assert _allows(policy, "s3:PutObject", _object(key)) == _own_write(key)
    assert not _allows(policy, "s3:DeleteObject", _object(key))
    assert not _allows(policy, "s3:GetObject", _object(key, "other-bucket"))
    listed = _allows(policy, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", prefix=key)
    assert listed == key.startswith("grp-a/inputs/")


@settings(max_examples=300, deadline=None)
@given(timestamp=st.text(min_size=1, max_size=20))
@example(timestamp="*")
@example(timestamp="a?b")
@example(timestamp="$")
def test_any_accepted_timestamp_gives_its_own_results_only_or_is_refused(timestamp):
    try:
        timestamp = check_timestamp(timestamp)
    except SubmissionRefused:
        return
    prefix = results_prefix(GROUP, BUCKET, timestamp)
    try:
        policy = session_policy(BUCKET, GROUP, prefix)
    except ScopeError:
        assert set(timestamp) & set("*?$")
        return
    own = prefix + "process_results/"
    (writes,) = [s["Resource"] for s in policy["Statement"] if "s3:PutObject" in s["Action"]]
    assert writes == [_object(own) + "*"]
    # another job of the group, whatever its timestamp, is never writable
    assert not _allows(
        policy, "s3:PutObject", _object(results_prefix(GROUP, BUCKET, timestamp + "x") + "process_results/a")
    )


# ---- the flow's choice ---------------------------------------------------------------------------


class _Folder:
    def __init__(self):
        self.lines = []

    def line(self, text, **options):
        self.lines.append(text)


class _Logger:
    def __init__(self):
        self.warnings = []

    def warning(self, message, *args):
        self.warnings.append(message % args)


def test_without_a_role_the_submission_runs_unscoped_and_says_so(monkeypatch):
    from blocks.s3 import ObjectStore
    from flows.submissions import flow

    logger = _Logger()
    monkeypatch.setattr(flow, "get_run_logger", lambda: logger)
    monkeypatch.delenv("INTERLINKED_SUBMISSION_ROLE_ARN", raising=False)
    store = ObjectStore(BUCKET, client=object())
    assert flow._scope(store, GROUP, PREFIX, None, _Folder()) is None
    assert logger.warnings == [
        "no submission role (INTERLINKED_SUBMISSION_ROLE_ARN): this submission reads its inputs and "
        "writes its results with the flow run's own credentials (unscoped)"
    ]
    # A name that would widen the policy is refused, role or not.
    refused = flow._scope(store, GROUP, results_prefix(GROUP, BUCKET, "t*"), None, _Folder())
    assert (
        refused.startswith("cannot limit this submission's credentials to its own keys:") and "'*'" in refused
    )


def test_a_session_client_assumes_the_role_again_before_its_credentials_expire(monkeypatch):
    """A submission may run longer than one STS session: the client's credentials renew themselves
    (the role assumed again with the same session policy) instead of expiring mid-upload."""
    from datetime import UTC, datetime, timedelta

    import blocks.clients

    calls = []

    class FakeSts:
        def assume_role(self, **parameters):
            calls.append(parameters)
            soon = datetime.now(UTC) + timedelta(minutes=5)  # inside botocore's refresh window
            return {
                "Credentials": {
                    "AccessKeyId": f"ASIA{len(calls):016d}",
                    "SecretAccessKey": "secret",
                    "SessionToken": "token",
                    "Expiration": soon,
                }
            }

    real = blocks.clients.aws_client
    monkeypatch.setattr(
        blocks.clients,
        "aws_client",
        lambda service, **options: FakeSts() if service == "sts" else real(service, **options),
    )
    monkeypatch.setattr(blocks.clients, "credentials_block", lambda name=None: None)
    policy = session_policy(BUCKET, GROUP, PREFIX)
    client = blocks.clients.assumed_role_client(
        "s3", role_arn="arn:aws:iam::1:role/r", session_name="s", policy=policy
    )
    first = client._request_signer._credentials.get_frozen_credentials().access_key
    second = client._request_signer._credentials.get_frozen_credentials().access_key
    assert first != second and len(calls) >= 2  # assumed again, not left to expire
    assert all(json.loads(call["Policy"]) == policy and call["RoleArn"].endswith(":role/r") for call in calls)
