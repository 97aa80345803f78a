"""The one way this project gets a boto3 client.

``aws_client("s3")`` builds the client from the ``interlinked-aws`` credentials block when one is
saved (its region and ``AwsClientParameters(endpoint_url=...)`` included, so a flow run anywhere
reaches the same endpoint), and from boto3's own configuration otherwise (``AWS_ENDPOINT_URL``,
``AWS_REGION``, the credential chain). Every client gets the same retry and timeout settings.
Clients are cached per process (boto3 clients are thread-safe); a forked child starts with an
empty cache, so no connection pool is ever shared across processes.

Code that must run without Prefect (the Lambda bridge) builds its clients with plain boto3.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from botocore.config import Config

logger = logging.getLogger("interlinked.aws")

#: Retries in standard mode (throttling, 5xx, connection errors) and bounded waits for every client.
DEFAULT_CONFIG = Config(
    retries={"max_attempts": 4, "mode": "standard"},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=32,
)

_ENVIRONMENT = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
)
_lock = threading.Lock()
_clients: dict[tuple, Any] = {}
_credentials: dict[str, Any] = {}


def _forget() -> None:
    _clients.clear()
    _credentials.clear()


os.register_at_fork(after_in_child=_forget)


def credentials_block(name: str | None = None) -> Any | None:
    """The saved ``AwsCredentials`` block (``blocks.AWS_CREDENTIALS`` by default), or None when there
    is none (no Prefect API configured, or the block was never saved): boto3's own configuration
    applies then."""
    from blocks.names import AWS_CREDENTIALS

    name = name or AWS_CREDENTIALS
    with _lock:
        if name in _credentials:
            return _credentials[name]
    try:
        from prefect_aws import AwsCredentials

        block = AwsCredentials.load(name, _sync=True)
    except Exception as error:
        logger.debug("no credentials block %r (%s): using boto3's own configuration", name, error)
        block = None
    with _lock:
        _credentials.setdefault(name, block)
        return _credentials[name]


def aws_session(credentials: Any | None = None) -> tuple[Any, dict[str, Any]]:
    """``(boto3 session, client keyword arguments)`` for ``credentials`` (an ``AwsCredentials``
    block), or boto3's defaults when it is None."""
    import boto3

    if credentials is None:
        return boto3.session.Session(), {}
    return credentials.get_boto3_session(), dict(credentials.aws_client_parameters.get_params_override())


def aws_client(
    service: str,
    *,
    credentials: Any | None = None,
    use_block: bool = True,
    config: Config | None = None,
) -> Any:
    """A cached boto3 client for ``service``.

    Parameters
    ----------
    service
        ``"s3"``, ``"sqs"``, ``"sns"``, ...
    credentials
        An ``AwsCredentials`` block to use; default: the saved ``interlinked-aws`` block when
        ``use_block``, else boto3's own configuration.
    use_block
        ``False`` skips the block lookup (code that runs before the blocks exist, e.g. provisioning).
    config
        botocore settings merged over :data:`DEFAULT_CONFIG` (e.g. a longer ``read_timeout`` for
        long polls, a bigger connection pool).
    """
    if credentials is None and use_block:
        credentials = credentials_block()
    key = (
        service,
        # Without a block, boto3 reads the endpoint and region from the environment: part of the key.
        _fingerprint(credentials)
        if credentials is not None
        else tuple(os.environ.get(name) for name in _ENVIRONMENT),
        None if config is None else repr(sorted(vars(config).items(), key=lambda item: item[0])),
    )
    with _lock:
        client = _clients.get(key)
    if client is not None:
        return client
    session, parameters = aws_session(credentials)
    merged = DEFAULT_CONFIG if config is None else DEFAULT_CONFIG.merge(config)
    if parameters.get("config") is not None:
        merged = parameters.pop("config").merge(merged)
    client = session.client(service, config=merged, **parameters)
    with _lock:
        return _clients.setdefault(key, client)


def _fingerprint(credentials: Any) -> str:
    """What makes two credentials blocks give different clients (secrets included, hashed)."""
    import hashlib

    def plain(value: Any) -> Any:
        return value.get_secret_value() if hasattr(value, "get_secret_value") else value

    parts = [
        type(credentials).__name__,
        getattr(credentials, "aws_access_key_id", None),
        plain(getattr(credentials, "aws_secret_access_key", None)),
        plain(getattr(credentials, "aws_session_token", None)),
        getattr(credentials, "profile_name", None),
        getattr(credentials, "region_name", None),
    ]
    parameters = getattr(credentials, "aws_client_parameters", None)
    if parameters is not None:
        parts.append(parameters.model_dump_json())
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def assumed_role_client(
    service: str,
    *,
    role_arn: str,
    session_name: str,
    policy: dict[str, Any] | None = None,
    duration_seconds: int = 3600,
    config: Config | None = None,
) -> Any:
    """A boto3 client acting as ``role_arn`` (STS AssumeRole by this process's own identity, with
    the session policy ``policy``), at the same endpoint and region as :func:`aws_client`.

    The session's credentials renew themselves before they expire (botocore's refreshable
    credentials assume the role again with the same policy), so a client may outlive one session.
    Not cached: each call assumes the role once, and the client belongs to its caller.
    """
    import json

    import boto3
    from botocore.credentials import RefreshableCredentials
    from botocore.session import get_session

    sts = aws_client("sts")
    parameters: dict[str, Any] = {
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "DurationSeconds": duration_seconds,
    }
    if policy is not None:
        parameters["Policy"] = json.dumps(policy)

    def assume() -> dict[str, str]:
        session = sts.assume_role(**parameters)["Credentials"]
        return {
            "access_key": session["AccessKeyId"],
            "secret_key": session["SecretAccessKey"],
            "token": session["SessionToken"],
            "expiry_time": session["Expiration"].isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(
        metadata=assume(), refresh_using=assume, method="sts-assume-role"
    )
    base, options = aws_session(credentials_block())
    botocore_session = get_session()
    botocore_session._credentials = credentials  # botocore's way to give a session refreshable credentials
    session = boto3.session.Session(botocore_session=botocore_session, region_name=base.region_name)
    merged = DEFAULT_CONFIG if config is None else DEFAULT_CONFIG.merge(config)
    if options.get("config") is not None:
        merged = options.pop("config").merge(merged)
    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region_name"):
        options.pop(name, None)  # the session's, never the block's
    return session.client(service, config=merged, **options)
