"""infra/terraform/scripts/package_lambda.py: deterministic bridge zips."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
import zipfile

import pytest
from tf_harness import PACKAGE_SCRIPT

pytestmark = pytest.mark.terraform


def make_sources(root):
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "handler.py").write_text("def handler(event, context):\n    return event\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "pkg" / "tests").mkdir()
    (root / "pkg" / "tests" / "test_x.py").write_text("")
    (root / "other.py").write_text("X = 1\n")


def test_same_sources_same_bytes(tmp_path, package_lambda_module):
    src = tmp_path / "src"
    make_sources(src)
    first = tmp_path / "a.zip"
    second = tmp_path / "b.zip"
    assert package_lambda_module.main(["--base-dir", str(src), "-o", str(first), "pkg", "other.py"]) == 0
    # Different mtimes and a later build must not change a byte.
    later = time.time() + 3600
    for path in src.rglob("*"):
        os.utime(path, (later, later))
    assert package_lambda_module.main(["--base-dir", str(src), "-o", str(second), "pkg", "other.py"]) == 0
    assert first.read_bytes() == second.read_bytes()

    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert names == ["other.py", "pkg/__init__.py", "pkg/sub/handler.py"]
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {(info.external_attr >> 16) & 0o777 for info in zf.infolist()} == {0o644}
        assert zf.read("pkg/sub/handler.py").startswith(b"def handler")


def test_content_change_changes_hash(tmp_path, package_lambda_module):
    src = tmp_path / "src"
    make_sources(src)
    out = tmp_path / "a.zip"
    entries = package_lambda_module.collect(src, ["pkg"])
    before = package_lambda_module.build(out, entries)
    (src / "pkg" / "sub" / "handler.py").write_text("def handler(event, context):\n    return None\n")
    after = package_lambda_module.build(out, package_lambda_module.collect(src, ["pkg"]))
    assert before != after
    assert after == base64.b64encode(hashlib.sha256(out.read_bytes()).digest()).decode()


def test_cli_defaults_package_the_repository(tmp_path):
    out = tmp_path / "bridge.zip"
    proc = subprocess.run(
        [sys.executable, str(PACKAGE_SCRIPT), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    digest = base64.b64encode(hashlib.sha256(out.read_bytes()).digest()).decode()
    assert f"sha256(base64)={digest}" in proc.stdout  # what filebase64sha256() will compute
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    assert {"interlinked/__init__.py", "flows/__init__.py", "blocks/__init__.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_missing_source_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(PACKAGE_SCRIPT), "--output", str(tmp_path / "x.zip"), "no-such-dir"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "no-such-dir" in proc.stderr
    assert not (tmp_path / "x.zip").exists()


def test_extra_root_adds_dependencies_at_the_zip_root(tmp_path, package_lambda_module):
    src = tmp_path / "src"
    make_sources(src)
    deps = tmp_path / "deps"
    (deps / "dep" / "__pycache__").mkdir(parents=True)
    (deps / "dep" / "__init__.py").write_text("VERSION = 1\n")
    (deps / "dep" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (deps / "dep-1.0.dist-info").mkdir()
    (deps / "dep-1.0.dist-info" / "METADATA").write_text("Name: dep\n")
    out = tmp_path / "a.zip"
    args = ["--base-dir", str(src), "--extra-root", str(deps), "-o", str(out), "pkg"]
    assert package_lambda_module.main(args) == 0
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert names == sorted(names)
    assert {"dep/__init__.py", "dep-1.0.dist-info/METADATA", "pkg/sub/handler.py"} <= set(names)
    assert not [n for n in names if n.endswith(".pyc")]


def test_the_script_api_zip_runs_its_handler_with_nothing_but_itself(tmp_path):
    """`--installed pydantic` makes the script API zip self-sufficient beyond boto3: its handler
    imports and validates a job description in an interpreter without site-packages (as the Lambda
    runtime, which has boto3 but no pydantic or Prefect)."""
    package = tmp_path / "script_api.zip"
    subprocess.run(
        [sys.executable, str(PACKAGE_SCRIPT), "--installed", "pydantic", "-o", str(package)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    root = tmp_path / "unzipped"
    with zipfile.ZipFile(package) as zf:
        names = zf.namelist()
        zf.extractall(root)
    assert "interlinked/script_api_lambda.py" in names and "pydantic_core/__init__.py" in names
    assert not [name for name in names if name.startswith(("prefect/", "boto3/"))]
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import interlinked.script_api_lambda;"
        "from flows.script_jobs.spec import parse_job_spec;"
        "print(parse_job_spec({'func': ['f'], 'name': ['n'], 'script': ['t.r']}).language)"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "r"), proc.stderr[-2000:]


def test_installed_names_a_missing_distribution(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(PACKAGE_SCRIPT),
            "--installed",
            "no-such-dist-h14",
            "-o",
            str(tmp_path / "x.zip"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "no-such-dist-h14" in proc.stderr
