"""Scoped AWS credentials for a script job's code: STS AssumeRole into the script-job role with a
session policy that allows only this job's own objects.

=======================================  =======================
``jobs/{job_id}.json``                   read (its spec)
``scripts/{script}``                     read (its code)
``results/{job_id}/*``                   read and write
``logs/{job_id}.log``                    read and write
=======================================  =======================

AWS grants a session only what both the role's policies and the session policy allow, so the
session policy is the boundary; the role (``INTERLINKED_SCRIPT_JOB_ROLE_ARN``: Terraform's
``script_job_role_arn`` output on AWS, created by ``up`` locally) bounds it further. Without a role
configured the script gets no AWS credentials at all. Key characters IAM treats specially
(``*``, ``?``) never come from a job: job ids and script names are validated
(:mod:`.spec`), and :func:`session_policy` refuses them again.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from flows.script_jobs.layout import job_spec_key, log_key, script_key

ROLE_ENV = "INTERLINKED_SCRIPT_JOB_ROLE_ARN"
SESSION_SECONDS = 3600
_WILDCARDS = re.compile(r"[*?$]")


class ScopeError(ValueError):
    """A key that cannot be written into a policy literally."""


def literal(key: str) -> str:
    """``key`` as a policy may name it: refused (:class:`ScopeError`) when it holds a character IAM
    reads as a wildcard (``*``, ``?``) or a policy variable (``$``), which would widen the grant."""
    if _WILDCARDS.search(key):
        raise ScopeError(f"{key!r}: '*', '?' and '$' cannot appear in the keys of a scoped session's policy")
    return key


def session_policy(bucket: str, job_id: str, script: str | None) -> dict[str, Any]:
    """The session policy of job ``job_id`` (its script at ``scripts/{script}``)."""
    arn = f"arn:aws:s3:::{bucket}/"
    read = [arn + literal(job_spec_key(job_id))]
    if script:
        read.append(arn + literal(script_key(script)))
    own = [arn + literal(f"results/{job_id}/") + "*", arn + literal(log_key(job_id))]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "OwnInputs", "Effect": "Allow", "Action": "s3:GetObject", "Resource": read},
            {
                "Sid": "OwnOutputs",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": own,
            },
        ],
    }


def credentials_env(bucket: str, job_id: str, script: str | None) -> dict[str, str]:
    """``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` of a session scoped to
    the job (empty when no script-job role is configured)."""
    from blocks.clients import aws_client

    role = os.environ.get(ROLE_ENV)
    if not role:
        return {}
    session = aws_client("sts").assume_role(
        RoleArn=role,
        RoleSessionName=f"job-{job_id}"[:64],
        Policy=json.dumps(session_policy(bucket, job_id, script)),
        DurationSeconds=SESSION_SECONDS,
    )["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": session["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": session["SecretAccessKey"],
        "AWS_SESSION_TOKEN": session["SessionToken"],
        "INTERLINKED_DATA_BUCKET": bucket,
    }
