"""Which AWS failures are retried and which mean "not there"."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from blocks.errors import is_missing, is_transient


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("SlowDown", 503), True),
        (client_error("ThrottlingException"), True),
        (client_error("Whatever", 500), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchKey", 404), False),
        (NoCredentialsError(), False),
        (ValueError("user bug"), False),
    ],
)
def test_only_throttling_5xx_and_connection_errors_are_transient(error, transient):
    assert is_transient(error) is transient


def test_missing_objects_buckets_and_versions():
    assert all(
        is_missing(client_error(code, 404)) for code in ("NoSuchKey", "404", "NoSuchBucket", "NoSuchVersion")
    )
    assert not is_missing(client_error("AccessDenied", 403)) and not is_missing(ValueError("x"))
