"""Task collections demo (issue 11, item 6): a two-step workflow over synthetic samples.

    .venv/bin/interlinked up                       # the local stack
    .venv/bin/python examples/collections_demo.py  # 500 samples, 3 drains on step A, 1 on step B
    .venv/bin/python examples/collections_demo.py --samples 100 --json

What it does, against the task store the settings name (the stack's PostgreSQL by default):

1. adds step A (``{prefix}-align``: one task per sample) and step B (``{prefix}-call``: one task per
   sample, ``depends_on`` the same sample's step-A task) — B's tasks become claimable on their own
   as A's finish;
2. makes a few tasks fail on purpose (every ``--fail-every``-th sample fails in A, so its B task
   shows ``blocked``; a few others fail in B);
3. starts drains as Prefect flow runs of their own (``python -m flows.collections.drain``): one
   "victim" on A first, then the others on A and B;
4. once the victim holds leases and A is under way, sends it SIGTERM (a Spot reclaim): it gives its
   tasks back to ``todo`` at once and exits; the other drains pick them up (the leases are long —
   300 s — so the demo could not finish in time if they were not given back);
5. waits for every drain to end and prints the status table (and, for the failed samples, where
   each is across the two steps).

Tasks are tiny (``sleep 0.05``), so the demo takes well under a minute on a laptop. Exit code 0
when the final counts are the expected ones, 1 otherwise.
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def fails_in_a(index: int, every: int) -> bool:
    return every > 0 and index % every == every // 2


def fails_in_b(index: int, every: int) -> bool:
    return every > 0 and index % every == 0 and not fails_in_a(index, every)


def build_tasks(samples: int, fail_every: int, step_a: str) -> tuple[list, list]:
    """``(step A specs, step B specs)``: ``S0000 …``, each with ``attributes.sample``."""
    from flows.collections.model import TaskSpec

    a_tasks, b_tasks = [], []
    for index in range(samples):
        sample = f"S{index:04d}"
        align = "sleep 0.05; echo aligned $TASK_ID"
        if fails_in_a(index, fail_every):
            align = 'echo "truncated FASTQ for $TASK_ID" >&2; exit 3'
        call = "echo called $TASK_ID"
        if fails_in_b(index, fail_every):
            call = 'echo "no variants: coverage too low" >&2; exit 4'
        attributes = {"sample": sample}
        a_tasks.append(TaskSpec(id=sample, command=align, attributes=attributes))
        b_tasks.append(
            TaskSpec(id=sample, command=call, depends_on=(f"{step_a}/{sample}",), attributes=attributes)
        )
    return a_tasks, b_tasks


def expected_counts(samples: int, fail_every: int) -> dict[str, dict[str, int]]:
    failed_a = sum(fails_in_a(i, fail_every) for i in range(samples))
    failed_b = sum(fails_in_b(i, fail_every) for i in range(samples))
    return {
        "A": {"done": samples - failed_a, "failed": failed_a, "blocked": 0, "todo": 0, "locked": 0},
        "B": {
            "done": samples - failed_a - failed_b,
            "failed": failed_b,
            "blocked": failed_a,
            "todo": 0,
            "locked": 0,
        },
    }


def start_drain(collection: str, concurrency: int, lease_seconds: float, log_dir: Path) -> subprocess.Popen:
    """One drain: a flow run of its own (``python -m flows.collections.drain``)."""
    log = open(log_dir / f"drain-{collection}-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.collections.drain",
            collection,
            "--concurrency",
            str(concurrency),
            "--lease-seconds",
            str(lease_seconds),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=os.environ.copy(),
    )


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500, help="synthetic samples (tasks per step)")
    parser.add_argument("--fail-every", type=int, default=97, help="one sample in this many fails")
    parser.add_argument("--drains", type=int, default=3, help="drains on step A (one is SIGTERMed)")
    parser.add_argument("--concurrency", type=int, default=4, help="Dask slots per drain")
    parser.add_argument("--prefix", help="collection name prefix (default: demo-<random>)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the drains")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    if args.samples < 10 or args.drains < 2:
        parser.error("--samples must be at least 10 and --drains at least 2")

    from interlinked.commands.common import use_stack_defaults

    use_stack_defaults()  # before Prefect is imported (the drains inherit the environment)
    from flows.collections.backends import open_store
    from flows.collections.client import collection_status, sample_table
    from interlinked.commands.tasks import _status_lines
    from interlinked.settings import get_settings

    settings = get_settings()
    os.environ.setdefault("INTERLINKED_TASKS_BACKEND", settings.tasks_backend)
    if settings.tasks_table:
        os.environ.setdefault("INTERLINKED_TASKS_TABLE", settings.tasks_table)
    if settings.tasks_schema:
        os.environ.setdefault("INTERLINKED_TASKS_SCHEMA", settings.tasks_schema)
    prefix = args.prefix or f"demo-{uuid.uuid4().hex[:6]}"
    step_a, step_b = f"{prefix}-align", f"{prefix}-call"
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    log_dir = Path(settings.state_dir) / "logs" / "collections-demo"
    log_dir.mkdir(parents=True, exist_ok=True)

    store = open_store(settings.tasks_backend, table=settings.tasks_table, schema=settings.tasks_schema)
    started = time.monotonic()
    drains: list[subprocess.Popen] = []
    try:
        a_tasks, b_tasks = build_tasks(args.samples, args.fail_every, step_a)
        store.ensure()
        store.add(step_a, a_tasks)
        store.add(step_b, b_tasks)
        say(f"added {len(a_tasks)} tasks to {step_a} and {len(b_tasks)} to {step_b} (B depends on A)")

        def counts(collection: str) -> dict:
            return store.status(collection, failures=0)[collection].as_dict()

        lease = 300.0
        victim = start_drain(step_a, args.concurrency, lease, log_dir)
        drains.append(victim)
        say(f"drain 1 on {step_a} (pid {victim.pid}) starting; it will be stopped with SIGTERM")
        wait_until(
            lambda: counts(step_a)["locked"] > 0 or victim.poll() is not None, args.timeout, "a first lease"
        )
        for _ in range(args.drains - 1):
            drains.append(start_drain(step_a, args.concurrency, lease, log_dir))
        drains.append(start_drain(step_b, args.concurrency, lease, log_dir))
        say(f"{args.drains - 1} more drain(s) on {step_a}, 1 on {step_b}")
        # Stop the victim mid-drain, while it holds leases (a Spot reclaim).
        wait_until(
            lambda: (
                victim.poll() is not None
                or counts(step_a)["done"] >= args.samples // 10
                or counts(step_a)["todo"] == 0
            ),
            args.timeout,
            "step A under way",
        )
        held = counts(step_a)["locked"]
        stopped_mid_drain = victim.poll() is None
        if stopped_mid_drain:
            victim.send_signal(signal.SIGTERM)
            say(f"SIGTERM to drain 1 (pid {victim.pid}) with {held} task(s) of {step_a} locked")
            victim.wait(timeout=60)
            after = counts(step_a)
            say(
                f"drain 1 exited ({victim.returncode}); {step_a} now: {after['todo']} todo, {after['locked']} locked"
            )
        for drain in drains:
            drain.wait(timeout=max(1.0, args.timeout - (time.monotonic() - started)))
        seconds = time.monotonic() - started

        document = collection_status(store, None, failures=3)
        mine = {name: status for name, status in document["collections"].items() if name in (step_a, step_b)}
        expected = expected_counts(args.samples, args.fail_every)
        got = {
            key: {state: mine[name][state] for state in expected[key]}
            for key, name in (("A", step_a), ("B", step_b))
        }
        ok = got == expected and stopped_mid_drain
        failed_samples = sorted(
            {f["id"] for f in mine[step_a]["failures"]} | {f["id"] for f in mine[step_b]["failures"]}
        )
        samples = sample_table(store, [step_a, step_b])["samples"]
        outcome = {
            "collections": {"A": step_a, "B": step_b},
            "samples": args.samples,
            "counts": got,
            "expected": expected,
            "stopped_mid_drain": stopped_mid_drain,
            "victim_exit_code": victim.returncode,
            "seconds": round(seconds, 1),
            "ok": ok,
        }
        if args.json:
            print(json.dumps(outcome, indent=2))
        else:
            print()
            print("\n".join(_status_lines(mine)))
            print()
            print("where the failed samples are (sample: step A, step B):")
            for sample in failed_samples:
                row = samples.get(sample, {})
                print(f"  {sample}: {row.get(step_a, '-')}, {row.get(step_b, '-')}")
            print(
                f"\n{'OK' if ok else 'UNEXPECTED'}: {args.samples} samples through two steps in "
                f"{seconds:.0f} s; drain logs in {log_dir}"
            )
        return 0 if ok else 1
    finally:
        for drain in drains:
            if drain.poll() is None:
                drain.send_signal(signal.SIGTERM)
                try:
                    drain.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    drain.kill()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
