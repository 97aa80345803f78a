"""modules/compute's script-job role (what a script job's code runs as on AWS) against the local one.

Static: the module's HCL read with python-hcl2. The role's S3 statement, with the bucket
substituted, is the one the local stack's emulator enforces (``interlinked.local.identities
.script_job_role_policy``, tested against the emulator in ``tests/integration/test_emulator_iam.py``);
only the flow-run role may assume it; and the flow runs' environment names it under the variable
the flow reads (``flows.script_jobs.scoped.ROLE_ENV``). The role is the ``script_job`` entry of the
module's session roles (``tf_harness.check_session_role``). That a script really runs as this role is
tested on the applied stack in ``test_script_job_on_terraform_stack.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tf_harness import (
    COMPUTE_DIR,
    assert_uses_key_statement,
    check_session_role,
    hcl_locals,
    policy_documents,
)

from flows.script_jobs.scoped import ROLE_ENV
from interlinked.local.identities import script_job_role_policy

pytestmark = pytest.mark.terraform

BUCKET = "lab-data"


def test_the_role_reaches_the_script_job_keys_the_local_role_does_and_nothing_more():
    document = policy_documents(COMPUTE_DIR / "main.tf")["script_job"]
    statements = document["statement"]
    (s3,) = [statement for statement in statements if statement["sid"] == "ScriptJobKeys"]
    prefixes = hcl_locals(COMPUTE_DIR / "main.tf")["script_job_prefixes"]
    planned = sorted(f"arn:aws:s3:::{BUCKET}/{prefix}*" for prefix in prefixes)
    assert (
        s3["resources"]
        == '${[for prefix in local.script_job_prefixes : "${var.script_job_bucket_arn}/${prefix}*"]}'
    )
    (local,) = script_job_role_policy(SimpleNamespace(data_bucket=BUCKET))["Statement"]
    assert sorted(local["Resource"]) == planned
    assert sorted(s3["actions"]) == sorted(local["Action"])
    # Anything else is the bucket's KMS key, only when one is given.
    assert len(statements) == 1
    assert_uses_key_statement(document)


def test_only_the_flow_run_role_assumes_it_and_flow_runs_are_told_its_arn():
    document = check_session_role(
        "script_job",
        name="script-job",
        env=ROLE_ENV,
        create="create_script_job_role",
        assume_sid="AssumeScriptJobRole",
    )
    assert {statement["sid"] for statement in document["statement"]} == {"ScriptJobKeys"}
