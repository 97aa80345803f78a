"""The flow runs in flight on the local pool, for `down`: find them, cancel them, record the outcome.

`down` must not leave runs behind: their processes would go on without a worker (forked runs and
their scripts are in sessions of their own, out of the worker's process group) and Prefect would
show them Running for ever. So, while the worker and the Prefect server still run, `down` asks for
each run to be cancelled (state Cancelling, which the warm worker turns into stopping the run's
process group and its scripts, then Cancelled), waits a bounded time, and marks whatever did not
get there Cancelled itself once its processes are gone.

Plain REST calls (httpx) rather than Prefect's client: `down` stays light and answers even when the
Prefect server does not (then there is nothing to record, and it says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from interlinked.settings import Settings

# Runs in these states have (or are about to have) processes on this machine.
ACTIVE_STATES = ("PENDING", "RUNNING", "CANCELLING")
# Seconds `down` waits for cancelled runs to reach a final state: the warm worker gives a run's
# process group 10 s after SIGTERM and the script runner its script 5 s, so this leaves room.
CANCEL_WAIT = 45.0
CANCEL_MESSAGE = "Cancelled by `interlinked down`: the local stack stopped."


@dataclass
class FlowRunRef:
    """What `down` needs to know of a run in flight."""

    id: str
    name: str
    state: str


def _client(settings: Settings) -> httpx.Client:
    from interlinked.local.parts import prefect_auth_headers

    return httpx.Client(
        base_url=settings.prefect_api_url.rstrip("/") + "/",
        headers=prefect_auth_headers(settings),
        timeout=10,
    )


def active_runs(settings: Settings) -> list[FlowRunRef] | None:
    """Runs of the stack's work pool that are Pending, Running or Cancelling; None when the Prefect
    server cannot be asked."""
    body = {
        "flow_runs": {"state": {"type": {"any_": list(ACTIVE_STATES)}}},
        "work_pools": {"name": {"any_": [settings.work_pool]}},
        "limit": 200,
    }
    runs: list[FlowRunRef] = []
    try:
        with _client(settings) as client:
            while True:
                response = client.post("flow_runs/filter", json={**body, "offset": len(runs)})
                response.raise_for_status()
                page = response.json()
                runs += [
                    FlowRunRef(run["id"], run.get("name") or run["id"], (run.get("state") or {}).get("type"))
                    for run in page
                ]
                if len(page) < body["limit"]:
                    return runs
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def _set_state(client: httpx.Client, run_id: str, state_type: str, message: str) -> None:
    name = state_type.capitalize()
    response = client.post(
        f"flow_runs/{run_id}/set_state",
        json={"state": {"type": state_type, "name": name, "message": message}, "force": True},
    )
    response.raise_for_status()


def _state_of(client: httpx.Client, run_id: str) -> str | None:
    response = client.get(f"flow_runs/{run_id}")
    response.raise_for_status()
    return (response.json().get("state") or {}).get("type")


def request_cancellation(settings: Settings, runs: list[FlowRunRef]) -> None:
    """Move each run to Cancelling (the worker then stops its processes); errors are ignored here,
    the runs are marked at the end either way."""
    with _client(settings) as client:
        for run in runs:
            if run.state == "CANCELLING":
                continue
            try:
                _set_state(client, run.id, "CANCELLING", CANCEL_MESSAGE)
            except httpx.HTTPError:
                continue


def wait_until_final(
    settings: Settings, runs: list[FlowRunRef], *, timeout: float = CANCEL_WAIT, poll: float = 0.5
) -> list[FlowRunRef]:
    """Wait (at most ``timeout`` seconds) until every run is in a final state; return the others."""
    pending = list(runs)
    deadline = time.monotonic() + timeout
    with _client(settings) as client:
        while pending:
            still = []
            for run in pending:
                try:
                    state = _state_of(client, run.id)
                except httpx.HTTPError:
                    state = None
                if state not in ("CANCELLED", "COMPLETED", "FAILED", "CRASHED"):
                    still.append(run)
            pending = still
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(poll)
    return pending


def mark_cancelled(settings: Settings, runs: list[FlowRunRef]) -> list[FlowRunRef]:
    """Force each run (its processes already stopped) to Cancelled; return the ones that failed."""
    failed = []
    with _client(settings) as client:
        for run in runs:
            try:
                _set_state(client, run.id, "CANCELLED", CANCEL_MESSAGE)
            except httpx.HTTPError:
                failed.append(run)
    return failed


def describe_runs(runs: list[FlowRunRef], limit: int = 5) -> str:
    names = ", ".join(f"{run.name!r} ({run.id})" for run in runs[:limit])
    return names + (f" and {len(runs) - limit} more" if len(runs) > limit else "")


def cancel_active_runs(
    settings: Settings, echo: Callable[[str], None], *, wait: float = CANCEL_WAIT
) -> list[FlowRunRef] | None:
    """Ask every active run of the pool to cancel and wait (at most ``wait`` seconds) for it; return
    the runs that did not end (to be marked once their processes are stopped), or None when Prefect
    could not be asked."""
    runs = active_runs(settings)
    if runs is None:
        echo(
            "could not list the flow runs in flight (the Prefect server does not answer); stopping their processes"
        )
        return None
    if not runs:
        return []
    echo(f"cancelling {len(runs)} flow run(s) in flight: {describe_runs(runs)}")
    request_cancellation(settings, runs)
    return wait_until_final(settings, runs, timeout=wait)
