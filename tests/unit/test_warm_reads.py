"""The warm worker's shared reads of deployments and flows (no server: a counting reader)."""

import asyncio

import pytest

from interlinked.workers.warm import RecentReads


class Reader:
    def __init__(self, fail_first: bool = False):
        self.calls: list[str] = []
        self.fail_first = fail_first

    async def __call__(self, object_id: str) -> dict:
        self.calls.append(object_id)
        await asyncio.sleep(0.01)
        if self.fail_first and len(self.calls) == 1:
            raise LookupError(f"{object_id} not found")
        return {"id": object_id, "read": len(self.calls)}


def test_reads_close_together_share_one_request_and_old_ones_are_read_again():
    async def scenario():
        now = [0.0]
        reader = Reader()
        reads = RecentReads(reader, seconds=1.0, clock=lambda: now[0])
        together = await asyncio.gather(*(reads("d1") for _ in range(5)), reads("d2"))
        assert [r["read"] for r in together[:5]] == [together[0]["read"]] * 5
        assert sorted(reader.calls) == ["d1", "d2"]
        now[0] = 0.9
        assert (await reads("d1"))["read"] == together[0]["read"]  # still recent
        now[0] = 1.5
        assert (await reads("d1"))["read"] == 3  # too old: read again
        assert reader.calls == ["d1", "d2", "d1"]

    asyncio.run(scenario())


def test_a_failed_read_is_not_kept():
    async def scenario():
        reader = Reader(fail_first=True)
        reads = RecentReads(reader, seconds=60.0, clock=lambda: 0.0)
        with pytest.raises(LookupError):
            await reads("gone")
        assert (await reads("gone"))["read"] == 2
        assert reader.calls == ["gone", "gone"]

    asyncio.run(scenario())


_CHILD_PROBE = """
import asyncio, json, sys, uuid
from interlinked.workers.zygote import use_prefetched
from prefect import results
from prefect.client.orchestration import get_client
from prefect.events import related

flow_id, deployment_id, queue_id, pool_id, block_id = (str(uuid.uuid4()) for _ in range(5))
stamp = "2026-01-01T00:00:00Z"
prefetched = {
    "flow": {"id": flow_id, "name": "f", "created": stamp, "updated": stamp},
    "deployment": {"id": deployment_id, "name": "d", "flow_id": flow_id, "created": stamp, "updated": stamp},
    "work-queue": {"id": queue_id, "name": "q", "work_pool_id": pool_id, "created": stamp, "updated": stamp},
    "work-pool": {"id": pool_id, "name": "p", "type": "warm-process", "created": stamp, "updated": stamp},
    "result-storage": {"default_result_storage_block_id": block_id},
}
used = use_prefetched(prefetched)

async def never(object_id):
    raise AssertionError(f"read {object_id} from the server")

async def main():
    cached = {}
    for kind, object_id in (("flow", flow_id), ("deployment", deployment_id), ("work-queue", queue_id), ("work-pool", "p")):
        entry = await related._get_and_cache_related_object(
            kind=kind, role=kind, client_method=never, obj_id=uuid.UUID(object_id) if kind != "work-pool" else object_id,
            cache=related.RESOURCE_CACHE,
        )
        cached[kind] = entry["object"].name
    async with get_client() as client:
        first = (await client.read_deployment(uuid.UUID(deployment_id))).name
        try:
            await client.read_deployment(uuid.UUID(deployment_id))
            second = "answered without the server"
        except Exception as error:
            second = type(error).__name__
    print(json.dumps({
        "used": used, "cached": cached, "first": first, "second": second,
        "storage": [str(results._read_server_default_result_storage_block_id()) == block_id,
                    str(await results._aread_server_default_result_storage_block_id()) == block_id],
    }))

asyncio.run(main())
"""


def test_a_forked_child_answers_its_engines_first_reads_from_what_the_worker_sent():
    """The warm pool sends each run the deployment, flow, work queue and pool and the server's
    default result storage; the child's engine must get them without a request, and the flow's own
    later read of its deployment must still reach the server."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_CLIENT_MAX_RETRIES": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["used"] == ["deployment", "flow", "work-queue", "work-pool", "result-storage"]
    assert report["cached"] == {"flow": "f", "deployment": "d", "work-queue": "q", "work-pool": "p"}
    assert report["first"] == "d"
    assert report["second"] == "ConnectError", "a second read of the deployment goes to the server"
    assert report["storage"] == [True, True]


def test_one_cancellation_poll_covers_every_live_run(monkeypatch):
    """The fallback for a missed Cancelling event: one read for all the worker's live runs every
    few seconds (it was one read per run, which a burst's long-lived runs multiplied)."""
    import types

    from interlinked.workers import warm

    monkeypatch.setattr(warm, "CANCELLATION_POLL_SECONDS", 0.01)
    runs = [f"00000000-0000-0000-0000-00000000000{index}" for index in range(4)]

    class Client:
        def __init__(self):
            self.calls = []

        async def read_flow_runs(self, *, flow_run_filter, limit):
            asked = sorted(str(run_id) for run_id in flow_run_filter.id.any_)
            self.calls.append((asked, flow_run_filter.state.name.any_, limit))
            # the server: only this one is Cancelling
            return [types.SimpleNamespace(id=runs[1], state=types.SimpleNamespace(name="Cancelling"))]

    async def scenario():
        worker = warm.WarmProcessWorker(work_pool_name="p")
        worker._client = Client()
        worker._cancel_requests = {run_id: asyncio.Event() for run_id in runs}
        worker._cancel_requests[runs[3]].set()  # already asked for: not polled again
        poller = asyncio.ensure_future(worker._poll_for_cancellation())
        while not worker._client.calls:
            await asyncio.sleep(0.01)
        poller.cancel()
        return worker

    worker = asyncio.run(scenario())
    asked, names, limit = worker._client.calls[0]
    assert asked == runs[:3] and names == ["Cancelling", "Suspended"] and limit == 3
    assert [worker._cancel_requests[run_id].is_set() for run_id in runs] == [False, True, False, True]


class _FakeZygote:
    def __init__(self):
        self.sent = []

    async def notify(self, pid, message):
        self.sent.append((pid, message))
        return True


def test_a_suspended_live_run_is_told_once_and_only_when_its_state_confirms_it(monkeypatch):
    """Runs learn of their suspension from the worker (their engines no longer watch the event
    stream themselves): from the periodic read, or from an event that a read of the run confirms."""
    import types
    import uuid

    from prefect.states import Running, Suspended

    from interlinked.workers import warm

    monkeypatch.setattr(warm, "CANCELLATION_POLL_SECONDS", 0.01)
    polled, evented, other, stale = (str(uuid.uuid4()) for _ in range(4))
    zygote = _FakeZygote()

    class Client:
        def __init__(self):
            self.polls = []

        async def read_flow_runs(self, *, flow_run_filter, limit):
            self.polls.append(sorted(str(run_id) for run_id in flow_run_filter.id.any_))
            return [types.SimpleNamespace(id=uuid.UUID(polled), state=Suspended(pause_key="p"))]

        async def read_flow_run(self, run_id):
            # the event for ``stale`` is an old one: the run is running again
            state = Running() if run_id == stale else Suspended(pause_key="e")
            return types.SimpleNamespace(id=uuid.UUID(run_id), state=state)

    async def scenario():
        worker = warm.WarmProcessWorker(work_pool_name="p")
        worker._client = Client()
        worker._live = {polled: (zygote, 11), evented: (zygote, 12), stale: (zygote, 13)}
        poller = asyncio.ensure_future(worker._poll_for_cancellation())
        while len(worker._client.polls) < 2:
            await asyncio.sleep(0.01)
        poller.cancel()
        told = [
            await worker._relay_suspension(evented),
            await worker._relay_suspension(evented),  # told once
            await worker._relay_suspension(stale),
            await worker._relay_suspension(other),  # not a live run of this worker
        ]
        return worker, told

    worker, told = asyncio.run(scenario())
    assert told == [True, False, False, False]
    assert [pid for pid, _ in zygote.sent] == [11, 12]
    assert {message["op"] for _, message in zygote.sent} == {"suspended"}
    assert [message["state"]["name"] for _, message in zygote.sent] == ["Suspended", "Suspended"]
    assert [message["state"]["state_details"]["pause_key"] for _, message in zygote.sent] == ["p", "e"]
    # Told runs are not polled again.
    assert polled not in worker._client.polls[-1] and stale in worker._client.polls[-1]


def test_the_worker_sends_its_pool_with_runs_the_server_hands_it_without_a_pool_name():
    """The server leaves ``work_pool_name`` empty in the runs it hands a worker; those runs are the
    worker's pool's, so their engines get the pool with the fork instead of reading it."""
    import types
    import uuid

    from prefect.client.schemas.objects import FlowRun, WorkPool

    from interlinked.workers import warm

    pool = WorkPool(id=uuid.uuid4(), name="p", type=warm.WORKER_TYPE)

    async def storage(_):
        return types.SimpleNamespace(model_dump=lambda mode: {"default_result_storage_block_id": None})

    async def unreadable(_):
        raise LookupError("not read here")

    async def prefetched_for(work_pool_name):
        worker = warm.WarmProcessWorker(work_pool_name="p")
        worker._client = types.SimpleNamespace(read_deployment=unreadable, read_flow=unreadable)
        worker._work_pool = pool
        worker._engine_reads = {"work-queue": storage, "result-storage": storage}
        return await worker._engine_reads_for(FlowRun(flow_id=uuid.uuid4(), work_pool_name=work_pool_name))

    as_handed = asyncio.run(prefetched_for(None))
    assert as_handed["work-pool"]["name"] == "p" and as_handed["work-pool"]["id"] == str(pool.id)
    assert asyncio.run(prefetched_for("p"))["work-pool"]["name"] == "p"
    assert "work-pool" not in asyncio.run(prefetched_for("another-pool"))


def test_prefect_settings_become_environment_variables_once_per_settings_object(monkeypatch):
    """Every run's environment holds Prefect's settings; serialising them took ~40 ms of the worker's
    CPU per run. They are serialised once per settings object and handed out as copies."""
    from prefect.settings import PREFECT_LOGGING_LEVEL, get_current_settings, temporary_settings

    from interlinked.workers import warm

    settings_class = type(get_current_settings())
    original = settings_class.to_environment_variables
    calls = []

    def counted(self, **kwargs):
        calls.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(settings_class, "to_environment_variables", counted)
    monkeypatch.setattr(warm, "_SETTINGS_ENVIRONMENT", None)
    first = warm.settings_environment()
    # The job configuration's base environment (Prefect calls it for every run) is the same copy.
    assert warm.WarmProcessWorker.job_configuration._base_environment() == first
    assert calls == [{"exclude_unset": True}]
    first["CHANGED_BY_A_CALLER"] = "1"
    assert "CHANGED_BY_A_CALLER" not in warm.settings_environment()
    with temporary_settings({PREFECT_LOGGING_LEVEL: "ERROR"}):
        assert warm.settings_environment()["PREFECT_LOGGING_LEVEL"] == "ERROR"
    assert len(calls) == 2
    assert warm.settings_environment() == original(get_current_settings(), exclude_unset=True)
