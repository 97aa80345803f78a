"""A stock Prefect process worker on its own pool, for side-by-side benchmarks against the warm pool."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from interlinked.local import client_env, ensure_work_pool
from interlinked.local.processes import python_tool
from interlinked.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STOCK_POOL = "bench-stock"


@contextlib.contextmanager
def stock_worker(settings: Settings, *, pool: str = STOCK_POOL, query_seconds: float | None = None):
    """Run `prefect worker start --type process` on ``pool``.

    ``query_seconds=None`` is Prefect's default polling (every 10 s); a competent user tunes it
    down (``query_seconds=1``, as the local stack's own stock worker would be).
    """
    ensure_work_pool(pool, "process", "benchmarks: the stock process worker")
    env = {**os.environ, **client_env(settings)}
    # The stock experience: Prefect's own polling interval, not the local stack's tuned one.
    for name in ("PREFECT_WORKER_QUERY_SECONDS", "PREFECT_WORKER_PREFETCH_SECONDS"):
        env.pop(name, None)
    if query_seconds is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    log = (settings.logs_dir / f"{pool}-worker.log").open("ab")
    process = subprocess.Popen(
        [
            python_tool("prefect"),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--name",
            pool,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        time.sleep(3)
        yield pool
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def deploy(entrypoint: str, *, name: str, pool: str) -> str:
    """Deploy a flow from this checkout to ``pool``; return ``flow/deployment``."""
    from prefect import flow

    loaded = flow.from_source(source=str(ROOT), entrypoint=entrypoint)
    loaded.deploy(name=name, work_pool_name=pool, print_next_steps=False)
    return f"{loaded.name}/{name}"
