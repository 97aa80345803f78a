"""`interlinked demo`: bring the stack up and exercise every capability on real data.

Each capability is a section module with ``section(settings, stack) -> list[Row]`` that submits
its work through the capability's client, waits for it, and returns rows for the summary table:

- :mod:`.script_jobs` — script jobs (seed 000) in every language, one failing on purpose;
- :mod:`.analysis` — the analysis service (seed 001): the seed's sample tasks and a few more;
- :mod:`.events` — work started by events: S3 submissions (seed 003), script jobs by S3 drop / SNS;
- :mod:`.rows` — the summary's :class:`Row`, progress lines and the table (what the sections share).

The sections import :mod:`.rows`, never this module. The stack is left running so the runs can be
inspected in the Prefect UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from interlinked.demo import analysis, events, script_jobs
from interlinked.demo.rows import Row, print_summary, say
from interlinked.settings import Settings

SECTIONS: list[tuple[str, Callable[[Settings, dict], list[Row]]]] = [
    ("Script jobs (seed 000)", script_jobs.section),
    ("Analysis service (seed 001)", analysis.section),
    (
        "Work started by events: S3 submissions (seed 003) and script jobs by S3/SNS (seed 000)",
        events.section,
    ),
]


def run_demo(settings: Settings) -> int:
    """Bring the stack up, run every section, print the summary; 0 when every row is as expected."""
    from interlinked.local import StackError, up

    started = time.monotonic()
    say("bringing the local stack up ...")
    try:
        stack = up(settings, echo=lambda line: say(f"  {line}"))
    except StackError as error:
        say(f"interlinked: error: {error}")
        return 3
    rows: list[Row] = []
    for title, section in SECTIONS:
        say(f"{title} ...")
        rows.extend(section(settings, stack))
    print_summary(rows, settings, time.monotonic() - started)
    return 0 if all(row.as_expected for row in rows) else 1


__all__ = ["SECTIONS", "Row", "print_summary", "run_demo"]
