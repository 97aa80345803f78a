"""Flow-run start latency and throughput: the stock process worker against the warm pool, one run.

    .venv/bin/python bench/bench_pool_start.py [--runs 30] [--burst 200]

Latency: `run_deployment` of a trivial flow → the run reaches Running (its start_time), p50/p95,
alternating stock and warm so both see the same machine load.
Throughput: `--burst` trivial runs created at once on each pool (bulk API calls of 100) →
completed runs per minute, counted from the submission.
Both pools run the same flow (`bench/stock_flow.py`) from this checkout; the stock worker uses
Prefect's default settings.
"""

from __future__ import annotations

import argparse
import sys
import time
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


def _create_at_once(api_url: str, deployment_id: str, count: int) -> list[str]:
    """Create ``count`` runs in bulk (the server takes up to 100 per call), as one submission."""
    import httpx

    ids: list[str] = []
    with httpx.Client(base_url=api_url, timeout=120) as http:
        while len(ids) < count:
            size = min(100, count - len(ids))
            reply = http.post(f"/deployments/{deployment_id}/create_flow_run/bulk", json=[{}] * size)
            if reply.status_code == 503:  # a busy SQLite server: try the same chunk again
                time.sleep(1)
                continue
            reply.raise_for_status()
            ids += [r["flow_run_id"] for r in reply.json()["results"] if r.get("status") == "CREATED"]
    return ids


def _burst(client, api_url: str, deployment_name: str, count: int) -> tuple[float, int]:
    from prefect.client.schemas.filters import FlowRunFilter

    deployment = client.read_deployment_by_name(deployment_name)
    started = time.time()
    ids = _create_at_once(api_url, str(deployment.id), count)
    deadline = started + 1200
    done = 0
    while time.time() < deadline:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id={"any_": ids}), limit=count)
        done = sum(1 for run in runs if run.state and run.state.is_final())
        if done >= count:
            break
        time.sleep(1)
    return time.time() - started, done


def _print_latencies(latencies: dict[str, list[float]], runs: int, pool: str) -> None:
    print_table(
        f"run_deployment → Running, trivial flow, {runs} runs each (alternating)",
        {
            "stock process worker (pool bench-stock)": summarise(latencies["stock"]),
            f"warm-process worker (pool {pool})": summarise(latencies["warm"]),
        },
    )
    stock_p50 = summarise(latencies["stock"])["p50"]
    warm_p50 = summarise(latencies["warm"])["p50"]
    print(f"\nwarm p50 is {stock_p50 / warm_p50:.1f}x faster than stock")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()

    settings = get_settings()
    up(settings, echo=lambda line: print(line, file=sys.stderr))
    from prefect.client.orchestration import get_client

    warm = deploy("bench/stock_flow.py:noop", name="bench-warm", pool=settings.work_pool)
    with stock_worker(settings) as stock_pool, get_client(sync_client=True) as client:
        stock = deploy("bench/stock_flow.py:noop", name="bench-stock", pool=stock_pool)
        latencies = {"stock": [], "warm": []}
        for index in range(args.runs):
            latencies["stock"].append(_time_to_running(client, stock))
            latencies["warm"].append(_time_to_running(client, warm))
            print(
                f"run {index + 1}/{args.runs}: stock {latencies['stock'][-1]:.2f} s, "
                f"warm {latencies['warm'][-1]:.2f} s",
                file=sys.stderr,
            )
        if args.runs:
            _print_latencies(latencies, args.runs, settings.work_pool)
        throughput = {}
        if args.burst:
            for name, deployment in (("warm", warm), ("stock", stock)):
                seconds, done = _burst(client, settings.prefect_api_url, deployment, args.burst)
                throughput[name] = (seconds, done)
                print(f"burst {name}: {done}/{args.burst} in {seconds:.1f} s", file=sys.stderr)

    if throughput:
        print(f"\nThroughput: {args.burst} trivial runs created at once")
        print(f"{'':<48}{'completed':>10}{'seconds':>10}{'runs/min':>10}")
        for name, (seconds, done) in throughput.items():
            print(f"{name + ' pool':<48}{done:>10}{seconds:>10.1f}{done / seconds * 60:>10.1f}")


if __name__ == "__main__":
    main()
