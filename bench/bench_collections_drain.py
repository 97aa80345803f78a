"""Draining a task collection next to the same work as Prefect-mapped task runs and as one flow run
per task.

    .venv/bin/python bench/bench_collections_drain.py [--tasks 10000] [--drains 2] [--concurrency 8]
        [--batch 25] [--mapped-sample 1000] [--runs-sample 200] [--backend postgres|dynamodb]
        [--skip-mapped] [--skip-runs]

Against the running local stack (`interlinked up`; its environment from `interlinked env`), one
run, side by side:

1. ``--tasks`` no-op shell tasks (``true``) are added to a fresh collection of ``--backend`` and
   drained by ``--drains`` runs of ``drain-collection/local`` (`interlinked tasks drain --workers N
   --wait`): wall time from the command's start (the CLI, flow runs created, picked up by the warm
   pool, Dask clusters started) until the CLI sees the collection drained, and tasks/s; below the
   table, where that time went (from the flow runs' timestamps);
2. the same no-op command as Prefect task runs mapped in one flow (``.map`` on a thread pool of
   ``--concurrency`` slots), on ``--mapped-sample`` items, extrapolated linearly to ``--tasks``;
3. the same no-op command as one flow run per task on the stack's warm pool (`local`): a sample of
   ``--runs-sample`` runs of a trivial deployment (``bench/stock_flow.py:shell_task``) created at
   once with the bulk API, wall time until every one is final, extrapolated linearly to ``--tasks``.

Sampled rows say so in the table. The collection is deleted afterwards. The target of issue 11 is
< 30 s for 10,000 tasks by 2 drains on PostgreSQL, and >= 5x the mapped path. The load average is
printed before and after: the machine is shared, and every path here is CPU-bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERLINKED = str(Path(sys.executable).with_name("interlinked"))


def _cli(*args: str, env: dict[str, str], timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [INTERLINKED, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def stack_environment() -> dict[str, str]:
    """This environment plus what `interlinked env` exports (the running stack)."""
    result = subprocess.run([INTERLINKED, "env"], capture_output=True, text=True, check=True, cwd=ROOT)
    env = dict(os.environ)
    for line in result.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip("'\"")
    return env


def _when(value) -> float | None:
    return value.timestamp() if value is not None else None


def drain_breakdown(run_ids: list[str], started: float, seconds: float) -> str:
    """Where the drain row's wall time went, from the flow runs' timestamps (wall clock)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(run_id) for run_id in run_ids]
    created = min(_when(run.created) for run in runs)
    running = [_when(run.start_time) for run in runs]
    ended = [_when(run.end_time) for run in runs]
    if None in running or None in ended:
        return "  (a drain run has no start or end time: no breakdown)"
    return (
        f"  drain wall time {seconds:.1f} s: {created - started:.1f} s until the runs were created "
        f"(CLI start, store check), {max(running) - created:.1f} s until all were Running, "
        f"{max(ended) - max(running):.1f} s from the last start to the last end (Dask cluster, draining, "
        f"artifacts; runs took {', '.join(f'{e - r:.1f}' for r, e in zip(running, ended, strict=True))} s), "
        f"{started + seconds - max(ended):.1f} s until the CLI saw it (it polls every second)"
    )


def drain_run(args: argparse.Namespace, env: dict[str, str]) -> dict:
    collection = f"bench-{uuid.uuid4().hex[:8]}"
    ids = Path(tempfile.mkdtemp()) / "ids.txt"
    ids.write_text("".join(f"t{i}\n" for i in range(args.tasks)))
    added = _cli("tasks", "add", collection, "--ids", str(ids), "--command", "true", "--json", env=env)
    if added.returncode:
        raise SystemExit(f"tasks add failed: {added.stderr}")
    try:
        wall, started = time.time(), time.perf_counter()
        result = _cli(
            "tasks",
            "drain",
            collection,
            "--workers",
            str(args.drains),
            "--concurrency",
            str(args.concurrency),
            "--batch",
            str(args.batch),
            "--wait",
            "--json",
            env=env,
        )
        seconds = time.perf_counter() - started
        if result.returncode not in (0, 1):
            raise SystemExit(f"tasks drain failed ({result.returncode}): {result.stderr}")
        document = json.loads(result.stdout)
        status = document["status"]
        return {
            "name": f"{args.drains} drains x {args.concurrency} slots ({args.backend})",
            "tasks": status["done"] + status["failed"],
            "seconds": seconds,
            "note": f"measured, {status['done']} done, {status['failed']} failed, {document['reason']}",
            "detail": drain_breakdown([run["id"] for run in document["flow_runs"]], wall, seconds),
        }
    finally:
        _cli("tasks", "delete", collection, env=env)


MAPPED = """
import subprocess, sys, time
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

@task
def noop(i):
    return subprocess.run(["bash", "-c", "true"]).returncode

@flow(task_runner=ThreadPoolTaskRunner(max_workers=int(sys.argv[2])))
def mapped(n):
    return sum(f.result() for f in noop.map(range(n)))

started = time.perf_counter()
assert mapped(int(sys.argv[1])) == 0
print(time.perf_counter() - started)
"""


def mapped_run(args: argparse.Namespace, env: dict[str, str]) -> dict:
    n = min(args.tasks, args.mapped_sample)
    result = subprocess.run(
        [sys.executable, "-c", MAPPED, str(n), str(args.concurrency)],
        capture_output=True,
        text=True,
        env=env,
        timeout=7200,
        cwd=ROOT,
    )
    if result.returncode:
        raise SystemExit(f"mapped flow failed: {result.stderr[-2000:]}")
    seconds = float(result.stdout.strip().splitlines()[-1])
    sampled = n < args.tasks
    return {
        "name": f"Prefect-mapped task runs ({args.concurrency} threads)",
        "tasks": n,
        "seconds": seconds * args.tasks / n,
        "note": f"sample of {n}, extrapolated to {args.tasks}" if sampled else "measured",
    }


def _create_runs(deployment_id: str, count: int) -> list[str]:
    """``count`` runs of the deployment created at once (bulk API calls of 100), one per task id."""
    import httpx

    ids: list[str] = []
    from interlinked.bridge.prefect_api import auth_headers_from_env

    with httpx.Client(
        base_url=os.environ["PREFECT_API_URL"], headers=auth_headers_from_env(), timeout=120
    ) as http:
        while len(ids) < count:
            body = [
                {"parameters": {"task_id": f"t{i}", "command": "true"}}
                for i in range(len(ids), min(count, len(ids) + 100))
            ]
            reply = http.post(f"/deployments/{deployment_id}/create_flow_run/bulk", json=body)
            reply.raise_for_status()
            ids += [r["flow_run_id"] for r in reply.json()["results"] if r.get("status") == "CREATED"]
    return ids


def runs_run(args: argparse.Namespace) -> dict:
    """One flow run per task on the warm pool: a sample created at once, until every run is final."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _pools import deploy
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    from interlinked.settings import get_settings

    pool = get_settings().work_pool
    with contextlib.redirect_stdout(sys.stderr):  # Prefect's deployment table: not part of ours
        name = deploy("bench/stock_flow.py:shell_task", name="bench-per-task", pool=pool)
    n = min(args.tasks, args.runs_sample)
    final = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        started = time.perf_counter()
        ids = _create_runs(str(deployment.id), n)
        deadline = started + 3600
        while time.perf_counter() < deadline:
            ended = client.count_flow_runs(
                flow_run_filter=FlowRunFilter(id={"any_": ids}, state={"type": {"any_": final}})
            )
            if ended >= n:
                break
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        completed = client.count_flow_runs(
            flow_run_filter=FlowRunFilter(id={"any_": ids}, state={"type": {"any_": ["COMPLETED"]}})
        )
    if completed < n:
        raise SystemExit(f"only {completed} of {n} per-task flow runs completed")
    return {
        "name": f"a flow run per task (warm pool `{pool}`)",
        "tasks": n,
        "seconds": seconds * args.tasks / n,
        "note": f"sample of {n}, extrapolated to {args.tasks}" if n < args.tasks else "measured",
    }


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min, {os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--drains", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--mapped-sample", type=int, default=1000)
    parser.add_argument("--runs-sample", type=int, default=200)
    parser.add_argument("--backend", default="postgres", choices=("postgres", "dynamodb"))
    parser.add_argument("--skip-mapped", action="store_true")
    parser.add_argument("--skip-runs", action="store_true", help="no flow-run-per-task row")
    args = parser.parse_args()
    env = {**stack_environment(), "INTERLINKED_TASKS_BACKEND": args.backend}
    os.environ.update(env)
    load_before = _load()

    rows = [drain_run(args, env)]
    if not args.skip_mapped:
        rows.append(mapped_run(args, env))
    if not args.skip_runs:
        rows.append(runs_run(args))
    print(f"\n{args.tasks} no-op shell tasks (`true`), this machine ({os.cpu_count()} cores)")
    header = f"{'path':<46}{'seconds':>10}{'tasks/s':>10}  note"
    print(header)
    print("-" * len(header))
    for row in rows:
        rate = args.tasks / row["seconds"] if row["seconds"] else float("nan")
        print(f"{row['name']:<46}{row['seconds']:>10.1f}{rate:>10.1f}  {row['note']}")
    for row in rows[1:]:
        print(f"drain speed-up over {row['name']}: {row['seconds'] / rows[0]['seconds']:.1f}x")
    print(rows[0]["detail"])
    print(f"\nload average before: {load_before}; at the end: {_load()}")


if __name__ == "__main__":
    main()
