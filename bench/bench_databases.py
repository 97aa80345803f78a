"""The local stack on SQLite and on PostgreSQL, side by side in one run.

    .venv/bin/python bench/bench_databases.py [--databases sqlite,postgres] [--runs 50] [--stock-runs 10]
        [--burst 500] [--stock-burst 100] [--events 2000]

For each database, a stack of its own (a new state directory, free ports, nothing shared with a
developer's stack) is measured:

- `interlinked up` from cold (empty state: database created, migrations, resources, deployments)
  and from warm (`down`, then `up` again with everything in place), in seconds;
- `bench_pool_start.py`: start latency of the warm pool next to the stock process worker (default
  and 1 s polling), and a burst of runs created at once;
- `bench_bridge_throughput.py`: events with duplicates and poison through the event bridge.

Each sub-benchmark runs as its own process against that stack and prints its own tables (kept in
the log); this script prints the side-by-side summary at the end. The stack is wiped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERLINKED = str(Path(sys.executable).with_name("interlinked"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_environment(database: str, root: Path) -> dict[str, str]:
    """Environment of a private stack on ``database`` under ``root`` (free ports)."""
    prefect, aws, postgres, script_api = _free_port(), _free_port(), _free_port(), _free_port()
    return {
        **os.environ,
        "INTERLINKED_STATE_DIR": str(root / "state"),
        "INTERLINKED_PREFECT_DATABASE": database,
        "INTERLINKED_PREFECT_PORT": str(prefect),
        "INTERLINKED_AWS_PORT": str(aws),
        "INTERLINKED_POSTGRES_PORT": str(postgres),
        "INTERLINKED_SCRIPT_API_PORT": str(script_api),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect}/api",
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{aws}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


def _run(command: list[str], env: dict[str, str], log) -> float:
    """Run ``command`` to the end (output to ``log``); its wall time in seconds."""
    log.write(f"\n$ {' '.join(command)}\n".encode())
    log.flush()
    started = time.monotonic()
    result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); see {log.name}")
    return seconds


def _attempt(results: dict, name: str, command: list[str], env: dict[str, str], log) -> None:
    """Run one sub-benchmark that writes ``--json-out``; keep its results, or why it failed."""
    try:
        _run(command, env, log)
    except SystemExit as failure:
        results.setdefault("failed", []).append(f"{name}: {failure}")
        print(f"  failed: {failure}", file=sys.stderr)
        return
    out = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--json-out="))
    results[name] = json.loads(Path(out).read_text())


def measure(database: str, args: argparse.Namespace, workdir: Path) -> dict:
    root = workdir / database
    root.mkdir(parents=True)
    env = stack_environment(database, root)
    results: dict = {}
    with (root / "bench.log").open("ab") as log:
        print(f"[{database}] up (cold) …", file=sys.stderr)
        results["up_cold"] = _run([INTERLINKED, "up"], env, log)
        _run([INTERLINKED, "down"], env, log)
        print(f"[{database}] up (warm) …", file=sys.stderr)
        results["up_warm"] = _run([INTERLINKED, "up"], env, log)
        try:
            # A sub-benchmark that fails (e.g. a server that cannot take the burst) is reported as
            # such; the others still run, on this database and on the next.
            print(f"[{database}] pool start latency and burst …", file=sys.stderr)
            _attempt(
                results,
                "pool",
                [
                    sys.executable,
                    str(ROOT / "bench" / "bench_pool_start.py"),
                    f"--runs={args.runs}",
                    f"--stock-runs={args.stock_runs}",
                    f"--burst={args.burst}",
                    f"--stock-burst={args.stock_burst}",
                    f"--json-out={root / 'pool.json'}",
                ],
                env,
                log,
            )
            print(f"[{database}] bridge throughput …", file=sys.stderr)
            _attempt(
                results,
                "bridge",
                [
                    sys.executable,
                    str(ROOT / "bench" / "bench_bridge_throughput.py"),
                    f"--events={args.events}",
                    f"--json-out={root / 'bridge.json'}",
                ],
                env,
                log,
            )
            locked = sum(
                path.read_text(errors="replace").count("database is locked")
                for path in (root / "state" / "logs").glob("*.log")
            )
            results["database_is_locked"] = locked
        finally:
            _run([INTERLINKED, "down", "--wipe"], env, log)
    print(f"[{database}] done; its log: {root / 'bench.log'}", file=sys.stderr)
    return results


def print_summary(results: dict[str, dict]) -> None:
    names = list(results)
    width = 12

    def row(label: str, values: list[str]) -> None:
        print(f"{label:<56}" + "".join(f"{value:>{width}}" for value in values))

    print("\nThe local stack, side by side (one run, this machine)")
    row("", names)
    print("-" * (56 + width * len(names)))
    row("`interlinked up` from cold (s)", [f"{results[n]['up_cold']:.1f}" for n in names])
    row("`interlinked up` from warm (s)", [f"{results[n]['up_warm']:.1f}" for n in names])
    labels = {
        "warm": "warm pool",
        "stock-1s": "stock worker, 1 s polling",
        "stock": "stock worker, default polling",
    }
    for variant, label in labels.items():
        for key in ("p50", "p95"):
            values = []
            for name in names:
                stats = results[name].get("pool", {}).get("latency", {}).get(variant)
                values.append(f"{stats[key]:.2f}" if stats else "-")
            count = next(
                (
                    results[n]["pool"]["latency"][variant]["n"]
                    for n in names
                    if variant in results[n].get("pool", {}).get("latency", {})
                ),
                0,
            )
            row(f"start latency {key} (s), {label}, n={count}", values)
    for variant, label in (("warm", "warm pool"), ("stock-1s", "stock worker, 1 s polling")):
        values = []
        for name in names:
            burst = results[name].get("pool", {}).get("burst", {}).get(variant)
            failed = results[name].get("pool", {}).get("burst_failed", {}).get(variant)
            values.append(f"{burst['per_minute']:.0f}" if burst else ("failed" if failed else "-"))
        runs = next(
            (
                results[n]["pool"]["burst"][variant]["runs"]
                for n in names
                if variant in results[n].get("pool", {}).get("burst", {})
            ),
            0,
        )
        row(f"burst of {runs} runs, {label} (runs/min)", values)
        row(
            f"  completed of {runs}",
            [
                str(results[n].get("pool", {}).get("burst", {}).get(variant, {}).get("completed", "-"))
                for n in names
            ],
        )
    bridge = {n: results[n].get("bridge", {}) for n in names}
    events = next((b["events"] for b in bridge.values() if b), 0)
    row(
        f"bridge: {events} events, valid events/s",
        [f"{bridge[n].get('valid_per_second', 0):.0f}" for n in names],
    )
    row(
        "bridge: runs created / unique valid events",
        [f"{bridge[n].get('runs')}/{bridge[n].get('unique')}" for n in names],
    )
    row(
        "bridge: dead letters (with reason) / poison",
        [
            f"{bridge[n].get('dead_letters')}({bridge[n].get('dead_letters_with_reason')})/{bridge[n].get('poison')}"
            for n in names
        ],
    )
    row(
        "bridge: stock run_deployment per delivery, events/s",
        [f"{bridge[n].get('stock_events_per_second', 0):.0f}" for n in names],
    )
    row(
        '"database is locked" lines in the stack\'s logs',
        [str(results[n].get("database_is_locked", "-")) for n in names],
    )
    for name in names:
        for failure in results[name].get("failed", []):
            print(f"{name}: failed: {failure}")
        for variant, failure in results[name].get("pool", {}).get("burst_failed", {}).items():
            print(f"{name}: burst on {labels[variant]} failed: {failure}")
    load = os.getloadavg()
    print(
        f"\nload average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} ({os.cpu_count()} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--stock-runs", type=int, default=10)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--stock-burst", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-databases-"))
    load = os.getloadavg()
    print(
        f"load average at the start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} ({os.cpu_count()} cores)"
    )
    results = {database: measure(database, args, workdir) for database in args.databases.split(",")}
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print_summary(results)
    print(f"raw results: {workdir / 'results.json'}")


if __name__ == "__main__":
    main()
