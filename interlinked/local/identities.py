"""The local stack's IAM identities: one least-privilege user per service, the script-job and
submission roles and one user per group (``interlinked groups add``), created through the IAM API like Terraform does on AWS.

With ``INTERLINKED_EMULATOR_ENFORCE_IAM`` on (the default) the emulator checks every request
(:mod:`interlinked.local.emulator.iam`); the keys ``test``/``test`` (``interlinked env``) are its
admin user. ``up`` creates the users below and gives each service process its own keys through its
environment (:func:`service_env`); the keys are kept in ``{state_dir}/credentials/{user}.json``
(mode 0600) and re-created when the emulator's state no longer has them (``down --wipe``).

Mirrors of ``infra/terraform/modules/compute`` (flow-run role, bridge and analysis-service task
roles) and ``modules/group``, as close as moto allows: moto checks SNS, DynamoDB and Batch actions
against the resource ``*`` only (it names no resource for them), so their statements use ``*``;
S3, SQS (but GetQueueUrl/ListQueues) and STS are checked per resource, as on AWS.

``groups add`` also records the group's UserId in the group registry (``s3://{data}/groups/``,
:mod:`flows.submissions.writers`), which the services may read and not write (an explicit deny).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from interlinked.settings import Settings

SERVICE_USERS = {
    "worker": "interlinked-flow-run",
    "bridge": "interlinked-bridge",
    "analysis-service": "interlinked-analysis-service",
    "script-api": "interlinked-script-api",
}
SCRIPT_JOB_ROLE = "interlinked-script-job"
SUBMISSION_ROLE = "interlinked-submission"
# The roles the flow runs assume, and the variable that tells a flow run each one's ARN.
ROLE_ENV = {
    SCRIPT_JOB_ROLE: "INTERLINKED_SCRIPT_JOB_ROLE_ARN",
    SUBMISSION_ROLE: "INTERLINKED_SUBMISSION_ROLE_ARN",
}
GROUP_USER_PREFIX = "interlinked-group-"
GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
VERSION = "2012-10-17"


def _iam() -> Any:
    from blocks.clients import aws_client

    return aws_client("iam", use_block=False)


def account_id() -> str:
    from blocks.clients import aws_client

    return aws_client("sts", use_block=False).get_caller_identity()["Account"]


def _buckets(settings: Settings, own_buckets: dict[str, str]) -> list[str]:
    return sorted({settings.data_bucket, settings.analysis_bucket, *own_buckets.values()})


def _s3(actions: list[str], buckets: list[str], *, objects: str = "*") -> list[dict]:
    return [
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": [f"arn:aws:s3:::{b}" for b in buckets],
        },
        {"Effect": "Allow", "Action": actions, "Resource": [f"arn:aws:s3:::{b}/{objects}" for b in buckets]},
    ]


OBJECT_READ = ["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectAttributes"]
OBJECT_WRITE = [
    *OBJECT_READ,
    "s3:PutObject",
    "s3:PutObjectTagging",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]


def _result_locations() -> list[tuple[str, str]]:
    """Storage bypass (``INTERLINKED_SUBMISSION_RESULTPATH_ALLOWED``): ``(bucket, objects pattern)``
    of each location submissions' results may go to."""
    from flows.submissions.quotas import SubmissionSettings

    locations = []
    for entry in SubmissionSettings().submission_resultpath_allowed:
        bucket, _, prefix = entry.strip().removeprefix("s3://").partition("/")
        if not bucket or "*" in entry:
            continue  # '*': wherever the role may write anyway — nothing more is granted for it
        locations.append((bucket, f"{prefix.strip('/')}/*" if prefix.strip("/") else "*"))
    return locations


def _result_paths() -> list[dict]:
    """The flow runs may write submissions' results at the storage-bypass locations, and only there
    outside the stack's buckets."""
    statements = []
    for bucket, objects in _result_locations():
        statements += _s3(OBJECT_WRITE, [bucket], objects=objects)
    return statements


def _registry_read_only(data_bucket: str) -> dict:
    """The group registry (``s3://{data}/groups/``, :mod:`flows.submissions.writers`) is written by
    admins only: an explicit deny for the services that may otherwise write the data bucket."""
    from flows.submissions.writers import REGISTRY_PREFIX

    return {
        "Effect": "Deny",
        "Action": ["s3:PutObject", "s3:DeleteObject", "s3:PutObjectTagging"],
        "Resource": f"arn:aws:s3:::{data_bucket}/{REGISTRY_PREFIX}*",
    }


def service_policies(settings: Settings, own_buckets: dict[str, str], account: str) -> dict[str, dict]:
    """Each service user's policy document, by part name."""
    region = settings.region
    queues = f"arn:aws:sqs:{region}:{account}:*"  # the stack's queues (and the tests' private ones)
    buckets = _buckets(settings, own_buckets)
    data = [settings.data_bucket]
    roles = [f"arn:aws:iam::{account}:role/{role}" for role in ROLE_ENV]
    caller = {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}
    sqs = [
        {"Effect": "Allow", "Action": "sqs:*", "Resource": queues},
        # moto names no queue for these (it checks them against "*"); on AWS they are per queue too.
        {"Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ListQueues"], "Resource": "*"},
    ]
    sns = {"Effect": "Allow", "Action": ["sns:Publish", "sns:GetTopicAttributes"], "Resource": "*"}
    dynamodb = {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}
    registry = _registry_read_only(settings.data_bucket)
    documents = {
        # The flow-run role: every flow runs with it (the worker forks them).
        "worker": [
            *_s3(OBJECT_WRITE, buckets),
            *_result_paths(),
            *sqs,
            sns,
            dynamodb,
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": roles},
            caller,
            registry,
        ],
        "bridge": [*_s3(OBJECT_READ, buckets), *sqs, caller],
        "analysis-service": [
            *_s3(OBJECT_WRITE, data),
            *_s3(OBJECT_READ, buckets),
            *sqs,
            sns,
            dynamodb,
            caller,
            registry,
        ],
        "script-api": [*_s3(OBJECT_WRITE, data), *sqs, sns, caller, registry],
    }
    return {name: {"Version": VERSION, "Statement": statements} for name, statements in documents.items()}


def script_job_role_policy(settings: Settings) -> dict:
    """The script-job role's own policy: the script-job keys of the data bucket. Each job's session
    narrows it to that job's keys (:func:`flows.script_jobs.scoped.session_policy`)."""
    data = settings.data_bucket
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": [
                    f"arn:aws:s3:::{data}/{prefix}*" for prefix in ("jobs/", "scripts/", "results/", "logs/")
                ],
            }
        ],
    }


SUBMISSION_AREAS = ("inputs/", "configs/")  # what a submission reads (results/ it writes)
SUBMISSION_RESULTS = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]


def submission_role_policy(settings: Settings, own_buckets: dict[str, str]) -> dict:
    """The submission role's own policy: every group's ``inputs/`` and ``configs/`` (read, list
    under ``inputs/``) and ``results/`` (write) of the analysis buckets, and the storage-bypass
    locations. Each submission's session narrows it to its group and its job
    (:func:`flows.submissions.scoped.session_policy`)."""
    buckets = sorted({settings.analysis_bucket, *own_buckets.values()})
    extra = [f"arn:aws:s3:::{bucket}/{objects}" for bucket, objects in _result_locations()]
    return {"Version": VERSION, "Statement": submission_statements(buckets, extra_results=extra)}


def submission_statements(
    buckets: list[str], *, extra_results: tuple[str, ...] | list[str] = ()
) -> list[dict]:
    """What the submission role may do in analysis buckets ``buckets`` (and write at
    ``extra_results``, object ARN patterns)."""
    results = [f"arn:aws:s3:::{b}/*/results/*" for b in buckets] + list(extra_results)
    return [
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": [f"arn:aws:s3:::{b}" for b in buckets],
            "Condition": {"StringLike": {"s3:prefix": ["*/inputs/*"]}},
        },
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [f"arn:aws:s3:::{b}/*/{area}*" for b in buckets for area in SUBMISSION_AREAS],
        },
        {"Effect": "Allow", "Action": SUBMISSION_RESULTS, "Resource": results},
    ]


def group_policy(bucket: str, group: str) -> dict:
    """A group's policy (NeuroCAAS layout): read/write its ``inputs/``, ``configs/`` and
    ``submissions/``, read its ``results/``, list only under its own prefix."""
    prefix = f"arn:aws:s3:::{bucket}/{group}/"
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{group}/", f"{group}/*"]}},
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": [f"{prefix}inputs/*", f"{prefix}configs/*", f"{prefix}submissions/*"],
            },
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{prefix}results/*"},
        ],
    }


# ---- users and keys ------------------------------------------------------------------------------


def credentials_file(settings: Settings, user: str) -> Path:
    return settings.state_dir / "credentials" / f"{user}.json"


def ensure_user(
    settings: Settings, user: str, policy: dict, *, tags: dict[str, str] | None = None
) -> dict[str, str]:
    """The user exists with exactly ``policy`` (inline, ``main``) and working keys; returns
    ``{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}`` (kept in :func:`credentials_file`)."""
    iam = _iam()
    try:
        iam.get_user(UserName=user)
    except iam.exceptions.NoSuchEntityException:
        iam.create_user(UserName=user, Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()])
    iam.put_user_policy(UserName=user, PolicyName="main", PolicyDocument=json.dumps(policy))
    path = credentials_file(settings, user)
    live = {key["AccessKeyId"] for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("AWS_ACCESS_KEY_ID") in live:
            return saved
    for key_id in live:  # keys whose secret we no longer have
        iam.delete_access_key(UserName=user, AccessKeyId=key_id)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    saved = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(saved, handle)
    return saved


def ensure_script_job_role(settings: Settings, account: str) -> str:
    """The role script jobs' code runs as (assumed by the flow-run user); returns its ARN."""
    return ensure_role(SCRIPT_JOB_ROLE, script_job_role_policy(settings), account)


def ensure_role(name: str, policy: dict, account: str) -> str:
    """Role ``name`` exists with exactly ``policy`` (inline, ``main``), assumable by the flow-run
    user only; returns its ARN."""
    iam = _iam()
    trust = {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:user/{SERVICE_USERS['worker']}"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="main", PolicyDocument=json.dumps(policy))
    return arn


def ensure_identities(settings: Settings, own_buckets: dict[str, str]) -> None:
    """Create (or bring up to date) every service user, the script-job and the submission role
    (idempotent)."""
    account = account_id()
    for part, document in service_policies(settings, own_buckets, account).items():
        ensure_user(settings, SERVICE_USERS[part], document)
    arn = ensure_script_job_role(settings, account)
    credentials_file(settings, SCRIPT_JOB_ROLE).write_text(json.dumps({"arn": arn}))
    arn = ensure_role(SUBMISSION_ROLE, submission_role_policy(settings, own_buckets), account)
    credentials_file(settings, SUBMISSION_ROLE).write_text(json.dumps({"arn": arn}))


def service_env(settings: Settings, part: str) -> dict[str, str]:
    """The service's own keys (and, for the worker, the roles its flow runs assume) for its environment;
    empty when enforcement is off or ``up`` has not created them yet."""
    if not settings.emulator_enforce_iam or part not in SERVICE_USERS:
        return {}
    path = credentials_file(settings, SERVICE_USERS[part])
    if not path.exists():
        return {}
    env = json.loads(path.read_text())
    for role, variable in ROLE_ENV.items():
        path = credentials_file(settings, role)
        if part == "worker" and path.exists():
            env[variable] = json.loads(path.read_text())["arn"]
    return env


def ensure_group(settings: Settings, group: str, bucket: str | None = None) -> dict[str, Any]:
    """The group's IAM user with access to its own prefix only, recorded in the group registry
    (``s3://{data}/groups/{group}.json``: its UserId, for the submissions' writer check,
    :mod:`flows.submissions.writers`); returns its name, keys, bucket and UserId."""
    if not GROUP_NAME.match(group):
        raise ValueError(
            f"group name {group!r}: use 1-41 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    bucket = bucket or settings.analysis_bucket
    user = GROUP_USER_PREFIX + group
    keys = ensure_user(settings, user, group_policy(bucket, group), tags={"interlinked:group": group})
    described = _iam().get_user(UserName=user)["User"]
    register_group(settings, group, [described["UserId"]], arn=described["Arn"])
    return {
        "group": group,
        "user": user,
        "bucket": bucket,
        "prefix": f"{group}/",
        "user_id": described["UserId"],
        **keys,
    }


def register_group(settings: Settings, group: str, principal_ids: list[str], *, arn: str) -> str:
    """Write the group's record in the group registry (with the caller's keys: an admin's);
    returns its S3 URI."""
    from blocks.clients import aws_client
    from flows.submissions.writers import registry_key, registry_record

    key = registry_key(group)
    record = registry_record(group, principal_ids, arn=arn, source="interlinked groups add")
    uri = f"s3://{settings.data_bucket}/{key}"
    try:
        aws_client("s3", use_block=False).put_object(
            Bucket=settings.data_bucket,
            Key=key,
            Body=(json.dumps(record, indent=2) + "\n").encode(),
            ContentType="application/json",
        )
    except Exception as error:
        raise RuntimeError(f"the group registry record {uri} could not be written: {error}") from error
    return uri
