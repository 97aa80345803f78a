"""2,000 events with 30 % duplicates and 5 % poison through the event bridge: runs, dead letters, events/s.

    .venv/bin/python bench/bench_bridge_throughput.py [--events 2000] [--duplicates 0.30] [--poison 0.05]
        [--concurrency N]

A queue of its own (with a DLQ after the stack's max receives, 5) is filled with a mix of every
shape the bridge understands — S3 notifications straight from S3, the same inside SNS envelopes,
EventBridge events and typed job messages — then one consumer (``python -m interlinked.bridge``,
default settings, or ``--concurrency N`` batches in flight) drains it. Duplicates repeat an earlier event, often through another shape (a
redelivery, or the same S3 event by another path); poison is malformed or unroutable. Every valid
event routes to ``bench-noop/bench-idle``, a deployment on a pool with no worker, so runs are only
created (nothing executes and competes for the CPU).

Checked: runs created == unique valid events, dead letters == poison, nothing left in the queue.
Reported: time until every run exists (valid events/s), time until the queue is empty (poison
waits for its 5 receives, 1 s apart), and the consumer's own counters. The stock comparison is the
same events created as runs one by one with the Prefect client's ``run_deployment`` (no
deduplication: it creates a run per delivery, duplicates included) — what a naive consumer does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from interlinked.local import client_env, ensure_work_pool, up  # noqa: E402
from interlinked.settings import get_settings  # noqa: E402

POOL = "bench-idle"
DEPLOYMENT = "bench-noop/bench-idle"


def s3_notification(bucket: str, key: str, index: int) -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {
                        "key": key.replace("/", "%2F"),
                        "eTag": f"{index:032x}",
                        "sequencer": f"{index:018X}",
                    },
                },
            }
        ]
    }


def eventbridge(bucket: str, key: str, index: int) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2024-01-01T00:00:00Z",
        "detail": {
            "bucket": {"name": bucket},
            "object": {"key": key, "etag": f"{index:032x}", "sequencer": f"{index:018X}"},
            "reason": "PutObject",
        },
    }


def sns_envelope(message: dict) -> dict:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:bench",
        "Message": json.dumps(message),
    }


def build_events(
    total: int, duplicate_share: float, poison_share: float, bucket: str, run: str, seed: int = 7
):
    """Bodies to send, plus the expected counts. Unique valid events come first in a shuffled order."""
    rng = random.Random(seed)
    poison_count = round(total * poison_share)
    duplicate_count = round(total * duplicate_share)
    unique_count = total - poison_count - duplicate_count
    unique = []  # (kind, index) → body variants by shape
    for index in range(unique_count):
        kind = ("s3", "message")[index % 2]
        unique.append((kind, index))

    def render(kind: str, index: int, variant: int) -> tuple[str, dict[str, str]]:
        if kind == "message":
            body = {"type": "bench", "payload": {"n": index}}
            attributes = {"dedup-id": f"bench-{run}-{index}"}  # unique to this benchmark run
            if variant % 2:
                return json.dumps(sns_envelope(body)), attributes  # SNS envelope, same dedup id
            return json.dumps(body), attributes
        key = f"bench/in/{index}.json"
        shape = variant % 3
        if shape == 0:
            return json.dumps(s3_notification(bucket, key, index)), {}
        if shape == 1:
            return json.dumps(sns_envelope(s3_notification(bucket, key, index))), {}
        return json.dumps(eventbridge(bucket, key, index)), {}

    bodies = [render(kind, index, rng.randrange(3)) for kind, index in unique]
    for _ in range(duplicate_count):
        kind, index = rng.choice(unique)
        bodies.append(render(kind, index, rng.randrange(3)))
    poisons = [
        "{not json",
        json.dumps({"type": "unknown-type"}),
        json.dumps({"Records": [{"eventSource": "aws:s3"}]}),
        "[]",
    ]
    for index in range(poison_count):
        bodies.append((poisons[index % len(poisons)], {}))
    rng.shuffle(bodies)
    return bodies, {"unique": unique_count, "duplicates": duplicate_count, "poison": poison_count}


def send_all(sqs, queue: str, bodies) -> None:
    for start in range(0, len(bodies), 10):
        entries = []
        for offset, (body, attributes) in enumerate(bodies[start : start + 10]):
            entry = {"Id": str(offset), "MessageBody": body}
            if attributes:
                entry["MessageAttributes"] = {
                    k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                }
            entries.append(entry)
        reply = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
        if reply.get("Failed"):
            raise SystemExit(f"send failed: {reply['Failed']}")


def queue_counts(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def dead_letters_with_reason(sqs, url: str) -> int:
    """How many messages in the dead-letter queue say why they are there (received, left in place)."""
    seen: dict[str, bool] = {}
    for _ in range(50):
        reply = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
        )
        messages = reply.get("Messages", [])
        if not messages:
            break
        for message in messages:
            attributes = message.get("MessageAttributes", {})
            seen[message["MessageId"]] = bool(
                attributes.get("interlinked.dlq.reason") or "interlinked_dead_letter" in message["Body"]
            )
    return sum(seen.values())


_CLIENT = None


def count_runs(deployment_id) -> int:
    """Runs of the bench deployment, through one client kept open (a new one per poll cost the
    server as much as a few runs)."""
    global _CLIENT
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    if _CLIENT is None:
        _CLIENT = get_client(sync_client=True).__enter__()
    return _CLIENT.count_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--duplicates", type=float, default=0.30)
    parser.add_argument("--poison", type=float, default=0.05)
    parser.add_argument(
        "--stock", type=int, default=200, help="events created one by one the stock way (0: skip)"
    )
    parser.add_argument(
        "--concurrency", type=int, help="batches the consumer has in flight (default: its own default)"
    )
    parser.add_argument("--json-out", type=Path, help="also write the results here (for bench_databases.py)")
    args = parser.parse_args()

    settings = get_settings()
    up(settings, echo=lambda line: print(line, file=sys.stderr))
    os.environ.update(client_env(settings))

    import boto3
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from blocks.status import read_status, service_ready

    ensure_work_pool(POOL, "process", "benchmarks: a pool without a worker (runs stay scheduled)")
    flow.from_source(source=str(ROOT), entrypoint="bench/stock_flow.py:noop").deploy(
        name="bench-idle", work_pool_name=POOL, print_next_steps=False
    )
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(DEPLOYMENT).id

    session = boto3.session.Session()
    sqs = session.client("sqs")
    suffix = uuid.uuid4().hex[:6]
    bucket = f"bench-events-{suffix}"
    dlq = sqs.create_queue(QueueName=f"bench-events-{suffix}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=f"bench-events-{suffix}",
        Attributes={
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
            )
        },
    )["QueueUrl"]

    routes = {
        "routes": [
            {
                "name": "bench-s3",
                "match": {"source": "s3", "bucket": bucket, "prefix": "bench/in/"},
                "deployment": DEPLOYMENT,
                "parameters": {"a": 1, "b": 2},
            },
            {
                "name": "bench-message",
                "match": {"source": "message", "type": "bench"},
                "deployment": DEPLOYMENT,
                "parameters": {"a": 3, "b": 4},
            },
        ]
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    (workdir / "routes.json").write_text(json.dumps(routes))

    bodies, expected = build_events(args.events, args.duplicates, args.poison, bucket, suffix)
    runs_before = count_runs(deployment_id)
    send_all(sqs, queue, bodies)
    print(f"queued {len(bodies)} events: {expected}", file=sys.stderr)

    status_file = workdir / "bridge-status.json"
    log = (workdir / "bridge.log").open("ab")
    started = time.monotonic()
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "interlinked.bridge",
            "--queue-url",
            queue,
            "--status-file",
            str(status_file),
            "--retry-seconds",
            "1",
            "--routes",
            str(workdir / "routes.json"),
            *(["--concurrency", str(args.concurrency)] if args.concurrency else []),
        ],
        env={**os.environ, "INTERLINKED_BRIDGE_LOG_LEVEL": "WARNING"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while not service_ready(status_file, pid=consumer.pid):
            if consumer.poll() is not None:
                raise SystemExit(f"the bench bridge exited; see {workdir / 'bridge.log'}")
            time.sleep(0.05)
        ready = time.monotonic()
        all_runs = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = count_runs(deployment_id) - runs_before
            if all_runs is None and runs >= expected["unique"]:
                all_runs = time.monotonic()
            visible, in_flight = queue_counts(sqs, queue)
            dead = sum(queue_counts(sqs, dlq))
            if all_runs is not None and visible == 0 and in_flight == 0 and dead >= expected["poison"]:
                break
            time.sleep(0.5)
        drained = time.monotonic()
        time.sleep(2.5)  # one more status write
        status = read_status(status_file) or {}
    finally:
        consumer.terminate()
        consumer.wait(timeout=30)

    runs = count_runs(deployment_id) - runs_before
    dead = sum(queue_counts(sqs, dlq))
    valid = expected["unique"] + expected["duplicates"]
    if all_runs is None:
        raise SystemExit(
            f"only {runs} of {expected['unique']} runs were created; see {workdir / 'bridge.log'}"
        )
    print(
        f"\n{args.events} events through the event bridge ({expected['duplicates']} duplicates, {expected['poison']} poison)"
    )
    print(
        f"  runs created              {runs:>6}   (unique valid events: {expected['unique']}) {'OK' if runs == expected['unique'] else 'MISMATCH'}"
    )
    print(
        f"  dead letters              {dead:>6}   (poison events: {expected['poison']}) {'OK' if dead == expected['poison'] else 'MISMATCH'}"
    )
    with_reason = dead_letters_with_reason(sqs, dlq)
    print(f"  dead letters with a reason{with_reason:>6}")
    print(f"  left in the queue         {sum(queue_counts(sqs, queue)):>6}")
    print(f"  consumer start            {ready - started:>6.2f} s")
    print(
        f"  every run created after   {all_runs - ready:>6.2f} s  → {valid / (all_runs - ready):.0f} valid events/s "
        f"({expected['unique'] / (all_runs - ready):.0f} runs/s)"
    )
    print(
        f"  queue empty after         {drained - ready:>6.2f} s  (poison waits for {settings.max_receive_count} receives)"
    )
    print(f"  consumer counters         {json.dumps({k: v for k, v in status.get('counts', {}).items()})}")
    print(
        f"  batches in flight         {status.get('peak_batches_in_flight', '?')} at most "
        f"(concurrency {status.get('concurrency', '?')})"
    )

    results = {
        "events": args.events,
        "valid": valid,
        "unique": expected["unique"],
        "poison": expected["poison"],
        "runs": runs,
        "dead_letters": dead,
        "dead_letters_with_reason": with_reason,
        "left": sum(queue_counts(sqs, queue)),
        "seconds_to_all_runs": all_runs - ready,
        "valid_per_second": valid / (all_runs - ready),
        "seconds_to_empty": drained - ready,
        "counts": status.get("counts", {}),
    }
    if args.stock:
        sample = [(body, attributes) for body, attributes in bodies if not body.startswith(("{not", "[]"))][
            : args.stock
        ]
        started = time.monotonic()
        for _ in sample:
            run_deployment(DEPLOYMENT, parameters={"a": 1, "b": 2}, timeout=0, as_subflow=False)
        seconds = time.monotonic() - started
        print(
            f"\nstock: run_deployment per delivery, {len(sample)} deliveries → {len(sample)} runs (duplicates included) "
            f"in {seconds:.2f} s → {len(sample) / seconds:.0f} events/s"
        )
        results["stock_events_per_second"] = len(sample) / seconds
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    load = os.getloadavg()
    print(
        f"\nload average: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min, {os.cpu_count()} cores)"
    )
    sqs.delete_queue(QueueUrl=queue)
    sqs.delete_queue(QueueUrl=dlq)


if __name__ == "__main__":
    main()
