"""The Prefect server's launcher: its schema memo must never accept what Prefect would refuse."""

import jsonschema
import pytest
from jsonschema.validators import Draft202012Validator, extend

from interlinked.local.prefect_server import remember_valid_schemas

SCHEMA = {"type": "object", "properties": {"image": {"type": "string"}}}


def _counting_validator():
    calls = []
    base = extend(Draft202012Validator)
    original = base.check_schema

    def check_schema(schema, format_checker=None):
        calls.append(schema)
        return original(schema) if format_checker is None else original(schema, format_checker=format_checker)

    base.check_schema = staticmethod(check_schema)
    return base, calls


def test_a_schema_that_passed_is_not_checked_again_but_values_still_are():
    validator, calls = _counting_validator()
    remember_valid_schemas(validator)
    for _ in range(3):
        validator.check_schema(dict(SCHEMA))
        jsonschema.validate({"image": "x"}, SCHEMA, cls=validator)
    assert len(calls) == 1, "the same schema was checked again"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"image": 3}, SCHEMA, cls=validator)  # values are still validated
    validator.check_schema({**SCHEMA, "title": "another"})
    assert len(calls) == 2, "a different schema must be checked"


def test_an_invalid_schema_is_refused_every_time():
    validator, calls = _counting_validator()
    remember_valid_schemas(validator)
    for _ in range(2):
        with pytest.raises(jsonschema.SchemaError):
            validator.check_schema({"type": 12})
    assert len(calls) == 2


def test_prefects_own_validator_still_refuses_an_invalid_work_pool_schema(monkeypatch):
    from prefect.utilities.schema_tools import validation

    monkeypatch.setattr(validation, "_VALIDATOR", extend(validation._VALIDATOR))
    remember_valid_schemas(validation._VALIDATOR)
    validation.is_valid_schema(SCHEMA, preprocess=False)
    validation.is_valid_schema(SCHEMA, preprocess=False)
    with pytest.raises(ValueError, match="Invalid schema"):
        validation.is_valid_schema({"type": 12}, preprocess=False)
