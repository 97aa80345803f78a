"""What an AWS error means for the caller: worth a retry (transient) or an answer (missing).

One definition for every flow and service, so a throttled call is retried the same way everywhere.
botocore only: the Lambda bridge imports it too.
"""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestThrottled",
    }
)
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchVersion"})
_CONNECTION_ERRORS = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_missing(error: BaseException) -> bool:
    """The object (or bucket, or version) does not exist."""
    return isinstance(error, ClientError) and error_code(error) in MISSING_CODES


def is_transient(error: BaseException) -> bool:
    """Throttling, a 5xx or a connection problem: the same call may succeed later."""
    if isinstance(error, _CONNECTION_ERRORS):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(error) in TRANSIENT_CODES or status >= 500
    return False


CONFLICT_CODES = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "ConditionalCheckFailedException"}
)


def is_conflict(error: BaseException) -> bool:
    """A conditional write lost: the object exists, or changed since it was read."""
    if not isinstance(error, ClientError):
        return False
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(error) in CONFLICT_CODES or status in (409, 412)
