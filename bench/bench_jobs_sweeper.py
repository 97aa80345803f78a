"""One sweep of the stuck-job sweeper at scale: time per sweep and its load on the Prefect server,
next to the naive sweep (every live job's document and its flow run read one by one), in one run.

    .venv/bin/python bench/bench_jobs_sweeper.py [--jobs 10000] [--running 1000] [--sweeps 10]

The stack is the one the environment names (INTERLINKED_*; `up` is called). The jobs live in a
database of their own (`interlinked_bench_sweeper`, dropped at the end) so the stack's own scheduled
sweeper never sees them: ``--jobs`` jobs, of which ``--running`` are EXECUTING with a recent
progress report, a flow run in Running on the Prefect server (tagged ``interlinked-bench``, deleted
at the end) and a live local process as their infrastructure (a few sleeping processes shared
round-robin); the rest have ended. Every sweep must find them all healthy and touch nothing.

Printed: seconds per sweep (p50/p95/max), Prefect API calls, database queries and /proc looks per
sweep — for the sweeper and for the naive way. The issue's target: ≤ 1 s per sweep at 10,000 jobs
with 1,000 running.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import print_table, summarise  # noqa: E402

from interlinked.local import up  # noqa: E402
from interlinked.settings import get_settings  # noqa: E402

BENCH_DATABASE = "interlinked_bench_sweeper"
BENCH_TAG = "interlinked-bench"


def _bench_dsn() -> str:
    """A fresh database next to the stack's own (the same cluster)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from blocks.postgres import database

    base = database().dsn()
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    return make_conninfo(**{**conninfo_to_dict(base), "dbname": BENCH_DATABASE})


def _drop(dsn_of_stack: str) -> None:
    import psycopg

    with psycopg.connect(dsn_of_stack, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")


def _flow_runs(count: int) -> list[str]:
    """``count`` flow runs in Running (of a flow no pool runs), ids."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="bench-sweeper-job")
    def bench_sweeper_job() -> None:
        """Never runs: its runs only stand for running jobs' runs."""

    ids = []
    with get_client(sync_client=True) as client:
        for _ in range(count):
            run = client.create_flow_run(
                bench_sweeper_job, state=Running(), tags=[BENCH_TAG, "interlinked-job"]
            )
            ids.append(str(run.id))
    return ids


def _delete_flow_runs(ids: list[str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for run_id in ids:
            with contextlib.suppress(Exception):  # already gone
                client.delete_flow_run(run_id)


def _fill(store, *, jobs: int, running: int, run_ids: list[str], pids: list[int]) -> None:
    """Insert the jobs in one COPY: ``running`` EXECUTING (fresh progress), the rest SUCCEEDED."""
    from psycopg.types.json import Jsonb

    from flows.jobs import machine
    from flows.jobs.model import now_iso

    host = socket.gethostname()
    rows = []
    for index in range(jobs):
        job = machine.new_job(
            "script", input_data={"name": f"bench {index}", "script": "x.py"}, estimations={}
        )
        job = machine.dispatch(job)
        if index < running:
            job = machine.record_flow_run(job, run_ids[index])
            job = machine.execute(
                job, flow_run_id=run_ids[index], infrastructure_id=f"process:{host}:{pids[index % len(pids)]}"
            )
            job = machine.update_execution(
                job, job.current_execution.execution_id, progress=0.5, metrics={"i": index}
            )
        else:
            job = machine.execute(job, infrastructure_id=f"process:{host}:1")
            job = machine.signal_execution(job, job.current_execution.execution_id, "SUCCESS")
        job.version = 1
        job.updated_at = now_iso()
        rows.append((job.id, job.job_type, job.state, job.version, Jsonb(job.to_json())))
    store.ensure()
    with store._connect() as connection, connection.cursor() as cursor:
        with cursor.copy("COPY jobs (id, job_type, state, version, document) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        connection.execute("ANALYZE jobs")


class _Refuse:
    """A dispatcher that must never be called: a healthy sweep creates nothing."""

    def create_run(self, job, deployment):
        raise AssertionError(f"the sweep tried to dispatch job {job.id}")

    def cancel_run(self, flow_run_id):
        raise AssertionError("the sweep tried to cancel a run")


def _sweeper_sweeps(service, sweeps: int) -> tuple[list[float], list[dict]]:
    from prefect.client.orchestration import get_client

    from flows.jobs.infrastructure import Infrastructure
    from flows.jobs.sweeper import PrefectRuns, Sweeper

    times, reports = [], []
    with get_client(sync_client=True) as client:
        for _ in range(sweeps):
            sweeper = Sweeper(service, PrefectRuns(client), Infrastructure())
            started = time.perf_counter()
            report = sweeper.sweep()
            times.append(time.perf_counter() - started)
            reports.append(report.to_json())
    return times, reports


def _naive_sweeps(service, sweeps: int) -> tuple[list[float], list[int]]:
    """The plain way: every live job's whole document, and each one's flow run read on its own."""
    from prefect.client.orchestration import get_client

    from flows.jobs.model import DISPATCHED, EXECUTING

    times, calls = [], []
    with get_client(sync_client=True) as client:
        for _ in range(sweeps):
            started = time.perf_counter()
            count = 0
            live = service.store.list(state=EXECUTING, limit=1_000_000) + service.store.list(
                state=DISPATCHED, limit=1_000_000
            )
            now = datetime.now(UTC)
            for job in live:
                if job.flow_run_id:
                    client.read_flow_run(job.flow_run_id)
                    count += 1
                current = job.current_execution
                if current is not None:
                    _ = (now - datetime.fromisoformat(current.updated_at)).total_seconds()
            times.append(time.perf_counter() - started)
            calls.append(count)
    return times, calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=1_000)
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--naive-sweeps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=8, help="sleeping processes the running jobs share")
    args = parser.parse_args()
    if not 0 <= args.running <= args.jobs:
        parser.error("--running must be between 0 and --jobs")

    settings = get_settings()
    up(settings, echo=lambda line: None)
    from blocks.postgres import database
    from flows.jobs.client import JobService
    from flows.jobs.postgres import PostgresJobStore

    stack_dsn = database().dsn()
    dsn = _bench_dsn()
    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.processes)]
    run_ids: list[str] = []
    try:
        started = time.perf_counter()
        run_ids = _flow_runs(args.running)
        store = PostgresJobStore.from_dsn(dsn)
        _fill(store, jobs=args.jobs, running=args.running, run_ids=run_ids, pids=[p.pid for p in sleepers])
        print(f"setup: {args.jobs} jobs ({args.running} running) in {time.perf_counter() - started:.1f} s")
        service = JobService(store, dispatcher=_Refuse())

        times, reports = _sweeper_sweeps(service, args.sweeps)
        naive_times, naive_calls = _naive_sweeps(service, args.naive_sweeps)
        for report in reports:
            assert report["actions"] == [], report["actions"]
            assert report["verdicts"] == {"HEALTHY": args.running}, report["verdicts"]

        print_table(
            f"seconds per sweep, {args.jobs} jobs with {args.running} running (all healthy)",
            {
                "sweeper (one query, batched reads)": summarise(times),
                "naive (a read per run)": summarise(naive_times),
            },
        )
        last = reports[-1]
        print(
            f"\nper sweep — sweeper: {last['databaseQueries']} database query, {last['prefectCalls']} Prefect "
            f"API calls, {last['lookedAt']} /proc looks, {last['awsCalls']} AWS calls; "
            f"naive: 2 database queries, {naive_calls[-1]} Prefect API calls"
        )
        target = max(times) <= 1.0
        print(f"target ≤ 1 s per sweep: {'met' if target else 'NOT met'} (max {max(times):.3f} s)")
        return 0
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        _delete_flow_runs(run_ids)
        _drop(stack_dsn)


if __name__ == "__main__":
    raise SystemExit(main())
