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
with 1,000 running. The Prefect API calls are counted twice: by the sweeper's own report and by an
httpx event hook on the Prefect client (every HTTP request it sends).

Then, in the same database emptied (``--hung``/``--healthy``, 0 to skip), the sweeper runs every
``--interval`` seconds (a thread, as the scheduled deployment would) over ``--healthy`` healthy long
runs and ``--hung`` runs that hang: each is EXECUTING with a Running flow run and a live process of
its own, and reports progress through the SDK (``JobService.update_execution``, PostgreSQL) every
``--report-every`` seconds; a hung one stops reporting at a random moment (its process lives on) and
must be found HUNG, stopped and failed ``STUCK``. Their window is short (``--window``, the job's
``estimations.heartbeatTimeoutSeconds``) to keep the run short: the production defaults (600 s
window, 30 s sweeps) scale the same way. Printed: detection latency of each hung run (from its last
progress report to the sweep that failed it; expected window ≤ latency ≤ window + interval + one
sweep) and false positives among the healthy runs over the whole phase (target 0).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import subprocess
import sys
import threading
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
        requests = count_requests(client)
        for _ in range(sweeps):
            sweeper = Sweeper(service, PrefectRuns(client), Infrastructure())
            before = len(requests)
            started = time.perf_counter()
            report = sweeper.sweep()
            times.append(time.perf_counter() - started)
            reports.append({**report.to_json(), "httpRequests": len(requests) - before})
    return times, reports


def count_requests(client) -> list[str]:
    """Every HTTP request the Prefect client sends from now on (``METHOD path``), by an httpx hook."""
    sent: list[str] = []
    client._client.event_hooks["request"].append(
        lambda request: sent.append(f"{request.method} {request.url.path}")
    )
    return sent


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


class _Running:
    """A job executing under the bench: its process, and when it stops reporting (None: never)."""

    def __init__(
        self, job_id: str, execution_id: str, process: subprocess.Popen | None, stop_at: float | None
    ):
        self.job_id = job_id
        self.execution_id = execution_id
        self.process = process
        self.stop_at = stop_at
        self.last_report: str | None = None  # the execution's updatedAt after its last report
        self.reports = 0


def _start_jobs(service, run_ids: list[str], *, healthy: int, hung: int, window: float, shared: list[int]):
    """``healthy + hung`` EXECUTING jobs (window ``window``, one attempt) with their flow runs; each
    hung one gets a process of its own (the sweeper stops it)."""
    from flows.jobs import machine

    host = socket.gethostname()
    started = []
    for index in range(healthy + hung):
        is_hung = index >= healthy
        job = service.create(
            "script",
            {"name": f"{'hung' if is_hung else 'healthy'} {index}", "script": "x.py"},
            estimations={"heartbeatTimeoutSeconds": window, "maxAttempts": 1},
        )
        service._change(job.id, machine.dispatch)
        service._change(job.id, lambda j, run=run_ids[index]: machine.record_flow_run(j, run))
        process = subprocess.Popen(["sleep", "3600"], start_new_session=True) if is_hung else None
        pid = process.pid if process else shared[index % len(shared)]
        job = service.signal(
            job.id, "EXECUTE", flow_run_id=run_ids[index], infrastructure_id=f"process:{host}:{pid}"
        )
        running = _Running(job.id, job.current_execution.execution_id, process, None)
        running.last_report = job.current_execution.updated_at
        started.append(running)
    return started[:healthy], started[healthy:]


def _report(service, jobs: list[_Running], every: float, stop: threading.Event, lock: threading.Lock) -> None:
    """Report progress of ``jobs`` every ``every`` seconds (as the work itself would, through the SDK)
    until ``stop``; a job past its ``stop_at`` reports no more (it hangs)."""
    tick = 0
    while not stop.is_set():
        started = time.monotonic()
        tick += 1
        for running in jobs:
            if stop.is_set():
                return
            if running.stop_at is not None and time.monotonic() >= running.stop_at:
                continue
            job = service.update_execution(
                running.job_id, running.execution_id, progress=min(0.99, tick / 1000), metrics={"tick": tick}
            )
            with lock:
                running.last_report = job.current_execution.updated_at
                running.reports += 1
        stop.wait(max(0.0, every - (time.monotonic() - started)))


def _sweep_every(service, interval: float, stop: threading.Event, out: dict) -> None:
    """The sweeper every ``interval`` seconds (start to start), as its scheduled deployment runs it."""
    from prefect.client.orchestration import get_client

    from flows.jobs.infrastructure import Infrastructure
    from flows.jobs.sweeper import PrefectRuns, Sweeper, SweepSettings

    settings = SweepSettings(stop_grace=2.0)
    with get_client(sync_client=True) as client:
        requests = count_requests(client)
        while not stop.is_set():
            started = time.monotonic()
            before = len(requests)
            report = Sweeper(service, PrefectRuns(client), Infrastructure(stop_grace=2.0), settings).sweep()
            out["sweeps"].append({**report.to_json(), "httpRequests": len(requests) - before})
            for action in report.actions:
                out["actions"].append(action)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))


def _detection(args, dsn: str) -> None:
    """Hung runs found within window + interval; healthy long runs never touched."""
    from psycopg_pool import ConnectionPool

    from flows.jobs.client import JobService
    from flows.jobs.model import EXECUTING, FAILED
    from flows.jobs.postgres import PostgresJobStore

    rng = random.Random(16)
    shared = [subprocess.Popen(["sleep", "3600"]) for _ in range(4)]
    run_ids = _flow_runs(args.healthy + args.hung)
    pool = ConnectionPool(dsn, min_size=2, max_size=12, open=True)
    hung: list[_Running] = []
    try:
        store = PostgresJobStore(pool.connection)
        with store._connect() as connection:
            connection.execute("TRUNCATE jobs")
        service = JobService(store, dispatcher=_Refuse())
        healthy, hung = _start_jobs(
            service,
            run_ids,
            healthy=args.healthy,
            hung=args.hung,
            window=args.window,
            shared=[p.pid for p in shared],
        )
        stop, lock = threading.Event(), threading.Lock()
        phase_start = time.monotonic()
        for (
            running
        ) in hung:  # each hangs at a random moment, so its silence starts anywhere between two sweeps
            running.stop_at = phase_start + rng.uniform(args.report_every, args.hang_within)
        out: dict = {"sweeps": [], "actions": []}
        reporters = [
            threading.Thread(target=_report, args=(service, part, args.report_every, stop, lock), daemon=True)
            for part in (
                healthy[i :: args.reporters] + hung[i :: args.reporters] for i in range(args.reporters)
            )
        ]
        for thread in reporters:
            thread.start()
        sweeper = threading.Thread(target=_sweep_every, args=(service, args.interval, stop, out), daemon=True)
        sweeper.start()
        hung_ids = {r.job_id for r in hung}
        deadline = phase_start + max(
            args.healthy_seconds, args.hang_within + args.window + 10 * args.interval
        )
        while time.monotonic() < deadline:
            time.sleep(0.5)
            found = {a.get("jobId") for a in list(out["actions"])} & hung_ids
            if len(found) == len(hung_ids) and time.monotonic() - phase_start >= args.healthy_seconds:
                break
        stop.set()
        sweeper.join()
        for thread in reporters:
            thread.join()
        seconds = time.monotonic() - phase_start

        latencies, missed, wrong = [], [], []
        for running in hung:
            job = store.get(running.job_id)
            if job.state != FAILED or job.sweep.get("verdict") != "HUNG":
                missed.append(f"{running.job_id}: {job.state} {job.sweep}")
                continue
            if job.current_execution.failure_code != "STUCK" or running.process.poll() is None:
                wrong.append(
                    f"{running.job_id}: {job.current_execution.failure_code}, process {running.process.poll()}"
                )
            silent_from = datetime.fromisoformat(running.last_report)
            latencies.append((datetime.fromisoformat(job.sweep["at"]) - silent_from).total_seconds())
        flagged = [
            f"{running.job_id}: {job.state} {job.sweep}"
            for running in healthy
            if (job := store.get(running.job_id)).state != EXECUTING or job.sweep
        ]
        acted_on_healthy = [a for a in out["actions"] if a.get("jobId") in {r.job_id for r in healthy}]
        sweeps = out["sweeps"]
        reports = sum(r.reports for r in healthy)

        print(
            f"\nhung-run detection: {args.hung} runs that stop reporting (process alive), window {args.window:g} s, "
            f"sweep every {args.interval:g} s, progress every {args.report_every:g} s"
        )
        if latencies:
            print_table(
                "seconds from a hung run's last progress report to the sweep that failed it STUCK",
                {"detection latency": summarise(latencies)},
            )
        print(
            f"expected: window {args.window:g} s ≤ latency ≤ window + interval {args.window + args.interval:g} s "
            f"(+ one sweep's time); detected {len(latencies)} of {args.hung}, missed {len(missed)}, "
            f"outside [window, window + interval + 1 s]: "
            f"{sum(1 for x in latencies if not args.window <= x <= args.window + args.interval + 1.0)}"
        )
        for line in missed + wrong:
            print(f"  problem: {line}")
        sweep_times = [r["seconds"] for r in sweeps]
        print(
            f"\nfalse positives: {len(flagged)} of {args.healthy} healthy runs flagged "
            f"({len(acted_on_healthy)} sweeper actions on them) over {len(sweeps)} sweeps in {seconds:.0f} s "
            f"({reports} progress reports); target 0"
        )
        print_table(
            f"seconds per sweep during the phase ({args.healthy + args.hung} live jobs at the start)",
            {"sweeper": summarise(sweep_times)},
        )
        print(
            f"Prefect API requests per sweep (httpx hook): p50 {sorted(r['httpRequests'] for r in sweeps)[len(sweeps) // 2]}, "
            f"max {max(r['httpRequests'] for r in sweeps)} (a hung run costs one more: its run set Crashed)"
        )
    finally:
        for running in hung:
            if running.process is not None:
                running.process.kill()
                running.process.wait()
        for process in shared:
            process.kill()
        pool.close()
        _delete_flow_runs(run_ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=1_000)
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--naive-sweeps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=8, help="sleeping processes the running jobs share")
    parser.add_argument("--hung", type=int, default=20, help="runs that hang (0: skip the detection phase)")
    parser.add_argument("--healthy", type=int, default=100, help="healthy long runs reporting progress")
    parser.add_argument("--window", type=float, default=5.0, help="heartbeat window of those jobs, seconds")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between sweeps (start to start)")
    parser.add_argument("--report-every", type=float, default=1.0, help="seconds between progress reports")
    parser.add_argument(
        "--hang-within", type=float, default=15.0, help="hung runs stop reporting within this"
    )
    parser.add_argument("--healthy-seconds", type=float, default=60.0, help="how long the healthy runs run")
    parser.add_argument("--reporters", type=int, default=4, help="threads reporting progress")
    parser.add_argument("--skip-scale", action="store_true", help="only the detection phase")
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
        if args.skip_scale:
            _detection(args, dsn)
            return 0
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
        print(
            f"Prefect HTTP requests per sweep (httpx hook): "
            f"{', '.join(str(r['httpRequests']) for r in reports)}"
        )
        target = max(times) <= 1.0
        print(f"target ≤ 1 s per sweep: {'met' if target else 'NOT met'} (max {max(times):.3f} s)")
        _delete_flow_runs(run_ids)
        run_ids = []
        if args.hung or args.healthy:
            _detection(args, dsn)
        return 0
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        _delete_flow_runs(run_ids)
        _drop(stack_dsn)


if __name__ == "__main__":
    raise SystemExit(main())
