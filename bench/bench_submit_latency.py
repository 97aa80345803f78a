"""Submit → result latency of a trivial script job, against the stock Prefect path, in one run.

    .venv/bin/python bench/bench_submit_latency.py [--runs 10]

(a) interlinked: `submit_script_job` (validate, upload script, store spec, create the flow run) and
    wait until `result.json` is readable — what `interlinked submit --wait` does.
    on the local stack's warm pool.
(b) stock Prefect: `run_deployment` of a trivial flow (`bench/stock_flow.py`) on a stock process
    worker with Prefect's default settings, waiting for its final state — no S3, no script.
Both run on the local stack (`interlinked up` is called first), one at a time, alternating.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import print_table, summarise  # noqa: E402
from _pools import deploy, stock_worker  # noqa: E402

from interlinked.local import up  # noqa: E402
from interlinked.settings import get_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    settings = get_settings()
    up(settings, echo=lambda line: print(line, file=sys.stderr))

    from prefect.deployments import run_deployment

    from flows.script_jobs.client import submit_script_job, wait_for_job

    with stock_worker(settings) as stock_pool:
        stock = deploy("bench/stock_flow.py:noop", name="bench-stock", pool=stock_pool)
        ours, theirs = _measure(settings, stock, args.runs, submit_script_job, wait_for_job, run_deployment)
    print_table(
        f"Submit → result of a trivial job, {args.runs} runs each",
        {
            f"interlinked submit + wait ({settings.worker_type} pool)": summarise(ours),
            "stock run_deployment, no-op flow (process)": summarise(theirs),
        },
    )


def _measure(settings, stock, runs, submit_script_job, wait_for_job, run_deployment):
    script = ROOT / "interlinked" / "demo_jobs" / "add.py"
    description = {
        "func": "myfunc",
        "arguments": {"a": 1, "b": 2},
        "name": "bench trivial",
        "script": str(script),
    }
    ours, theirs = [], []
    for index in range(runs):
        started = time.perf_counter()
        job = submit_script_job(description, deployment=settings.deployment("script-job"))
        status = wait_for_job(job.job_id, timeout=300, poll=0.1)
        assert status["state"] == "COMPLETED" and status["result_value"] == 3, status
        ours.append(time.perf_counter() - started)

        started = time.perf_counter()
        run = run_deployment(stock, timeout=300, poll_interval=0.1, as_subflow=False)
        assert run.state.is_completed(), run.state
        theirs.append(time.perf_counter() - started)
        print(
            f"run {index + 1}/{runs}: interlinked {ours[-1]:.2f} s, stock {theirs[-1]:.2f} s",
            file=sys.stderr,
        )

    return ours, theirs


if __name__ == "__main__":
    main()
