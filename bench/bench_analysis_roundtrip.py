"""Round trip of interactive analysis requests, side by side in one run:

    .venv/bin/python bench/bench_analysis_roundtrip.py [--requests 200] [--delay-requests 200]

Send a task to a FIFO work queue → WorkResponse received from an SQS queue subscribed (raw
delivery) to the response topic, one request at a time, on a warm experiment (pbmc68k_reduced,
imported once), for GeneExpression, ListGenes and GetEmbedding. Every request has a distinct body
(another gene pair, page or option), so no variant answers from a result cache.

(ours)  the analysis service (`python -m flows.analysis.service`), recording every request in
        Prefect (events + summary artifact);
(a)     a bare boto3 loop: receive → the same compute (`flows.analysis.tasks.run_task` on an
        in-memory experiment) → publish → delete: the floor on this emulator;
(b)     the same request routed through a Prefect background task: a router receives, calls
        `answer.delay(task)` and deletes; a task worker (`prefect.task_worker.serve`) computes and
        publishes.

Each variant gets the same private queue and topic in turn (nothing else consumes them). Roles
(`--role bare-loop|delay-router|delay-worker`) are this file run as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _common import print_table, summarise  # noqa: E402

EXPERIMENT_ID = "bench-pbmc68k"
TASKS = ("GeneExpression", "ListGenes", "GetEmbedding")


# ---- roles (subprocesses) -----------------------------------------------------------------------


_CLIENTS: tuple | None = None


def _clients():
    """(sqs, sns, s3) clients, made once per process (a boto3 client costs milliseconds to build)."""
    global _CLIENTS
    if _CLIENTS is None:
        import boto3

        session = boto3.session.Session()
        _CLIENTS = (session.client("sqs"), session.client("sns"), session.client("s3"))
    return _CLIENTS


def _load_experiment(s3, bucket: str):
    """The experiment in memory exactly as the service holds it."""
    import tempfile

    from flows.analysis.experiments import clean_etag, read_experiment_file
    from flows.analysis.protocol import experiment_key

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "processed.h5ad"
        response = s3.get_object(Bucket=bucket, Key=experiment_key(EXPERIMENT_ID))
        path.write_bytes(response["Body"].read())
        return read_experiment_file(path, EXPERIMENT_ID, clean_etag(response["ETag"]))


def _compute(request: dict, experiment) -> dict:
    """Parse, compute and build the WorkResponse: the same work the service does for a cache miss."""
    from flows.analysis.protocol import ServiceError, encode, error_response, parse_task, work_response
    from flows.analysis.tasks import run_task

    try:
        task = parse_task(request)
        return work_response(request, encode(run_task(task, experiment)))
    except ServiceError as error:
        return error_response(request, error.code, error.message)


def role_bare_loop(args) -> None:
    sqs, sns, s3 = _clients()
    experiment = _load_experiment(s3, args.bucket)
    print("ready", flush=True)
    while True:
        messages = sqs.receive_message(
            QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20
        ).get("Messages", [])
        for message in messages:
            request = json.loads(message["Body"])
            response = _compute(request, experiment)
            sns.publish(TopicArn=args.topic_arn, Message=json.dumps(response))
            sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=message["ReceiptHandle"])


_EXPERIMENT = None


def _delay_task():
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    @task(name="answer-analysis-request", cache_policy=NO_CACHE, persist_result=False)
    def answer(request: dict, topic_arn: str, bucket: str) -> None:
        global _EXPERIMENT
        _, sns, s3 = _clients()
        if _EXPERIMENT is None:
            _EXPERIMENT = _load_experiment(s3, bucket)
        sns.publish(TopicArn=topic_arn, Message=json.dumps(_compute(request, _EXPERIMENT)))

    return answer


def role_delay_worker(args) -> None:
    from prefect.task_worker import serve

    answer = _delay_task()
    # Warm the experiment before declaring readiness.
    global _EXPERIMENT
    _EXPERIMENT = _load_experiment(_clients()[2], args.bucket)
    print("ready", flush=True)
    serve(answer, limit=4)


def role_delay_router(args) -> None:
    sqs, _, _ = _clients()
    answer = _delay_task()
    print("ready", flush=True)
    while True:
        messages = sqs.receive_message(
            QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20
        ).get("Messages", [])
        for message in messages:
            answer.delay(json.loads(message["Body"]), args.topic_arn, args.bucket)
            sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=message["ReceiptHandle"])


# ---- the driver ---------------------------------------------------------------------------------


def bodies(task: str, count: int, gene_names: list[str], *, warmup: bool = False) -> list[dict]:
    """``count`` distinct bodies of one task (warm-up bodies differ from measured ones)."""
    result = []
    for i in range(count):
        if task == "GeneExpression":
            genes = [gene_names[(2 * i) % len(gene_names)], gene_names[(2 * i + 1) % len(gene_names)]]
            if i >= len(gene_names) // 2:
                genes.append(gene_names[(i * 7) % len(gene_names)])
            cell_sets = ["louvain-3"] if warmup else ["louvain-0", "louvain-1", "louvain-2"]
            result.append({"name": task, "genes": genes, "cellSets": cell_sets})
        elif task == "ListGenes":
            result.append(
                {
                    "name": task,
                    "selectFields": ["gene_names", "dispersions", "highly_variable"],
                    "orderBy": "dispersions",
                    "orderDirection": "desc",
                    "offset": i % 700,
                    "limit": (7 if warmup else 20) + i // 700,
                }
            )
        else:
            # Stored embeddings; nNeighbors only makes each body (and its cache key) distinct.
            result.append(
                {"name": task, "type": ("umap", "pca")[i % 2], "nNeighbors": 2 + i + (10**6 if warmup else 0)}
            )
    return result


class Lane:
    """One variant's private work queue (FIFO, with a DLQ), response topic and listener queue.

    Every variant has its own lane and its consumer runs the whole time (idle consumers only
    long-poll), so the variants can be interleaved: load changes on the machine hit them alike.
    """

    def __init__(self, name: str, bucket: str) -> None:
        import boto3

        session = boto3.session.Session()
        self.name = name
        self.sqs = session.client("sqs")
        sns = session.client("sns")
        self.bucket = bucket
        tag = uuid.uuid4().hex[:8]
        dlq = self.sqs.create_queue(
            QueueName=f"bench-analysis-{tag}-dlq.fifo", Attributes={"FifoQueue": "true"}
        )["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.queue_url = self.sqs.create_queue(
            QueueName=f"bench-analysis-{tag}.fifo",
            Attributes={
                "FifoQueue": "true",
                "ContentBasedDeduplication": "true",
                "VisibilityTimeout": "30",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
            },
        )["QueueUrl"]
        self.topic_arn = sns.create_topic(Name=f"bench-analysis-{tag}")["TopicArn"]
        self.listener = self.sqs.create_queue(QueueName=f"bench-analysis-{tag}-responses")["QueueUrl"]
        listener_arn = self.sqs.get_queue_attributes(QueueUrl=self.listener, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=listener_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        self.times: dict[str, list[float]] = {task: [] for task in TASKS}
        self.sent = 0

    @property
    def role_args(self) -> list[str]:
        return ["--queue-url", self.queue_url, "--topic-arn", self.topic_arn, "--bucket", self.bucket]

    def round_trip(self, body: dict) -> float:
        request = {
            "uuid": str(uuid.uuid4()),
            "socketId": "bench",
            "experimentId": EXPERIMENT_ID,
            "timeout": "2099-12-31 00:00:00",
            "body": body,
        }
        self.sent += 1
        started = time.perf_counter()
        self.sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=json.dumps(request),
            MessageGroupId=request["uuid"],
            MessageDeduplicationId=request["uuid"],
        )
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.listener, MaxNumberOfMessages=1, WaitTimeSeconds=20
            ).get("Messages", [])
            if not messages:
                raise RuntimeError(f"{self.name}: no response within 20 s to {body}")
            message = messages[0]
            elapsed = time.perf_counter() - started
            self.sqs.delete_message(QueueUrl=self.listener, ReceiptHandle=message["ReceiptHandle"])
            response = json.loads(message["Body"])
            if response["request"]["uuid"] != request["uuid"]:
                continue  # a late answer to an earlier request
            if response["response"]["error"]:
                raise RuntimeError(f"{self.name}: error response: {response['response']}")
            return elapsed


def start_process(name: str, command: list[str], env: dict, ready) -> subprocess.Popen:
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-analysis-{name}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, **env},
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not ready(process):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start; see {log.name}")
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _printed_ready(process: subprocess.Popen) -> bool:
    return process.stdout.readline().strip() == "ready"


def _events_of_run(flow_run_id: str, since: str) -> int:
    """How many requests the Prefect server has recorded in the service flow run's events."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        event_filter = {
            "occurred": {"since": since},
            "event": {"name": ["interlinked.analysis.requests"]},
            "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        }
        page = client.request("POST", "/events/filter", json={"filter": event_filter, "limit": 50}).json()
        events = list(page["events"])
        while page.get("next_page"):
            page = client.request("GET", page["next_page"]).json()
            events += page["events"]
    return sum(len(event["payload"]["requests"]) for event in events)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per task and variant")
    parser.add_argument("--delay-requests", type=int, default=None, help="requests per task for (b)")
    parser.add_argument("--rounds", type=int, default=10, help="variants take turns this many times")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--role", choices=["bare-loop", "delay-router", "delay-worker"])
    parser.add_argument("--queue-url")
    parser.add_argument("--topic-arn")
    parser.add_argument("--bucket")
    parser.add_argument("--skip", action="append", default=[], choices=["ours", "bare", "delay"])
    parser.add_argument(
        "--extra-service", action="append", default=[], metavar="NAME=MODULE", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.role:
        roles = {
            "bare-loop": role_bare_loop,
            "delay-router": role_delay_router,
            "delay-worker": role_delay_worker,
        }
        roles[args.role](args)
        return

    from datetime import UTC, datetime

    from interlinked.local import up
    from interlinked.settings import get_settings

    settings = get_settings()
    up(settings, echo=lambda line: print(line, file=sys.stderr))
    # Imported after `up` has set PREFECT_API_URL: Prefect reads its settings once, at import.
    from blocks.status import read_status, service_ready
    from flows.analysis.client import import_example

    import_example("pbmc68k_reduced", EXPERIMENT_ID)
    import scanpy as sc

    gene_names = list(sc.datasets.pbmc68k_reduced().raw.var_names)
    python = sys.executable
    counts = {"ours": args.requests, "bare": args.requests, "delay": args.delay_requests or args.requests}
    labels = {
        "bare": "(a) bare boto3 loop",
        "ours": "interlinked analysis service",
        "delay": "(b) Prefect task.delay",
    }
    lanes = {
        name: Lane(name, settings.data_bucket) for name in ("bare", "ours", "delay") if name not in args.skip
    }
    # Design experiments: more services (a module with a `main`, e.g. a patched service) as extra lanes.
    extra = dict(item.split("=", 1) for item in args.extra_service)
    for name in extra:
        lanes[name] = Lane(name, settings.data_bucket)
        counts[name] = args.requests
        labels[name] = f"variant {name}"
    processes: list[subprocess.Popen] = []
    status = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-analysis-{uuid.uuid4().hex[:6]}.json"
    since = datetime.now(UTC).isoformat()
    try:
        if "bare" in lanes:
            processes.append(
                start_process(
                    "bare",
                    [python, __file__, "--role", "bare-loop", *lanes["bare"].role_args],
                    {},
                    _printed_ready,
                )
            )
        if "ours" in lanes:
            lane = lanes["ours"]
            processes.append(
                start_process(
                    "service",
                    [
                        python,
                        "-m",
                        "flows.analysis.service",
                        "--status-file",
                        str(status),
                        "--queue-url",
                        lane.queue_url,
                        "--topic-arn",
                        lane.topic_arn,
                        "--data-bucket",
                        lane.bucket,
                    ],
                    {"INTERLINKED_ANALYSIS_SUMMARY_SECONDS": "10"},
                    lambda _: service_ready(status),
                )
            )
        for name, module in extra.items():
            lane = lanes[name]
            variant_status = status.with_name(f"{status.stem}-{name}.json")
            command = [
                python,
                "-m",
                module,
                "--status-file",
                str(variant_status),
                "--queue-url",
                lane.queue_url,
            ]
            command += ["--topic-arn", lane.topic_arn, "--data-bucket", lane.bucket]
            processes.append(
                start_process(name, command, {}, lambda _, path=variant_status: service_ready(path))
            )
        if "delay" in lanes:
            role_args = lanes["delay"].role_args
            worker = [python, __file__, "--role", "delay-worker", *role_args]
            router = [python, __file__, "--role", "delay-router", *role_args]
            processes.append(start_process("delay-worker", worker, {}, _printed_ready))
            processes.append(start_process("delay-router", router, {}, _printed_ready))
            time.sleep(2)  # the task worker's subscription

        print("warming up ...", file=sys.stderr)
        for lane in lanes.values():
            for task in TASKS:
                for body in bodies(task, args.warmup, gene_names, warmup=True):
                    lane.round_trip(body)
        all_bodies = {task: bodies(task, max(counts.values()), gene_names) for task in TASKS}
        for round_ in range(args.rounds):
            order = list(lanes.items())
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for task in TASKS:
                for name, lane in order:
                    share = counts[name] // args.rounds + (1 if round_ < counts[name] % args.rounds else 0)
                    done = len(lane.times[task])
                    for body in all_bodies[task][done : done + share]:
                        lane.times[task].append(lane.round_trip(body))
            print(f"  round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        flow_run_id = read_status(status)["flow_run_id"] if "ours" in lanes else None
    finally:
        for process in processes:
            _stop(process)  # the service flushes its events when it stops

    results = {
        f"{task}: {labels[name]}": summarise(lane.times[task])
        for task in TASKS
        for name, lane in lanes.items()
    }
    print_table(
        "Round trip send → WorkResponse (SQS → compute → SNS → SQS), one request at a time, warm experiment",
        results,
    )
    print()
    for task in TASKS:
        ours = results.get(f"{task}: {labels['ours']}")
        bare = results.get(f"{task}: {labels['bare']}")
        delay = results.get(f"{task}: {labels['delay']}")
        parts = []
        if ours and bare:
            parts.append(f"p50 {ours['p50'] / bare['p50']:.2f}x the bare loop (target <= 1.3x)")
        if ours and delay:
            parts.append(f"{delay['p50'] / ours['p50']:.1f}x faster than task.delay (target >= 5x)")
        for name in extra:
            variant = results.get(f"{task}: {labels[name]}")
            if variant and bare:
                parts.append(f"{name} {variant['p50'] / bare['p50']:.2f}x")
        if parts:
            print(f"{task}: " + "; ".join(parts))
    if flow_run_id:
        expected = lanes["ours"].sent
        deadline = time.monotonic() + 30
        while (recorded := _events_of_run(flow_run_id, since)) < expected and time.monotonic() < deadline:
            time.sleep(1)
        print(f"Prefect: {recorded} of {expected} requests recorded as events of flow run {flow_run_id}")


if __name__ == "__main__":
    main()
