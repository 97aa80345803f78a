"""Demo section of script jobs (seed 000): a job in every language, one failing on purpose."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from interlinked.demo.rows import Row, say
from interlinked.settings import Settings

JOBS_DIR = Path(__file__).resolve().parent / "jobs"


def _jobs(with_r: bool) -> list[tuple[str, dict, str]]:
    """(title, job description, expected final state) of every job the section submits."""
    jobs = [
        ("seed example (Python)", {"func": "myfunc", "arguments": {"a": 1, "b": 2}, "script": "add.py"}, "COMPLETED"),
        (
            "expression summary (Python)",
            {"func": "summarise", "arguments": {"cells": 2000, "genes": 500, "seed": 7},
             "script": "expression_summary.py"},
            "COMPLETED",
        ),
        (
            "word count (shell)",
            {"func": "count_words", "arguments": {"text": "to be or not to be that is the question"},
             "script": "word_count.sh"},
            "COMPLETED",
        ),
        (
            "fails on purpose (Python)",
            {"func": "analyse", "arguments": {"samples": []}, "script": "fails_on_purpose.py"},
            "FAILED",
        ),
    ]  # fmt: skip
    if with_r:
        jobs.insert(
            1,
            (
                "seed example (R)",
                {"func": "myfunc", "arguments": {"a": 1, "b": 2}, "script": "add.R"},
                "COMPLETED",
            ),
        )
    return jobs


def section(settings: Settings, stack: dict) -> list[Row]:
    """Submit script jobs in every language (one fails on purpose) and wait for all of them."""
    from flows.script_jobs.client import submit_script_job, wait_for_job

    # The local worker runs R scripts with the Rscript on this machine's PATH.
    with_r = shutil.which("Rscript") is not None
    if not with_r:
        say("  (Rscript not found: the R job is left out; install r-base-core and r-cran-jsonlite)")
    submitted = []
    for title, description, expected in _jobs(with_r):
        job = submit_script_job(
            {**description, "name": title}, deployment=settings.deployment("script-job"), base_dir=JOBS_DIR
        )
        submitted.append((title, job, expected, time.monotonic()))
        say(f"  submitted {title}: job {job.job_id}")

    rows = []
    for title, job, expected, started in submitted:
        status = wait_for_job(job.job_id, timeout=600, ui_url=settings.prefect_ui_url)
        if status["state"] == "COMPLETED":
            detail, where = json.dumps(status["result_value"]), status["result"]
        else:
            detail, where = status.get("error") or "", status["log"]
        kind = f"script job ({job.spec.language})"
        rows.append(Row(title, kind, expected, status["state"], time.monotonic() - started, detail, where))
    return rows
