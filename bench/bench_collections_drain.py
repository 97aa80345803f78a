"""Draining a task collection next to the same work as Prefect-mapped task runs.

    .venv/bin/python bench/bench_collections_drain.py [--tasks 10000] [--drains 2] [--concurrency 8]
        [--mapped-sample 1000] [--backend postgres]

Against the running local stack (`interlinked up`; its environment from `interlinked env`):

1. ``--tasks`` no-op shell tasks (``true``) are added to a fresh collection and drained by
   ``--drains`` runs of ``drain-collection/local`` (`interlinked tasks drain --workers N --wait`):
   wall time from the command's start (flow runs created, picked up by the warm pool, Dask
   clusters started) to the collection drained, and tasks/s;
2. the same no-op command as Prefect task runs mapped in one flow (``.map`` on a thread pool of
   ``--concurrency`` slots), on ``--mapped-sample`` items, extrapolated linearly to ``--tasks``
   (said so in the table when sampled).

The collection is deleted afterwards. The target of issue 11 is < 30 s for 10,000 tasks by 2
drains on PostgreSQL, and ≥ 5x the mapped path.
"""

from __future__ import annotations

import argparse
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


def drain_run(args: argparse.Namespace, env: dict[str, str]) -> dict:
    collection = f"bench-{uuid.uuid4().hex[:8]}"
    ids = Path(tempfile.mkdtemp()) / "ids.txt"
    ids.write_text("".join(f"t{i}\n" for i in range(args.tasks)))
    added = _cli("tasks", "add", collection, "--ids", str(ids), "--command", "true", "--json", env=env)
    if added.returncode:
        raise SystemExit(f"tasks add failed: {added.stderr}")
    try:
        started = time.perf_counter()
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
            "note": document["reason"],
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--drains", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--mapped-sample", type=int, default=1000)
    parser.add_argument("--backend", default="postgres", choices=("postgres", "dynamodb"))
    parser.add_argument("--skip-mapped", action="store_true")
    args = parser.parse_args()
    env = {**stack_environment(), "INTERLINKED_TASKS_BACKEND": args.backend}

    rows = [drain_run(args, env)]
    if not args.skip_mapped:
        rows.append(mapped_run(args, env))
    print(f"\n{args.tasks} no-op shell tasks (`true`), this machine ({os.cpu_count()} cores)")
    header = f"{'path':<46}{'seconds':>10}{'tasks/s':>10}  note"
    print(header)
    print("-" * len(header))
    for row in rows:
        rate = args.tasks / row["seconds"] if row["seconds"] else float("nan")
        print(f"{row['name']:<46}{row['seconds']:>10.2f}{rate:>10.1f}  {row['note']}")
    if len(rows) == 2:
        print(f"drain speed-up over mapped task runs: {rows[1]['seconds'] / rows[0]['seconds']:.1f}x")


if __name__ == "__main__":
    main()
