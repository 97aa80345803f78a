"""`interlinked demo`: bring the stack up and exercise every capability on real data.

Each capability is a section that submits its work, waits for it, and returns rows for the
summary table. The stack is left running so the runs can be inspected in the Prefect UI.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interlinked.settings import Settings

DEMO_JOBS = Path(__file__).resolve().parent / "jobs"


@dataclass
class Row:
    what: str
    kind: str
    expected: str
    state: str
    seconds: float
    detail: str
    where: str = ""

    @property
    def as_expected(self) -> bool:
        return self.state == self.expected


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def script_jobs_section(settings: Settings) -> list[Row]:
    """Submit script jobs in every language (one fails on purpose) and wait for all of them."""
    from flows.script_jobs.client import submit_script_job, wait_for_job
    from flows.script_jobs.runners import rscript_path

    jobs = [
        (
            "seed example (Python)",
            {"func": "myfunc", "arguments": {"a": 1, "b": 2}, "script": "add.py"},
            "COMPLETED",
        ),
        (
            "expression summary (Python)",
            {
                "func": "summarise",
                "arguments": {"cells": 2000, "genes": 500, "seed": 7},
                "script": "expression_summary.py",
            },
            "COMPLETED",
        ),
        (
            "word count (shell)",
            {
                "func": "count_words",
                "arguments": {"text": "to be or not to be that is the question"},
                "script": "word_count.sh",
            },
            "COMPLETED",
        ),
        (
            "fails on purpose (Python)",
            {"func": "analyse", "arguments": {"samples": []}, "script": "fails_on_purpose.py"},
            "FAILED",
        ),
    ]
    if rscript_path():
        jobs.insert(
            1,
            (
                "seed example (R)",
                {"func": "myfunc", "arguments": {"a": 1, "b": 2}, "script": "add.R"},
                "COMPLETED",
            ),
        )
    else:
        _say("  (Rscript not found: the R job is left out; install r-base-core and r-cran-jsonlite)")

    submitted = []
    for title, description, expected in jobs:
        job = submit_script_job(
            {**description, "name": title}, deployment=settings.deployment("script-job"), base_dir=DEMO_JOBS
        )
        submitted.append((title, job, expected, time.monotonic()))
        _say(f"  submitted {title}: job {job.job_id}")

    rows = []
    for title, job, expected, started in submitted:
        status = wait_for_job(job.job_id, timeout=600, ui_url=settings.prefect_ui_url)
        if status["state"] == "COMPLETED":
            detail = json.dumps(status["result_value"])
            where = status["result"]
        else:
            detail = status.get("error") or ""
            where = status["log"]
        rows.append(
            Row(
                title,
                f"script job ({job.spec.language})",
                expected,
                status["state"],
                time.monotonic() - started,
                detail,
                where,
            )
        )
    return rows


def analysis_section(settings: Settings) -> list[Row]:
    # Imported here: those modules import Row from this one.
    from interlinked.demo.analysis import analysis_service_section

    return analysis_service_section(settings)


def events_section(settings: Settings) -> list[Row]:
    from interlinked.demo.events import event_paths_section

    return event_paths_section(settings)


SECTIONS: list[tuple[str, Callable[[Settings], list[Row]]]] = [
    ("Script jobs (seed 000)", script_jobs_section),
    ("Analysis service (seed 001)", analysis_section),
    ("Work started by events: S3 submissions (seed 003) and script jobs by S3/SNS (seed 000)", events_section),
]


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_summary(rows: list[Row], settings: Settings, total_seconds: float) -> None:
    header = f"{'':3}{'what':<34} {'expected':<12} {'state':<12} {'secs':>6}  result / reason"
    print()
    print(header)
    print("-" * (len(header) + 41))
    for row in rows:
        mark = "ok" if row.as_expected else "!!"
        print(
            f"{mark:<3}{_truncate(row.what, 34):<34} {row.expected:<12} {row.state:<12} {row.seconds:6.1f}  "
            f"{_truncate(row.detail, 60)}"
        )
    print()
    print("Where the results are:")
    for row in rows:
        if row.where:
            print(f"  {_truncate(row.what, 34):<34} {row.where}")
    print()
    good = sum(row.as_expected for row in rows)
    print(f"{good}/{len(rows)} ended as expected in {total_seconds:.1f} s.")
    print(f"Open the Prefect UI at {settings.prefect_ui_url} (flow runs, logs, artifacts).")
    print('Use the stack from a shell with: eval "$(.venv/bin/interlinked env)"')
    print("Stop it with: .venv/bin/interlinked down   (or: make down)")


def run_demo(settings: Settings) -> int:
    from interlinked.local import up
    from interlinked.local.processes import StackError

    started = time.monotonic()
    _say("bringing the local stack up ...")
    try:
        up(settings, echo=lambda line: _say(f"  {line}"))
    except StackError as error:
        print(f"interlinked: error: {error}", file=sys.stderr)
        return 3
    rows: list[Row] = []
    for title, section in SECTIONS:
        _say(f"{title} ...")
        rows.extend(section(settings))
    print_summary(rows, settings, time.monotonic() - started)
    return 0 if all(row.as_expected for row in rows) else 1
