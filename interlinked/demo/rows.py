"""What every demo section shares: a :class:`Row` of the summary table, progress lines, the table."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from interlinked.settings import Settings


@dataclass
class Row:
    """One line of the summary: what ran, what was expected, what happened and where it is."""

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


def say(message: str) -> None:
    """A progress line (standard error; standard output holds only the summary)."""
    print(message, file=sys.stderr, flush=True)


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
    if settings.prefect_auth:
        from interlinked.local.parts import prefect_auth_file

        print(f"  Its login asks for the password in {prefect_auth_file(settings)} (the whole line).")
    print('Use the stack from a shell with: eval "$(.venv/bin/interlinked env)"')
    print("Stop it with: .venv/bin/interlinked down   (or: make down)")
