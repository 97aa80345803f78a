"""The AWS access layer: Prefect blocks for the resources, one client factory, error classification.

- :mod:`blocks.names` — the saved block documents every flow loads by name;
- :mod:`blocks.clients` — ``aws_client(service)``: the one way to get a boto3 client;
- :mod:`blocks.errors` — transient / missing / conflict classification of AWS errors;
- :mod:`blocks.s3` — :class:`ObjectStore` (a bucket and the object operations the flows need);
- :mod:`blocks.sqs`, :mod:`blocks.sns` — the queue and topic blocks; :mod:`blocks.queues` — redrive;
- :mod:`blocks.status` — heartbeat files of the long-running services;
- :mod:`blocks.postgres` — :class:`PostgresDatabase`, our own database (psycopg connections, pools).

``blocks.errors`` and ``blocks.queues`` import only botocore (the Lambda bridge uses them), so the
Prefect-based names below are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from blocks.names import (
    ANALYSIS_BUCKET,
    AWS_CREDENTIALS,
    DATA_BUCKET,
    DATABASE,
    EVENTS_QUEUE,
    JOB_EVENTS_TOPIC,
    RESULT_STORAGE,
    WORK_QUEUE,
    WORK_RESULTS_TOPIC,
)

_LAZY = {
    "SqsQueue": "blocks.sqs",
    "SnsTopic": "blocks.sns",
    "ObjectStore": "blocks.s3",
    "data_store": "blocks.s3",
    "analysis_store": "blocks.s3",
    "aws_client": "blocks.clients",
    "PostgresDatabase": "blocks.postgres",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ANALYSIS_BUCKET",
    "AWS_CREDENTIALS",
    "DATABASE",
    "DATA_BUCKET",
    "EVENTS_QUEUE",
    "JOB_EVENTS_TOPIC",
    "RESULT_STORAGE",
    "WORK_QUEUE",
    "WORK_RESULTS_TOPIC",
    "ObjectStore",
    "PostgresDatabase",
    "SnsTopic",
    "SqsQueue",
    "analysis_store",
    "aws_client",
    "data_store",
]
