"""The ``analysis-service`` flow and ``python -m flows.analysis.service``.

Locally ``interlinked up`` starts ``python -m flows.analysis.service --status-file PATH``; on AWS
the same command runs as an ECS service, or this flow runs as a flow run of the
``analysis-service/ecs`` deployment. Either way the service is one long-running flow run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from blocks.status import process_alive, read_status
from flows.analysis.service.recorder import EVENT_PREFIX
from flows.analysis.service.service import STOP, AnalysisService
from flows.analysis.service.settings import ServiceSettings

FLOW_NAME = "analysis-service"
logger = logging.getLogger("interlinked.analysis.service")


def _mark_previous_run_crashed(status_file: Path | None) -> None:
    """A service killed with SIGKILL leaves its flow run RUNNING: mark it CRASHED on the next start."""
    if status_file is None:
        return
    status = read_status(status_file)
    if not status or not status.get("flow_run_id"):
        return
    if process_alive(status.get("pid"), status.get("process_started")):
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(status["flow_run_id"])
            if run.state is not None and run.state.is_running():
                client.set_flow_run_state(
                    run.id,
                    Crashed(
                        message=f"the analysis service process {status['pid']} ended without stopping (killed)"
                    ),
                    force=True,
                )
    except Exception as error:
        logger.info("could not mark the previous service run as crashed: %s", error)


@flow(
    name=FLOW_NAME,
    description="The warm analysis service: answers single-cell tasks from the work queue until stopped.",
    persist_result=False,
)
def analysis_service(
    queue_url: str | None = None,
    topic_arn: str | None = None,
    data_bucket: str | None = None,
    prepare_deployment: str | None = None,
    workers: int | None = None,
    run_seconds: float | None = None,
    status_file: str | None = None,
) -> dict[str, Any]:
    """Serve until stopped (SIGTERM/SIGINT) or for ``run_seconds``; returns the final statistics.

    Parameters left ``None`` come from ``INTERLINKED_ANALYSIS_*`` variables, then from the blocks.
    """
    from prefect import get_run_logger
    from prefect.context import get_run_context

    overrides = {
        name: value
        for name, value in {
            "queue_url": queue_url,
            "topic_arn": topic_arn,
            "data_bucket": data_bucket,
            "prepare_deployment": prepare_deployment,
            "workers": workers,
            "status_file": status_file,
        }.items()
        if value is not None
    }
    settings = ServiceSettings(**overrides)
    _mark_previous_run_crashed(settings.status_file)
    service = AnalysisService(settings, flow_run=get_run_context().flow_run)
    get_run_logger().info(
        "Analysis service answering %s on %s; every request is an event %s.* related to this run",
        service.queue_url,
        service.topic_arn,
        EVENT_PREFIX,
    )
    statistics = service.run(run_seconds=run_seconds)
    get_run_logger().info("Stopped after %d requests", statistics["requests"])
    return statistics


def _log_to_stderr(level: str) -> None:
    """Our own handler: Prefect's logging configuration does not show the ``interlinked`` loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("interlinked")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.analysis.service", description="Run the analysis service until SIGTERM/SIGINT."
    )
    parser.add_argument("--queue-url")
    parser.add_argument("--topic-arn")
    parser.add_argument("--data-bucket")
    parser.add_argument("--prepare-deployment")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--status-file", help="heartbeat/readiness file (see blocks.status.service_ready)")
    parser.add_argument("--run-seconds", type=float, help="stop after this long (benchmarks)")
    parser.add_argument("--log-level", default=os.environ.get("INTERLINKED_ANALYSIS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    _log_to_stderr(args.log_level)

    def request_stop(signum, frame) -> None:
        logger.info("signal %d: stopping after the requests in progress", signum)
        STOP.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    code = 0
    try:
        analysis_service(
            queue_url=args.queue_url,
            topic_arn=args.topic_arn,
            data_bucket=args.data_bucket,
            prepare_deployment=args.prepare_deployment,
            workers=args.workers,
            run_seconds=args.run_seconds,
            status_file=args.status_file,
        )
    except KeyboardInterrupt:
        code = 0
    except Exception as error:
        logger.error("the analysis service failed: %s: %s", type(error).__name__, error)
        code = 1
    _exit_promptly(code)
    return code


def _exit_promptly(code: int) -> None:
    """Flush Prefect's event and log queues, then exit without the slow interpreter teardown.

    The flow run's final state is already on the server; what remains at exit is Prefect's queue
    services draining (done here explicitly, bounded) and module finalisers of the science stack.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        with contextlib.suppress(Exception):
            service.drain_all(timeout=10)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
