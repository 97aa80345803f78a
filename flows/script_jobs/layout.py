"""Where a script job lives in the data bucket (fixed by the architecture), and its error.

====================================  ==============================================================
``jobs/{job_id}.json``                the job spec (what :mod:`.spec` validates)
``scripts/{script}``                  the code (a local script is copied to ``scripts/{job_id}/{name}``)
``results/{job_id}/result.json``      the return value as JSON
``logs/{job_id}.log``                 stdout/stderr, updated while the script runs
====================================  ==============================================================

The flow (:mod:`.flow`, :mod:`.by_event`) and the SDK (:mod:`.client`) both read and write through
these names and :func:`blocks.s3.data_store`, so the contract is written once.
"""

from __future__ import annotations

SCRIPTS_PREFIX = "scripts/"
# Expires (Terraform's storage module; :mod:`flows.expiry`).
LOGS_PREFIX = "logs/"


class ScriptJobError(RuntimeError):
    """The job could not run or its script failed; the message is what the user needs to know."""


def job_spec_key(job_id: str) -> str:
    return f"jobs/{job_id}.json"


def script_key(script: str) -> str:
    """The object of a script named in a spec (relative to ``scripts/``)."""
    return SCRIPTS_PREFIX + script


def result_key(job_id: str) -> str:
    return f"results/{job_id}/result.json"


def log_key(job_id: str) -> str:
    return f"{LOGS_PREFIX}{job_id}.log"


def s3_uri(key: str) -> str:
    """``s3://{data bucket}/{key}``."""
    from blocks.s3 import data_store

    return data_store().uri(key)
