"""``python -m interlinked.local.prefect_server server start ...``: Prefect's own server, one cost less.

Exactly ``prefect server start`` (the same CLI, app, database and services), with one memo: the
server checks a JSON schema against the JSON Schema meta-schema every time it validates against
it — the work pool's job-variables schema on *every* flow-run creation, a deployment's parameter
schema on every run of it. That check is a pure function of the schema and took ~40 % of the
server's CPU per created run here (profiled with py-spy during bulk creation). The memo remembers
schemas that passed (by their canonical JSON, at most :data:`MAX_REMEMBERED`); a schema that fails
is checked, and refused, every time, with Prefect's own error.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MAX_REMEMBERED = 256


def remember_valid_schemas(validator_class: Any) -> None:
    """Make ``validator_class.check_schema`` skip schemas it has already accepted."""
    original = validator_class.check_schema
    accepted: set[tuple[str, bool]] = set()
    missing = object()

    def check_schema(schema: Any, format_checker: Any = missing) -> None:
        try:
            key = (json.dumps(schema, sort_keys=True), format_checker is not missing)
        except (TypeError, ValueError):  # not plain JSON: check it as Prefect would
            key = None
        if key is not None and key in accepted:
            return
        if format_checker is missing:
            original(schema)
        else:
            original(schema, format_checker=format_checker)
        if key is not None and len(accepted) < MAX_REMEMBERED:
            accepted.add(key)

    validator_class.check_schema = staticmethod(check_schema)


def main(argv: list[str]) -> int:
    from prefect.utilities.schema_tools import validation

    remember_valid_schemas(validation._VALIDATOR)
    from prefect.cli import app

    sys.argv = ["prefect", *argv]
    app()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
