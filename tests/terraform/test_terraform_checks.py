"""Static checks of infra/terraform: fmt, init + validate of every configuration, module
conventions (typed and described variables, described outputs, tags everywhere), checkov."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from tf_harness import CONFIG_DIRS, REPO, TF_DIR, blocks, find_checkov, parse, resources

pytestmark = pytest.mark.terraform

MODULE_DIRS = (
    "modules/storage",
    "modules/messaging",
    "modules/compute",
    "modules/bridge",
    "modules/database",
    "modules/tasks_table",
    "modules/script_api",
    "modules/jobs_api",
    "modules/group",
)
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def tf_files(*rel_dirs: str) -> list[Path]:
    dirs = rel_dirs or (".",)
    return sorted(p for d in dirs for p in (TF_DIR / d).glob("*.tf"))


def all_tf_files() -> list[Path]:
    return sorted(p for p in TF_DIR.rglob("*.tf") if ".terraform" not in p.parts)


################################################################################
# terraform fmt / init / validate
################################################################################


def test_fmt(terraform):
    proc = terraform.run(TF_DIR, "fmt", "-check", "-recursive", "-diff", "-no-color", check=False)
    assert proc.returncode == 0, f"terraform fmt -check found unformatted files:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("rel", CONFIG_DIRS)
def test_init_and_validate(validated_workspace, rel):
    proc = validated_workspace.results[rel]
    assert proc.stdout.strip(), f"{rel}: no output from terraform:\n{proc.stderr}"
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{rel}: terraform init failed:\n{proc.stdout}\n{proc.stderr}")
    problems = [
        f"{d['severity']}: {d['summary']} {d.get('detail', '')} ({d.get('range', {}).get('filename', '')})"
        for d in report.get("diagnostics", [])
    ]
    assert report["valid"], f"{rel} is not valid:\n" + "\n".join(problems)
    assert report["warning_count"] == 0, f"{rel} has warnings:\n" + "\n".join(problems)


################################################################################
# Conventions
################################################################################


@pytest.mark.parametrize("rel", (".", *MODULE_DIRS, "examples/local", "examples/aws"))
def test_standard_files(rel):
    present = {p.name for p in (TF_DIR / rel).glob("*.tf")}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= present, f"{rel}: {sorted(present)}"


@pytest.mark.parametrize("rel", (".", *MODULE_DIRS, "examples/local", "examples/aws"))
def test_versions(rel):
    terraform_blocks = parse(TF_DIR / rel / "versions.tf")["terraform"]
    assert len(terraform_blocks) == 1
    block = terraform_blocks[0]
    assert block["required_version"] == ">= 1.5"
    providers = block["required_providers"][0]
    assert providers == {"aws": {"source": "hashicorp/aws", "version": "~> 5.0"}}


def test_mirror_holds_a_matching_aws_provider(terraform):
    versions = sorted(p.name for p in terraform.plugin_dir.glob("*/hashicorp/aws/*") if p.is_dir())
    assert any(v.split(".")[0] == "5" for v in versions), f"no 5.x hashicorp/aws in the mirror: {versions}"


def test_variables_are_typed_and_described():
    missing = []
    for path in all_tf_files():
        for name, body in blocks(path, "variable"):
            for key in ("type", "description"):
                if not body.get(key):
                    missing.append(f"{path.relative_to(TF_DIR)}: variable {name} has no {key}")
    assert not missing, "\n".join(missing)


def test_outputs_are_described():
    missing = [
        f"{path.relative_to(TF_DIR)}: output {name}"
        for path in all_tf_files()
        for name, body in blocks(path, "output")
        if not body.get("description")
    ]
    assert not missing, "outputs without description:\n" + "\n".join(missing)


def test_modules_have_a_tags_variable():
    for rel in (".", *MODULE_DIRS):
        names = {name for name, _ in blocks(TF_DIR / rel / "variables.tf", "variable")}
        assert "tags" in names, f"{rel} has no tags variable"


@pytest.fixture(scope="module")
def taggable_types(validated_workspace, terraform) -> set[str]:
    """Resource types of the aws provider that have a `tags` argument (from the provider schema)."""
    proc = terraform.run(validated_workspace.root, "providers", "schema", "-json", timeout=300)
    schemas = json.loads(proc.stdout)["provider_schemas"]
    aws = next(v for k, v in schemas.items() if k.endswith("hashicorp/aws"))
    return {
        rtype
        for rtype, schema in aws["resource_schemas"].items()
        if "tags" in schema["block"].get("attributes", {})
    }


def test_every_taggable_resource_merges_tags(taggable_types):
    offenders = []
    for path in tf_files(".", *MODULE_DIRS):
        for rtype, name, body in resources(path):
            if rtype not in taggable_types:
                continue
            tags = str(body.get("tags", ""))
            if "var.tags" not in tags and "local.tags" not in tags:
                offenders.append(f"{path.relative_to(TF_DIR)}: {rtype}.{name} tags = {tags or '(none)'}")
    assert not offenders, "taggable resources without the tags variable:\n" + "\n".join(offenders)


def test_local_example_targets_the_emulator():
    provider = parse(TF_DIR / "examples/local/main.tf")["provider"][0]["aws"]
    assert provider["access_key"] == provider["secret_key"] == "test"
    assert provider["region"] == "us-east-1"
    for flag in (
        "s3_use_path_style",
        "skip_credentials_validation",
        "skip_requesting_account_id",
        "skip_metadata_api_check",
    ):
        assert provider[flag] is True, flag
    endpoints = provider["endpoints"][0]
    needed = {
        "s3",
        "sqs",
        "sns",
        "iam",
        "sts",
        "ecs",
        "batch",
        "lambda",
        "cloudwatchlogs",
        "ec2",
        "secretsmanager",
        "kms",
    }
    assert needed <= set(endpoints), needed - set(endpoints)
    assert set(endpoints.values()) == {"${var.aws_endpoint_url}"}
    default = dict(blocks(TF_DIR / "examples/local/variables.tf", "variable"))["aws_endpoint_url"]["default"]
    assert default == "http://127.0.0.1:5055"


################################################################################
# checkov
################################################################################


def test_checkov_skips_carry_a_reason():
    bad = []
    for path in all_tf_files():
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if match and len((match.group(2) or "").strip()) < 20:
                bad.append(f"{path.relative_to(TF_DIR)}:{lineno}: {line.strip()}")
    assert not bad, "checkov skips need a written reason (#checkov:skip=ID:reason):\n" + "\n".join(bad)


def test_checkov_lock_is_hashed_without_urls():
    lock = (REPO / "infra" / "checkov-requirements.lock").read_text()
    pins = [line for line in lock.splitlines() if re.match(r"^[A-Za-z0-9_.\-\[\]]+==", line)]
    assert any(line.startswith("checkov==") for line in pins)
    assert "--hash=sha256:" in lock
    assert not [line for line in lock.splitlines() if "://" in line and not line.lstrip().startswith("#")], (
        "the lock must not record download URLs"
    )


def test_checkov(tmp_path):
    checkov = find_checkov()
    if checkov is None:
        pytest.skip(
            "checkov not found in .tools/checkov-venv or on PATH (install: bash infra/install-checkov.sh)"
        )
    proc = subprocess.run(
        [
            checkov,
            "--directory",
            str(TF_DIR),
            "--framework",
            "terraform",
            "--skip-path",
            r"\.terraform",
            "--skip-download",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    try:
        reports = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov did not produce JSON ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']}) {c.get('check_name', '')}"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for r in reports
        for c in r.get("results", {}).get("skipped_checks", [])
        if not (c.get("check_result", {}).get("suppress_comment") or "").strip()
    ]
    assert not unexplained, "checkov skips without a reason:\n" + "\n".join(unexplained)
    used = {
        (c["check_id"], c["file_path"].lstrip("/"))
        for r in reports
        for c in r.get("results", {}).get("skipped_checks", [])
    }
    declared = {
        (match.group(1), path.relative_to(TF_DIR).as_posix())
        for path in all_tf_files()
        for match in SKIP_COMMENT.finditer(path.read_text())
    }
    assert not declared - used, f"stale checkov skips (nothing failed there): {sorted(declared - used)}"
    assert sum(r.get("summary", {}).get("passed", 0) for r in reports) > 100, "checkov checked almost nothing"
