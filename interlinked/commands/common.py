"""What every `interlinked` command shares: exit codes, the error line, reading a JSON argument,
pointing Prefect at the stack."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# 0 success; 1 the work failed; 2 invalid input (nothing was created); 3 the stack or an AWS/Prefect call.
EXIT_FAILED, EXIT_INVALID, EXIT_STACK = 1, 2, 3


def report_error(message: str, code: int) -> int:
    print(f"interlinked: error: {message}", file=sys.stderr)
    return code


def read_json_argument(path: str) -> Any:
    """The JSON document in the file ``path`` (``-``: standard input).

    Raises ``ValueError`` with the line to show when the file cannot be read or is not JSON.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def use_stack_defaults() -> None:
    """Point Prefect at the local stack unless the user already chose an API (e.g. Prefect Cloud).

    On the stack's API, the stack's secret (``PREFECT_API_AUTH_STRING``) too, unless the shell has
    one; an API of the user's own keeps whatever auth the user gave it.
    Must run before prefect is imported: Prefect reads its settings at import time.
    """
    from interlinked.local.parts import prefect_auth_env
    from interlinked.settings import get_settings

    settings = get_settings()
    os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    os.environ.setdefault("PREFECT_UI_URL", settings.prefect_ui_url)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if os.environ["PREFECT_API_URL"].rstrip("/") == settings.prefect_api_url and not os.environ.get(
        "PREFECT_API_AUTH_STRING"
    ):
        os.environ.update(prefect_auth_env(settings))
