"""The credentials a submission's analysis runs with: STS AssumeRole into the submission role with a
session policy that allows only this submission's own keys.

==================================================  =================================================
``{group}/inputs/*``, ``{group}/configs/*``         read (its datasets and config)
``{group}/inputs/…`` listing (``s3:prefix``)        list (folder datasets)
``{results folder}process_results/*``               read and write (its outputs, the config copy)
``{resultpath target}*`` (storage bypass)           read and write, instead of ``process_results/``
==================================================  =================================================

The flow reads the datasets, the config and writes the outputs with this session; its own
identity keeps the platform's records (claim, certificate, status files, ``end.txt``, the budget
ledger, the job store, usage logs). AWS grants a session only what both the role's policies and
the session policy allow; the role (``INTERLINKED_SUBMISSION_ROLE_ARN``: Terraform's
``submission_role_arn`` output on AWS, created by ``up`` locally) bounds it to the analysis
buckets' ``inputs/``, ``configs/`` and ``results/`` and the storage-bypass locations. Without a
role configured the submission runs with the flow's own store (logged as unscoped). Characters IAM
reads specially (``*``, ``?``, ``$``) are refused in every key the policy names
(:func:`flows.script_jobs.scoped.literal`): a timestamp or resultpath holding one is refused.
"""

from __future__ import annotations

import os
import re
from typing import Any

from blocks.s3 import ObjectStore
from flows.script_jobs.scoped import ScopeError, literal
from flows.submissions.folder import RESULTS

ROLE_ENV = "INTERLINKED_SUBMISSION_ROLE_ARN"
SESSION_SECONDS = 3600
OBJECT_WRITE = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
_SESSION_NAME = re.compile(r"[^\w+=,.@-]")

__all__ = ["ROLE_ENV", "ScopeError", "role_arn", "scoped_store", "session_policy"]


def _arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{literal(bucket)}" + (f"/{literal(key)}" if key else "")


def session_policy(
    bucket: str, group: str, prefix: str, *, result_target: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The session policy of the submission of ``group`` in ``bucket`` whose results folder is
    ``prefix`` (``{group}/results/job__…/``); ``result_target`` is the storage-bypass
    ``(bucket, key prefix)`` its outputs go to instead of ``{prefix}process_results/``.

    Raises
    ------
    ScopeError
        A name holds ``*``, ``?`` or ``$``, or the results folder is not the group's own.
    """
    if not group or "/" in group:
        raise ScopeError(f"group {group!r} is not one path segment")
    if not prefix.startswith(f"{group}/results/") or not prefix.endswith("/") or prefix.count("/") != 3:
        raise ScopeError(f"results folder {prefix!r} is not a folder of {group}/results/")
    outputs = [_arn(bucket, prefix + RESULTS) + "*"]
    if result_target is not None:
        target_bucket, target_prefix = result_target
        if not target_prefix.endswith("/"):
            raise ScopeError(f"storage bypass prefix {target_prefix!r} does not end in '/'")
        outputs.append(_arn(target_bucket, target_prefix) + "*")
    inputs = _arn(bucket, f"{group}/inputs/")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "GroupInputs",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [inputs + "*", _arn(bucket, f"{group}/configs/") + "*"],
            },
            {
                "Sid": "ListGroupInputs",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": _arn(bucket),
                "Condition": {"StringLike": {"s3:prefix": [f"{group}/inputs/*"]}},
            },
            {"Sid": "OwnResults", "Effect": "Allow", "Action": OBJECT_WRITE, "Resource": outputs},
        ],
    }


def role_arn() -> str | None:
    """The submission role (``INTERLINKED_SUBMISSION_ROLE_ARN``), or None when none is configured."""
    return os.environ.get(ROLE_ENV) or None


def scoped_store(bucket: str, policy: dict[str, Any], *, group: str, role: str) -> ObjectStore:
    """An :class:`ObjectStore` of ``bucket`` whose client is a session of ``role`` narrowed by
    ``policy`` (its credentials renew themselves for a long submission). Its ``client`` serves
    any bucket the policy names (the storage-bypass target)."""
    from blocks.clients import assumed_role_client

    client = assumed_role_client(
        "s3",
        role_arn=role,
        session_name=_SESSION_NAME.sub("-", f"submission-{group}")[:64],
        policy=policy,
        duration_seconds=SESSION_SECONDS,
    )
    return ObjectStore(bucket, client)
