"""The local Prefect server's one change to Prefect: a JSON schema found valid is not checked again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from interlinked import prefect_server


class Checks:
    def __init__(self):
        self.calls = 0

    def __call__(self, schema, *args, **kwargs):
        self.calls += 1
        if schema.get("type") == "nonsense":
            raise ValueError("Invalid schema")


def test_a_schema_found_valid_is_checked_once_and_an_invalid_one_every_time(monkeypatch):
    checks = Checks()
    check = prefect_server._remembering(checks).__get__(None, object)
    schema = {"type": "object", "properties": {"env": {"type": "object"}, "name": {"type": "string"}}}
    check(schema)
    check(json.loads(json.dumps(schema)))  # an equal schema (another object)
    check({"properties": {"name": {"type": "string"}, "env": {"type": "object"}}, "type": "object"})
    assert checks.calls == 1
    check(schema, format_checker="another checker")  # with another format checker: its own check
    assert checks.calls == 2
    for _ in range(2):
        with pytest.raises(ValueError):
            check({"type": "nonsense"})
    assert checks.calls == 4
    monkeypatch.setattr(prefect_server, "CHECKED_SCHEMAS", 2)
    checks.calls = 0
    check = prefect_server._remembering(checks).__get__(None, object)
    for index in range(3):
        check({"title": str(index)})
    check({"title": "0"})  # the oldest was let go
    check({"title": "2"})
    assert checks.calls == 4


_PROBE = """
import json
from interlinked import prefect_server
from prefect.utilities.schema_tools import ValidationError, is_valid_schema, validate
assert prefect_server.install() and not prefect_server.install()
schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
out = {}
for attempt in range(2):
    is_valid_schema(schema, preprocess=False)
    validate({"n": 1}, schema, raise_on_error=True)
    try:
        validate({"n": "x"}, schema, raise_on_error=True)
        out[f"bad value {attempt}"] = "accepted"
    except ValidationError as error:
        out[f"bad value {attempt}"] = "refused"
    try:
        is_valid_schema({"type": 5}, preprocess=False)
        out[f"bad schema {attempt}"] = "accepted"
    except ValueError:
        out[f"bad schema {attempt}"] = "refused"
print(json.dumps(out))
"""


def test_prefects_validation_still_refuses_bad_job_variables_and_bad_schemas():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "bad value 0": "refused",
        "bad schema 0": "refused",
        "bad value 1": "refused",
        "bad schema 1": "refused",
    }
