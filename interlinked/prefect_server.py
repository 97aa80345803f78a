"""The local stack's Prefect server: Prefect's own CLI, with less work per request.

    python -m interlinked.prefect_server server start --host HOST --port PORT

``interlinked up`` starts the server this way; any ``prefect`` arguments work. Before handing over to
Prefect's CLI, :func:`install` changes one spot, found by profiling the server with py-spy while
the event bridge created runs in bulk (``bench/bench_bridge_throughput.py``):

- **a JSON schema is checked once.** Every flow run created from a deployment has its job variables
  validated against the work pool's schema (``prefect.server.api.validation``). That validation
  first checks the *schema itself* against JSON Schema's meta-schema, twice (Prefect's
  ``is_valid_schema``, then ``jsonschema.validate``): a fifth of the server's CPU in a burst of
  bulk creations, for a schema that changes only when the pool's template does. Here a schema
  that passed the check once passes again without it (a cache of the last schemas, keyed by their
  JSON); a schema that fails is checked, and refused, every time, as before. The validation of the
  job variables themselves is unchanged.

Nothing else differs from ``prefect server start``. The module sits outside :mod:`interlinked.local`
on purpose: that package imports boto3's core, and every object imported lives in the server's heap,
which its garbage collections walk.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from typing import Any

_INSTALLED = "_interlinked_checked_schemas"
# Schemas remembered as valid (a pool's job template, a deployment's parameters); the oldest go.
CHECKED_SCHEMAS = 256


def _remembering(check_schema: Any) -> Any:
    checked: OrderedDict[tuple[str, int], None] = OrderedDict()

    def remembering_check_schema(cls: Any, schema: Any, *args: Any, **kwargs: Any) -> None:
        try:
            key = (
                json.dumps(schema, sort_keys=True),
                id(kwargs.get("format_checker", args[0] if args else None)),
            )
        except (TypeError, ValueError):  # not JSON: check it as before
            return check_schema(schema, *args, **kwargs)
        if key in checked:
            checked.move_to_end(key)
            return None
        check_schema(schema, *args, **kwargs)  # raises for an invalid schema: nothing remembered
        checked[key] = None
        if len(checked) > CHECKED_SCHEMAS:
            checked.popitem(last=False)
        return None

    return classmethod(remembering_check_schema)


def install() -> bool:
    """Remember the schemas Prefect's validator found valid; False when already installed."""
    from prefect.utilities.schema_tools import validation

    validator = validation._VALIDATOR
    if getattr(validator, _INSTALLED, False):
        return False
    validator.check_schema = _remembering(validator.check_schema)
    setattr(validator, _INSTALLED, True)
    return True


def main() -> int:
    install()
    from prefect.cli import app

    sys.argv[0] = "prefect"
    return app()


if __name__ == "__main__":
    sys.exit(main())
