"""What recording one request in Prefect costs on the request path, per way of recording it.

    .venv/bin/python bench/bench_analysis_recording.py [--n 300]

Inside a flow run on the local stack (as the analysis service runs), the time a request's thread
spends on:
- nothing (the floor);
- putting a record on the service's recorder queue (what the service does: the recorder thread
  then emits the event);
- ``emit_event`` directly (Prefect's EventsWorker queues and batches it to the server);
- a line through the flow run's logger (APILogHandler, batched);
- a task run (``@task`` called in the flow: client-side orchestration, state events);
- one Prefect API round trip (``read_flow_run``), the price of any synchronous API call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from queue import SimpleQueue

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _common import print_table, summarise  # noqa: E402


def _time(function, n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        function(i)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()

    from interlinked.local import up
    from interlinked.settings import get_settings

    up(get_settings(), echo=lambda line: print(line, file=sys.stderr))

    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE
    from prefect.client.orchestration import get_client
    from prefect.context import get_run_context
    from prefect.events import emit_event

    @task(cache_policy=NO_CACHE, persist_result=False)
    def record_as_task_run(i: int) -> int:
        return i

    @flow(name="bench-recording")
    def measure(n: int) -> dict:
        logger = get_run_logger()
        run = get_run_context().flow_run
        queue: SimpleQueue = SimpleQueue()
        payload = {"task": "GeneExpression", "experimentId": "e", "cache": "computed", "serviceMs": 1.2}

        def event(i: int) -> None:
            emit_event(
                "interlinked.analysis.request.answered",
                resource={"prefect.resource.id": f"interlinked.analysis.request.bench-{i}"},
                related=[
                    {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.role": "flow-run"}
                ],
                payload=payload,
            )

        rows = {
            "nothing": summarise(_time(lambda i: None, n)),
            "service recorder queue put": summarise(
                _time(lambda i: queue.put({"event": "answered", **payload}), n)
            ),
            "emit_event": summarise(_time(event, n)),
            "run logger line": summarise(
                _time(lambda i: logger.info("request %d answered in %.1f ms", i, 1.2), n)
            ),
            "task run per request": summarise(_time(record_as_task_run, min(n, 100))),
        }
        with get_client(sync_client=True) as client:
            rows["API round trip (read_flow_run)"] = summarise(
                _time(lambda i: client.read_flow_run(run.id), min(n, 50))
            )
        return rows

    rows = measure(args.n)
    print_table("Cost on the request path of recording one request in Prefect", rows, unit="s")
    print(
        "\n(in microseconds: "
        + ", ".join(f"{name} {stats['p50'] * 1e6:.0f}" for name, stats in rows.items())
        + ")"
    )


if __name__ == "__main__":
    main()
