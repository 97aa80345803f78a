"""What every `interlinked` command shares: exit codes, the error line, pointing Prefect at the stack."""

from __future__ import annotations

import os
import sys

# 0 success; 1 the work failed; 2 invalid input (nothing was created); 3 the stack or an AWS/Prefect call.
EXIT_FAILED, EXIT_INVALID, EXIT_STACK = 1, 2, 3


def report_error(message: str, code: int) -> int:
    print(f"interlinked: error: {message}", file=sys.stderr)
    return code


def use_stack_defaults() -> None:
    """Point Prefect at the local stack unless the user already chose an API (e.g. Prefect Cloud).

    Must run before prefect is imported: Prefect reads its settings at import time.
    """
    from interlinked.settings import get_settings

    settings = get_settings()
    os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    os.environ.setdefault("PREFECT_UI_URL", settings.prefect_ui_url)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
