"""Flow-run start latency and throughput: the stock process worker against the warm pool, one run.

    .venv/bin/python bench/bench_pool_start.py [--runs 50] [--stock-runs 10] [--burst 500] [--stock-burst 100]

Latency: `run_deployment` of a trivial flow → the run reaches Running (its start_time), p50/p95,
interleaving the warm pool and two stock process workers (Prefect's default 10 s polling, and
1 s polling as a competent user would set) so all see the same machine load.
Throughput: `--burst` trivial runs created at once on the warm pool (bulk API calls of 100) →
completed runs per minute, counted from the submission; `--stock-burst` the same on the stock
worker with 1 s polling.
Every pool runs the same flow (`bench/stock_flow.py`) from this checkout. The stack is the one
the environment names (INTERLINKED_*): `bench_databases.py` runs this on SQLite and Postgres.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import print_table, summarise  # noqa: E402
from _pools import deploy, stock_worker  # noqa: E402

from interlinked.local import up  # noqa: E402
from interlinked.settings import get_settings  # noqa: E402


def _time_to_running(client, deployment_name: str) -> float:
    from prefect.deployments import run_deployment

    created = time.time()
    run = run_deployment(deployment_name, timeout=0, as_subflow=False)
    while True:
        current = client.read_flow_run(run.id)
        if current.state and current.state.type.value in ("RUNNING", "COMPLETED", "FAILED", "CRASHED"):
            if current.start_time is None:
                return time.time() - created
            return current.start_time.timestamp() - created
        time.sleep(0.05)


def _create_at_once(
    api_url: str, deployment_id: str, count: int, *, deadline: float
) -> tuple[list[str], int]:
    """Create ``count`` runs in bulk (the server takes up to 100 per call), as one submission.

    Every run has an idempotency key, so a chunk whose call timed out or got a 503 or 500 (a busy
    SQLite server: "database is locked") is sent again without creating its runs twice, until
    ``deadline`` (``time.monotonic()``). Returns the run ids and how many calls had to be repeated."""
    import httpx

    from interlinked.bridge.prefect_api import auth_headers_from_env

    token = uuid.uuid4().hex[:8]
    ids: list[str] = []
    retries = 0
    with httpx.Client(base_url=api_url, headers=auth_headers_from_env(), timeout=120) as http:
        while len(ids) < count:
            size = min(100, count - len(ids))
            body = [{"idempotency_key": f"burst-{token}-{len(ids) + i}"} for i in range(size)]
            try:
                reply = http.post(f"/deployments/{deployment_id}/create_flow_run/bulk", json=body)
            except httpx.TimeoutException:
                reply = None
            if reply is None or reply.status_code in (500, 503):
                retries += 1
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"the server took {len(ids)} of {count} runs before the deadline "
                        f"({retries} bulk calls of up to 100 timed out or failed)"
                    )
                print(
                    f"bulk call of {size} runs: {'timed out' if reply is None else reply.status_code}; again",
                    file=sys.stderr,
                )
                time.sleep(1)
                continue
            reply.raise_for_status()
            ids += [r["flow_run_id"] for r in reply.json()["results"] if r.get("status") == "CREATED"]
    return ids, retries


def _burst(client, api_url: str, deployment_name: str, count: int, *, limit: float) -> tuple[float, int]:
    """Create ``count`` runs at once; seconds until all are final, and how many got there."""
    from prefect.client.schemas.filters import FlowRunFilter

    final_types = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
    deployment = client.read_deployment_by_name(deployment_name)
    started = time.time()
    ids, retries = _create_at_once(api_url, str(deployment.id), count, deadline=time.monotonic() + limit)
    if retries:
        print(f"burst: {retries} bulk call(s) repeated (timeout, 500 or 503)", file=sys.stderr)
    deadline = started + 1200
    done = 0
    while time.time() < deadline:
        done = client.count_flow_runs(
            flow_run_filter=FlowRunFilter(id={"any_": ids}, state={"type": {"any_": final_types}})
        )
        if done >= count:
            break
        time.sleep(1)
    return time.time() - started, done


VARIANTS = {
    # name → (label, stock worker polling seconds; None = the warm pool)
    "warm": ("warm-process worker (the local pool)", None),
    "stock-1s": ("stock process worker, 1 s polling", 1.0),
    "stock": ("stock process worker, default polling", "default"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50, help="latency samples on the warm pool")
    parser.add_argument(
        "--stock-runs",
        type=int,
        default=10,
        help="latency samples on each stock worker (they take ~10 s each)",
    )
    parser.add_argument("--burst", type=int, default=500, help="runs created at once on the warm pool")
    parser.add_argument(
        "--stock-burst",
        type=int,
        default=100,
        help="runs created at once on the stock worker with 1 s polling",
    )
    parser.add_argument(
        "--burst-deadline",
        type=float,
        default=600,
        help="seconds the server gets to accept a burst's runs before the burst counts as failed",
    )
    parser.add_argument("--json-out", type=Path, help="also write the results here (for bench_databases.py)")
    args = parser.parse_args()

    settings = get_settings()
    up(settings, echo=lambda line: print(line, file=sys.stderr))
    from prefect.client.orchestration import get_client

    deployments = {"warm": deploy("bench/stock_flow.py:noop", name="bench-warm", pool=settings.work_pool)}
    latencies: dict[str, list[float]] = {"warm": [], "stock-1s": [], "stock": []}
    throughput: dict[str, tuple[float, int, int]] = {}
    failures: dict[str, str] = {}
    with (
        stock_worker(settings, pool="bench-stock-1s", query_seconds=1) as pool_1s,
        stock_worker(settings, pool="bench-stock") as pool_default,
        get_client(sync_client=True) as client,
    ):
        deployments["stock-1s"] = deploy("bench/stock_flow.py:noop", name="bench-stock-1s", pool=pool_1s)
        deployments["stock"] = deploy("bench/stock_flow.py:noop", name="bench-stock", pool=pool_default)
        # Interleaved, so every variant sees the same machine load.
        for index in range(max(args.runs, args.stock_runs)):
            for name in ("warm", "stock-1s", "stock"):
                wanted = args.runs if name == "warm" else args.stock_runs
                if index < wanted:
                    latencies[name].append(_time_to_running(client, deployments[name]))
            print(
                f"round {index + 1}: "
                + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in latencies.items() if values),
                file=sys.stderr,
            )
        for name, count in (("warm", args.burst), ("stock-1s", args.stock_burst)):
            if count:
                try:
                    seconds, done = _burst(
                        client, settings.prefect_api_url, deployments[name], count, limit=args.burst_deadline
                    )
                except (Exception, SystemExit) as error:  # the server could not take the burst
                    failures[name] = f"{type(error).__name__}: {error}"[:300]
                    print(f"burst {name} failed: {failures[name]}", file=sys.stderr)
                    continue
                throughput[name] = (seconds, done, count)
                print(f"burst {name}: {done}/{count} in {seconds:.1f} s", file=sys.stderr)

    rows = {VARIANTS[name][0]: summarise(values) for name, values in latencies.items() if values}
    print_table("run_deployment → Running, trivial flow (interleaved)", rows)
    if throughput:
        print("\nThroughput: trivial runs created at once (bulk API) → all final")
        print(f"{'':<48}{'runs':>8}{'completed':>10}{'seconds':>10}{'runs/min':>10}")
        for name, (seconds, done, count) in throughput.items():
            print(f"{VARIANTS[name][0]:<48}{count:>8}{done:>10}{seconds:>10.1f}{done / seconds * 60:>10.1f}")
    for name, failure in failures.items():
        print(f"burst on the {VARIANTS[name][0]} failed: {failure}")
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "latency": {name: summarise(values) for name, values in latencies.items() if values},
                    "burst": {
                        name: {
                            "runs": count,
                            "completed": done,
                            "seconds": seconds,
                            "per_minute": done / seconds * 60,
                        }
                        for name, (seconds, done, count) in throughput.items()
                    },
                    "burst_failed": failures,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
