"""S3 upload → flow run created / Running: the event bridge against a stock Prefect deployment trigger.

    .venv/bin/python bench/bench_bridge_latency.py [--submissions 30]

Both paths get the very same S3 events (a bucket of the benchmark's own notifying a queue of its own,
drained by one bridge consumer) and run the same deployment, ``process-submission/local``, on the same
warm pool:

(a) bridge: the consumer creates the flow run itself through the API, with its idempotency key;
(b) stock: the consumer only emits the Prefect event (an ``emit`` route) and the deployment trigger
    of ``process-submission/local`` in prefect.yaml (deployed by ``interlinked up``) creates the run.

Submissions alternate between the two paths, one at a time: each is uploaded, then the benchmark
waits until its run is Running. "Created" is the run's creation time on the server, "Running" its
start time, both against the moment just before the upload (one machine, one clock).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import percentile  # noqa: E402

from interlinked.local import client_env, up  # noqa: E402
from interlinked.settings import get_settings  # noqa: E402


def table(title: str, rows: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    header = f"{'':<44}{'n':>4}{'p50':>9}{'p95':>9}{'min':>9}{'max':>9}"
    print(header)
    print("-" * len(header))
    for name, values in rows.items():
        stats = [percentile(values, 50), percentile(values, 95), min(values), max(values)]
        print(f"{name:<44}{len(values):>4}" + "".join(f"{value:>8.3f}s" for value in stats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--submissions", type=int, default=30, help="per path (default 30)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one run")
    args = parser.parse_args()

    settings = get_settings()
    up(settings, echo=lambda line: print(line, file=sys.stderr))
    os.environ.update(client_env(settings))

    import boto3
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
    )

    from blocks.status import service_ready
    from interlinked.bridge.routes import DEFAULT_ROUTES_FILE

    session = boto3.session.Session()
    s3, sqs = session.client("s3"), session.client("sqs")
    suffix = uuid.uuid4().hex[:6]
    bucket = f"bench-bridge-{suffix}"
    s3.create_bucket(Bucket=bucket)
    dlq = sqs.create_queue(QueueName=f"bench-bridge-{suffix}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=f"bench-bridge-{suffix}",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".json"}]}},
                }
            ]
        },
    )

    # Routes: group "stock" only emits the event (the trigger starts the run); the rest is dispatched.
    routes = json.loads(DEFAULT_ROUTES_FILE.read_text())
    emit = copy.deepcopy(routes["routes"][0])
    emit.update(name="submission-triggered", action="emit")
    emit["match"]["key_regex"] = r"^(?P<group>stock)/submissions/[^/]+\.json$"
    routes["routes"].insert(0, emit)
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    (workdir / "routes.json").write_text(json.dumps(routes))

    status_file = workdir / "bridge-status.json"
    log = (workdir / "bridge.log").open("ab")
    consumer = subprocess.Popen(
        [sys.executable, "-m", "interlinked.bridge", "--queue-url", queue, "--status-file", str(status_file)],
        env={
            **os.environ,
            "INTERLINKED_BRIDGE_ROUTES": str(workdir / "routes.json"),
            "INTERLINKED_ANALYSIS_BUCKET": bucket,
            "INTERLINKED_BRIDGE_LOG_LEVEL": "WARNING",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not service_ready(status_file, pid=consumer.pid):
            if time.monotonic() > deadline or consumer.poll() is not None:
                raise SystemExit(f"the bench bridge did not start; see {workdir / 'bridge.log'}")
            time.sleep(0.2)

        for group in ("bridge", "stock"):
            s3.put_object(Bucket=bucket, Key=f"{group}/inputs/t.csv", Body=b"v\n1\n2\n3\n")
            s3.put_object(
                Bucket=bucket,
                Key=f"{group}/configs/d.json",
                Body=json.dumps({"analysis": "describe"}).encode(),
            )
        time.sleep(1)

        results: dict[str, dict[str, list[float]]] = {
            "bridge": {"created": [], "running": []},
            "stock": {"created": [], "running": []},
        }
        started_at = time.time()
        for index in range(args.submissions * 2):
            group = "bridge" if index % 2 == 0 else "stock"
            key = f"{group}/submissions/s{index}.json"
            body = json.dumps(
                {
                    "dataname": f"{group}/inputs/t.csv",
                    "configname": f"{group}/configs/d.json",
                    "timestamp": f"t{index}",
                }
            ).encode()
            t0 = time.time()
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            run = None
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                with get_client(sync_client=True) as client:
                    runs = client.read_flow_runs(
                        flow_filter=FlowFilter(name=FlowFilterName(any_=["process-submission"])),
                        flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
                        limit=50,
                        sort="EXPECTED_START_TIME_DESC",
                    )
                run = next(
                    (
                        r
                        for r in runs
                        if r.parameters.get("key") == key and r.parameters.get("bucket") == bucket
                    ),
                    None,
                )
                if run is not None:
                    break
                time.sleep(0.05)
            if run is None:
                raise SystemExit(
                    f"{key}: no running flow run within {args.timeout} s; see {workdir / 'bridge.log'}"
                )
            created = run.created.timestamp() - t0
            running = run.start_time.timestamp() - t0
            results[group]["created"].append(created)
            results[group]["running"].append(running)
            print(
                f"{index + 1}/{args.submissions * 2} {group:<6} created {created:6.3f} s  running {running:6.3f} s",
                file=sys.stderr,
            )
        elapsed = time.time() - started_at
    finally:
        consumer.terminate()
        consumer.wait(timeout=30)

    table(
        f"S3 upload → process-submission run, {args.submissions} submissions per path "
        f"(warm pool '{settings.work_pool}', {elapsed:.0f} s in all)",
        {
            "bridge: upload → flow run created": results["bridge"]["created"],
            "stock trigger: upload → flow run created": results["stock"]["created"],
            "bridge: upload → flow run Running": results["bridge"]["running"],
            "stock trigger: upload → flow run Running": results["stock"]["running"],
        },
    )
    load = os.getloadavg()
    print(
        f"\nload average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min, {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
