"""The PostgreSQL job store on a real embedded PostgreSQL server (``interlinked.local.postgres``).

One server per module in a temporary state directory on a free port, started and stopped the way
``up``/``down`` do it; each test gets a fresh database. Concurrency is real: threads with their own
connections race on the same row.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from flows.jobs import machine
from flows.jobs.client import JobService
from flows.jobs.model import Job, JobError, JobNotFound
from flows.jobs.postgres import PostgresJobStore
from flows.jobs.store import change
from flows.jobs.types import JobTypes
from interlinked.local import postgres
from interlinked.local.processes import LocalStack
from interlinked.settings import Settings

TYPES = JobTypes({"script": {"flow": "script-job"}}, "local")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_settings():
    """A PostgreSQL server of our own (a directory outside pytest's tmp: as root the server runs as
    another user that must be able to pass through it)."""
    directory = Path(tempfile.mkdtemp(prefix="interlinked-jobs-pg-"))
    settings = Settings(
        _env_file=None, state_dir=directory / "state", postgres_port=_free_port(), start_timeout=60
    )
    stack = LocalStack(settings, echo=lambda _: None)
    part = postgres.part(settings)
    postgres.ensure_cluster(settings)
    stack.start(part)
    try:
        stack.wait_ready(part)
        yield settings
    finally:
        stack.stop("postgres")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def dsn(server_settings):
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    postgres.ensure_database(server_settings, name)
    return postgres.dsn(server_settings, name)


@pytest.fixture
def store(dsn):
    return PostgresJobStore.from_dsn(dsn)


class FakeDispatcher:
    def __init__(self) -> None:
        self.runs: list[str] = []
        self._lock = threading.Lock()

    def create_run(self, job: Job, deployment: str) -> str:
        with self._lock:
            self.runs.append(job.id)
            return f"run-{len(self.runs)}"

    def cancel_run(self, flow_run_id: str) -> None:
        pass


def new_job(**options) -> Job:
    return machine.new_job("script", known_types=["script"], **options)


def test_insert_get_roundtrip_and_duplicates(store, dsn):
    job = new_job(input_data={"name": "ü", "nested": {"list": [1, 2.5, None]}}, estimations={"memoryMiB": 64})
    stored = store.insert(job)
    assert stored.version == 1
    assert store.get(job.id).to_json() == stored.to_json()
    with pytest.raises(JobError, match="exists already"):
        store.insert(job)
    with pytest.raises(JobNotFound):
        store.get("missing")
    # The row carries the seed's JSON and the columns the queries use.
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT job_type, state, version, document FROM jobs").fetchone()
    assert row[:3] == ("script", "CREATED", 1)
    assert row[3]["inputData"]["name"] == "ü" and row[3]["currentExecution"] is None


def test_replace_is_conditional_on_the_version(store):
    job = store.insert(new_job())
    first = machine.dispatch(job)
    first.version = 2
    assert store.replace(first, 1) is True
    stale = machine.cancel(job)
    stale.version = 2
    assert store.replace(stale, 1) is False  # read at version 1, but the row is at 2 now
    assert store.get(job.id).state == "DISPATCHED"
    with pytest.raises(JobNotFound):
        store.replace(new_job(), 1)


def test_list_filters_and_orders_newest_first(store):
    jobs = [store.insert(new_job()) for _ in range(4)]
    change(store, jobs[1].id, machine.dispatch)
    assert [j.id for j in store.list()] == [j.id for j in reversed(jobs)]
    assert [j.id for j in store.list(state="DISPATCHED")] == [jobs[1].id]
    assert len(store.list(state="CREATED", limit=2)) == 2
    assert store.list(job_type="other") == []


def test_service_lifecycle_on_postgres(store):
    copies: list[dict] = []
    service = JobService(
        store, mirror=lambda job: copies.append(job.to_json()), dispatcher=FakeDispatcher(), job_types=TYPES
    )
    job = service.create("script", {"name": "n"})
    service.signal(job.id, "DISPATCH")
    job = service.signal(job.id, "EXECUTE")
    execution_id = job.current_execution.execution_id
    service.update_execution(job.id, execution_id, progress=0.4, metrics={"rss": 1})
    service.update(job.id, output_data={"answer": 42})
    job = service.signal_execution(job.id, execution_id, "SUCCESS")
    assert store.get(job.id).to_json() == job.to_json() == copies[-1]
    assert job.state == "SUCCEEDED" and job.output_data == {"answer": 42} and job.version == 7

    before = store.get(job.id).to_json()
    for refused in (
        lambda: service.signal_execution(job.id, execution_id, "SUCCESS"),
        lambda: service.update_execution(job.id, execution_id, progress=0.5),
        lambda: service.update_execution(job.id, "unknown", progress=0.5),
        lambda: service.signal(job.id, "EXECUTE"),
    ):
        with pytest.raises(JobError):
            refused()
    assert store.get(job.id).to_json() == before


class RacingStore(PostgresJobStore):
    """A racing thread's ``wait_at``-th read waits for the others' (``arm``): all of them then hold
    the same version of the job when they write."""

    def __init__(self, dsn: str, parties: int) -> None:
        super().__init__(lambda: psycopg.connect(dsn))
        self.barrier = threading.Barrier(parties, timeout=30)
        self.racing = threading.local()

    def arm(self, wait_at: int = 1) -> None:
        self.racing.wait_at, self.racing.reads = wait_at, 0

    def get(self, job_id: str) -> Job:
        job = super().get(job_id)
        if getattr(self.racing, "wait_at", 0):
            self.racing.reads += 1
            if self.racing.reads == self.racing.wait_at:
                self.racing.wait_at = 0
                self.barrier.wait()
        return job


def _race(count: int, work) -> list[str]:
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            result = work(index)
        except JobError as error:
            result = f"refused: {error}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_end_signals_one_wins(dsn):
    racers = 6
    store = RacingStore(dsn, racers)
    service = JobService(store, dispatcher=FakeDispatcher(), job_types=TYPES)
    job = service.create("script", {})
    service.signal(job.id, "DISPATCH")
    execution_id = service.signal(job.id, "EXECUTE").current_execution.execution_id

    def finish(index: int) -> str:
        store.arm()
        state = "SUCCESS" if index % 2 else "FAILURE"
        service.signal_execution(job.id, execution_id, state, failure_reason=None if index % 2 else "x")
        return state

    outcomes = _race(racers, finish)
    winners = [o for o in outcomes if not o.startswith("refused")]
    assert len(winners) == 1, outcomes
    assert all("already ended" in o for o in outcomes if o.startswith("refused"))
    final = store.get(job.id)
    assert final.current_execution.state == winners[0] and final.version == 5


def test_concurrent_dispatches_create_one_flow_run(dsn):
    racers = 5
    store = RacingStore(dsn, racers)
    dispatcher = FakeDispatcher()
    service = JobService(store, dispatcher=dispatcher, job_types=TYPES)
    job = service.create("script", {})

    def dispatch(_: int) -> str:
        store.arm(wait_at=2)  # the first read looks up the job type; the second is the one that races
        return service.signal(job.id, "DISPATCH").flow_run_id

    outcomes = _race(racers, dispatch)
    assert dispatcher.runs == [job.id]
    assert [o for o in outcomes if not o.startswith("refused")] == ["run-1"]
    assert sum(o.startswith("refused") and "only a CREATED job" in o for o in outcomes) == racers - 1
    assert store.get(job.id).flow_run_id == "run-1"


def test_ensure_is_idempotent_under_concurrency(dsn):
    stores = [PostgresJobStore.from_dsn(dsn) for _ in range(4)]
    outcomes = _race(4, lambda i: stores[i].ensure() or "ok")
    assert outcomes == ["ok"] * 4
    stores[0].ensure()
