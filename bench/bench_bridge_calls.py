"""Where the event bridge's time goes: its calls timed, at a few batches in flight, with the server's CPU.

    .venv/bin/python bench/bench_bridge_calls.py [--events 200] [--concurrency 1,4] [--rounds 1]

Runs the consumer in this process against the developer stack (``interlinked up``), on a queue of
its own filled with ``--events`` valid events (30 % duplicates, no poison) routed to
``bench-noop/bench-idle`` (a pool without a worker, as in ``bench_bridge_throughput.py``, which
deploys it; run that once first). For each concurrency (batches in flight), in turn: events/s, the
mean and p50 of each call the consumer makes (SQS receive and delete, Prefect bulk run creation and
events), and the Prefect server process's CPU over the run (its share of a core, and per event).
When the bulk call's time grows with the batches in flight while the rate stays, the calls are
queueing in the server: it, not the consumer, is the bound.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_bridge_throughput import build_events, send_all  # noqa: E402
from bench_run_creation import _cpu, _server_pid  # noqa: E402

from interlinked.local import client_env  # noqa: E402
from interlinked.settings import get_settings  # noqa: E402

DEPLOYMENT = "bench-noop/bench-idle"


def timed(target, name: str, timings: dict, lock: threading.Lock) -> None:
    """Wrap ``target.name`` so that every call's duration lands in ``timings[name]``."""
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                timings[name].append(time.monotonic() - started)

    setattr(target, name, wrapper)


def one_run(events: int, concurrency: int, server_pid: int, workdir: Path) -> None:
    import boto3
    from botocore.config import Config

    from interlinked.bridge.consumer import Consumer, ConsumerConfig
    from interlinked.bridge.prefect_api import PrefectApi

    sqs = boto3.session.Session().client("sqs", config=Config(max_pool_connections=concurrency + 4))
    suffix = uuid.uuid4().hex[:6]
    bucket = f"bench-calls-{suffix}"
    queue = sqs.create_queue(QueueName=f"bench-calls-{suffix}")["QueueUrl"]
    bodies, _ = build_events(events, 0.30, 0.0, bucket, suffix)
    send_all(sqs, queue, bodies)
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
    routes_file = workdir / f"routes-{suffix}.json"
    routes_file.write_text(json.dumps(routes))
    config = ConsumerConfig(
        queue_url=queue,
        dead_letter_url=None,
        max_receives=5,
        prefect_api_url=os.environ["PREFECT_API_URL"],
        routes_file=str(routes_file),
        concurrency=concurrency,
        wait_seconds=1,
        retry_seconds=1,
    )
    api = PrefectApi(config.prefect_api_url)
    timings: dict[str, list[float]] = collections.defaultdict(list)
    lock = threading.Lock()
    for name in ("create_flow_runs_bulk", "emit_events"):
        timed(api, name, timings, lock)
    for name in ("receive_message", "delete_message_batch"):
        timed(sqs, name, timings, lock)
    consumer = Consumer(config, sqs=sqs, api=api)
    cpu_before = _cpu(server_pid)
    thread = threading.Thread(target=consumer.run, daemon=True)
    started = time.monotonic()
    thread.start()
    deadline = started + 900
    while consumer.stats.snapshot().get("dispatched", 0) < len(bodies) and time.monotonic() < deadline:
        time.sleep(0.1)
    seconds = time.monotonic() - started
    server_cpu = _cpu(server_pid) - cpu_before
    consumer.stop()
    thread.join(timeout=60)
    sqs.delete_queue(QueueUrl=queue)
    load = os.getloadavg()
    print(
        f"\n{concurrency} batch(es) in flight: {len(bodies)} events in {seconds:.1f} s → "
        f"{len(bodies) / seconds:.1f} events/s; Prefect server CPU {server_cpu:.1f} s "
        f"({server_cpu / seconds:.0%} of a core, {server_cpu / len(bodies) * 1000:.0f} ms per event); "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    print(f"  {'call':<24}{'n':>6}{'mean':>10}{'p50':>10}{'max':>10}")
    for name, values in timings.items():
        print(
            f"  {name:<24}{len(values):>6}{statistics.mean(values):>9.3f}s"
            f"{statistics.median(values):>9.3f}s{max(values):>9.3f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4", help="comma-separated batches in flight")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    settings = get_settings()
    os.environ.update(client_env(settings))
    server_pid = _server_pid(settings.prefect_port)
    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    for _ in range(args.rounds):
        for concurrency in (int(value) for value in args.concurrency.split(",")):
            one_run(args.events, concurrency, server_pid, workdir)


if __name__ == "__main__":
    main()
