"""Terraform's lifecycle rules match the prefixes the code writes (issue 12, item 10).

Reads the HCL of the storage module with python-hcl2 (no terraform binary needed) and compares it
with :data:`flows.expiry.DATA_BUCKET_EXPIRY`.
"""

from __future__ import annotations

from pathlib import Path

import hcl2

from flows.expiry import DATA_BUCKET_EXPIRY

TERRAFORM = Path(__file__).resolve().parents[2] / "infra" / "terraform"


def _load(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle)


def _unquote(value: str) -> str:
    return value.strip('"')


def _terraform_expiry() -> dict[str, tuple[str, str]]:
    document = _load(TERRAFORM / "modules" / "storage" / "main.tf")
    (locals_block,) = [block for block in document["locals"] if "expiring_prefixes" in block]
    rules = locals_block["expiring_prefixes"]["data"]
    return {
        _unquote(name): (_unquote(rule["prefix"]), rule["days"].removeprefix("${var.").removesuffix("}"))
        for name, rule in rules.items()
    }


def _variables(path: Path) -> set[str]:
    return {_unquote(name) for block in _load(path).get("variable", []) for name in block}


def test_terraform_expires_exactly_what_the_code_writes():
    assert _terraform_expiry() == DATA_BUCKET_EXPIRY


def test_code_prefixes_are_the_ones_the_writers_use():
    from flows.analysis.protocol import response_record_key
    from flows.script_jobs.layout import log_key

    prefixes = {name: prefix for name, (prefix, _) in DATA_BUCKET_EXPIRY.items()}
    assert log_key("j").startswith(prefixes["logs"])
    assert response_record_key("m").startswith(prefixes["analysis-responses"])
    assert all(prefix.endswith("/") for prefix in prefixes.values())


def test_every_expiry_variable_exists_and_is_passed_through_by_the_root_module():
    module_variables = _variables(TERRAFORM / "modules" / "storage" / "variables.tf")
    root_variables = _variables(TERRAFORM / "variables.tf")
    modules = {
        _unquote(name): body
        for block in _load(TERRAFORM / "main.tf")["module"]
        for name, body in block.items()
    }
    storage = modules["storage"]
    for _, variable in DATA_BUCKET_EXPIRY.values():
        assert variable in module_variables
        assert variable in root_variables
        assert storage.get(variable) == f"${{var.{variable}}}"
