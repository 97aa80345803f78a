"""How fast the stack's Prefect server creates flow runs, the way the event bridge asks for them.

    .venv/bin/python bench/bench_run_creation.py [--runs 600] [--rounds 3]

The stack's Prefect server (PostgreSQL) and, next to it, a second stock ``prefect server start`` on
a database of its own in the same PostgreSQL, so the two can be compared in one run. The same flow
is deployed to a process pool without a worker on each (runs are only created), and runs are
created the way the event bridge does: bulk calls of 10 with an idempotency key per run. Rounds
alternate between the two servers so both see the same machine load. Reported per server: runs
created per second (wall) and the server process's CPU per created run (user + system, from /proc).
This is the ceiling the bridge's valid events/s are measured against.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from interlinked.local import client_env, postgres, up  # noqa: E402
from interlinked.settings import get_settings  # noqa: E402

POOL = "bench-creation"
STOCK_DATABASE = "prefect_stock_bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(api_url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no Prefect server at {api_url}")


def _server_pid(port: int) -> int:
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if "server start" in command and f"--port {port}" in command:
            return process.pid
    raise RuntimeError(f"no server process on port {port}")


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _deploy(api_url: str) -> str:
    """The bench flow on a process pool (no worker: runs are only created); its deployment id."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    script = (
        "from prefect import flow\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.actions import WorkPoolCreate\n"
        "from prefect.exceptions import ObjectAlreadyExists\n"
        "with get_client(sync_client=True) as c:\n"
        f"    try: c.create_work_pool(WorkPoolCreate(name={POOL!r}, type='process'))\n"
        "    except ObjectAlreadyExists: pass\n"
        f"loaded = flow.from_source(source={str(ROOT)!r}, entrypoint='bench/stock_flow.py:noop')\n"
        f"print(loaded.deploy(name='bench-creation', work_pool_name={POOL!r}, print_next_steps=False))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _create(api_url: str, deployment_id: str, count: int, pid: int) -> tuple[float, float]:
    """Create ``count`` runs in bulk calls of 10 with idempotency keys: (runs/s, server CPU ms/run)."""
    import httpx

    from interlinked.bridge.prefect_api import auth_headers_from_env

    # The stack's server asks for its secret (in this environment); the stock one asks for none.
    with httpx.Client(base_url=api_url, headers=auth_headers_from_env(), timeout=120) as http:
        cpu_before, started = _cpu(pid), time.perf_counter()
        made = 0
        while made < count:
            body = [{"idempotency_key": uuid.uuid4().hex} for _ in range(min(10, count - made))]
            reply = http.post(f"/deployments/{deployment_id}/create_flow_run/bulk", json=body)
            reply.raise_for_status()
            made += sum(1 for r in reply.json()["results"] if r.get("status") == "CREATED")
        elapsed = time.perf_counter() - started
        return count / elapsed, 1000 * (_cpu(pid) - cpu_before) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600, help="runs created per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = get_settings()
    up(settings, echo=lambda _: None)
    os.environ.update(client_env(settings))
    postgres.ensure_database(settings, STOCK_DATABASE)
    stock_port = _free_port()
    stock_api = f"http://{settings.host}:{stock_port}/api"
    stock_home = settings.state_dir / "bench-stock-prefect"
    stock_env = {
        **os.environ,
        "PREFECT_HOME": str(stock_home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.sqlalchemy_url(settings, STOCK_DATABASE),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": stock_api,
    }
    log = open(settings.logs_dir / "bench-stock-prefect.log", "ab")  # noqa: SIM115
    stock = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("prefect")),
            "server",
            "start",
            "--host",
            settings.host,
            "--port",
            str(stock_port),
        ],
        env=stock_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(stock_api)
        servers = {
            "stock `prefect server start`": (stock_api, _server_pid(stock_port)),
            "the stack's server": (settings.prefect_api_url, _server_pid(settings.prefect_port)),
        }
        deployments = {name: _deploy(api) for name, (api, _) in servers.items()}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (api, pid) in servers.items():
                results[name].append(_create(api, deployments[name], args.runs, pid))
    finally:
        stock.terminate()
        stock.wait(timeout=60)
        log.close()

    print(
        f"\nFlow-run creation, bulk calls of 10 with idempotency keys, {args.rounds} x {args.runs} runs per server"
    )
    print(f"{'':<34}{'runs/s (median)':>18}{'server CPU ms/run (median)':>30}")
    print("-" * 82)
    for name, rows in results.items():
        rates = sorted(r for r, _ in rows)
        cpus = sorted(c for _, c in rows)
        print(f"{name:<34}{rates[len(rates) // 2]:>18.1f}{cpus[len(cpus) // 2]:>30.1f}")
    load = os.getloadavg()
    print(
        f"\nload average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} ({os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
