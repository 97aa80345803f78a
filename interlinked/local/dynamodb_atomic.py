"""DynamoDB requests to moto, one at a time, so a conditional write is atomic as on AWS.

moto's server answers requests on threads, and its DynamoDB backend checks a
``ConditionExpression`` and then applies the write without a lock: two concurrent
``UpdateItem`` calls with ``#state = :todo`` can both succeed (seen in the task-store test: one
task claimed twice out of 2,000). DynamoDB itself guarantees a conditional write is atomic, and
the task store relies on it. :func:`serialize_dynamodb` wraps moto's WSGI application so that
requests for DynamoDB (``X-Amz-Target: DynamoDB_20120810.*``) run one after the other; every other
service (SQS long polls included) stays concurrent.

``python -m interlinked.local.dynamodb_atomic -H HOST -p PORT`` serves moto so wrapped (the
task-store tests start it); a server that builds its own moto application (the stack's emulator)
applies :func:`serialize_dynamodb` to it.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterable
from typing import Any

_TARGET = "DynamoDB_"


def serialize_dynamodb(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``app`` with its DynamoDB requests run under one lock (the response is built inside it)."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_TARGET):
            return app(environ, start_response)
        with lock:
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return wrapped


def main(argv: list[str] | None = None) -> None:
    import os
    import signal
    import sys

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialize_dynamodb(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
