"""Shared helpers of the event-bridge and submission tests (no tests here).

``interlinked up`` deploys ``process-submission/local`` (with its prefect.yaml trigger) and
``script-job-submission/local``, wires S3 → events queue and runs the bridge; the default event
path tests use exactly that (:class:`StackBridge`). Tests that count or dead-letter use a queue of
their own with a consumer of their own (:func:`start_consumer`), so nothing else touches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from _stack import ROOT, TEST_ENV
from blocks.status import read_status, service_ready


def submission_triggers() -> list[dict[str, Any]]:
    """The ``triggers:`` of ``process-submission/local`` in prefect.yaml."""
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [deployment] = [
        d
        for d in config["deployments"]
        if d["name"] == "local" and d["entrypoint"].endswith(":process_submission")
    ]
    return deployment["triggers"]


@dataclass
class Consumer:
    process: subprocess.Popen
    status_file: Path
    log_file: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def status(self) -> dict[str, Any]:
        return read_status(self.status_file) or {}

    def counts(self) -> dict[str, Any]:
        return self.status().get("counts", {})

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_consumer(
    directory: Path, *, extra_env: dict[str, str] | None = None, args: list[str] = ()
) -> Consumer:
    directory.mkdir(parents=True, exist_ok=True)
    status_file = directory / "bridge-status.json"
    log_file = directory / "bridge.log"
    env = {
        **os.environ,
        **TEST_ENV,
        "INTERLINKED_BRIDGE_LOG_LEVEL": "DEBUG",
        "INTERLINKED_BRIDGE_WAIT_SECONDS": "2",
        **(extra_env or {}),
    }
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "interlinked.bridge",
                "--status-file",
                str(status_file),
                "--retry-seconds",
                "1",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    consumer = Consumer(process, status_file, log_file)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service_ready(status_file, pid=process.pid):
            return consumer
        if not consumer.alive():
            break
        time.sleep(0.2)
    consumer.stop()
    pytest.fail(f"the bridge consumer did not start; its log:\n{consumer.log()[-3000:]}")


@dataclass
class StackBridge:
    """The bridge `interlinked up` started (same reading methods as :class:`Consumer`)."""

    state_dir: Path

    def alive(self) -> bool:
        return service_ready(self.state_dir / "bridge-status.json")

    def status(self) -> dict[str, Any]:
        return read_status(self.state_dir / "bridge-status.json") or {}

    def counts(self) -> dict[str, Any]:
        return self.status().get("counts", {})

    def log(self) -> str:
        return (self.state_dir / "logs" / "bridge.log").read_text(errors="replace")

    def stop(self) -> None:
        """The stack owns it."""


@dataclass
class BridgeEnv:
    stack: dict
    s3: Any
    sqs: Any
    sns: Any
    consumer: Consumer | StackBridge
    wiring: dict
    notes: dict = field(default_factory=dict)

    @property
    def analysis(self) -> str:
        return self.stack["buckets"]["analysis"]

    @property
    def data(self) -> str:
        return self.stack["buckets"]["data"]

    @property
    def events_queue(self) -> str:
        return self.stack["queues"]["events"]

    @property
    def events_dlq(self) -> str:
        return self.stack["dead_letter_queues"]["events"]


def bridge_env(stack_handle, aws, tmp_path_factory) -> BridgeEnv:
    """Everything the event path needs: the session stack with its own bridge and wiring."""
    from interlinked.local.wiring import ensure_event_sources

    stack = stack_handle.ensure_up()
    # Idempotent: reports what `up` wired (and changes nothing).
    wiring = ensure_event_sources(buckets=stack["buckets"], events_queue_url=stack["queues"]["events"])
    consumer = StackBridge(stack_handle.state_dir)
    assert consumer.alive(), f"the stack's bridge is not running; its log:\n{consumer.log()[-3000:]}"
    return BridgeEnv(
        stack=stack, s3=aws["s3"], sqs=aws["sqs"], sns=aws["sns"], consumer=consumer, wiring=wiring
    )


# ---- waiting and reading -------------------------------------------------------------------------------


def read_text(s3, bucket: str, key: str) -> str | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return None


def wait_for_object(
    s3, bucket: str, key: str, *, timeout: float = 90, consumer: Consumer | None = None
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read_text(s3, bucket, key)
        if text is not None:
            return text
        time.sleep(0.3)
    tail = f"\nbridge log:\n{consumer.log()[-2500:]}" if consumer else ""
    raise AssertionError(f"s3://{bucket}/{key} did not appear within {timeout} s{tail}")


def listing(s3, bucket: str, prefix: str = "") -> dict[str, str]:
    """key → ETag of everything under ``prefix``."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["ETag"]
    return found


def flow_runs(*, flow_name: str | None = None, idempotency_keys: list[str] | None = None, limit: int = 200):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
    )

    run_filter = FlowRunFilter(
        idempotency_key=FlowRunFilterIdempotencyKey(any_=idempotency_keys) if idempotency_keys else None
    )
    flow_filter = FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=run_filter, flow_filter=flow_filter, limit=limit)


def runs_for_key(key: str, flow_name: str = "process-submission") -> list:
    return [run for run in flow_runs(flow_name=flow_name) if run.parameters.get("key") == key]


def final_run_for_key(key: str, flow_name: str = "process-submission", *, timeout: float = 120):
    """The one run for ``key``, once it reached a final state (end.txt is written before the flow
    returns, so its state can still be Running for a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        [run] = runs_for_key(key, flow_name)
        if run.state is not None and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"the run for {key} is still {run.state.name if run.state else None}")
        time.sleep(0.3)


def wait_for_dead_letters(sqs, queue_url: str, count: int, *, timeout: float = 60) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", []):
            got.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return got


def put_json(s3, bucket: str, key: str, value: Any) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(value).encode(), ContentType="application/json")
