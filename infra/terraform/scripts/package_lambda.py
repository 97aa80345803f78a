#!/usr/bin/env python3
"""Build the event-bridge Lambda zip deterministically (Python stdlib only).

The Terraform stack has no archive provider, so the zip is built before plan/apply and handed in
as ``bridge_package_path``; Terraform hashes it with ``filebase64sha256``. Building the same
sources twice gives the same bytes (fixed timestamps, sorted entries, fixed permissions, fixed
compression level), so the function is only redeployed when the code changes.

    python infra/terraform/scripts/package_lambda.py                  # interlinked flows blocks
    python infra/terraform/scripts/package_lambda.py -o /tmp/b.zip interlinked
    python infra/terraform/scripts/package_lambda.py --base-dir /src pkg_a pkg_b/module.py

Sources are directories or files, relative to --base-dir (default: the repository root); they
keep their relative paths inside the zip, so ``interlinked/bridge/lambda_handler.py`` is importable
as ``interlinked.bridge.lambda_handler``. Byte-code caches, tests and VCS data are left out.
Third-party packages the Lambda runtime lacks (it ships boto3) go in with --extra-root DIR, a
directory filled by ``pip install --target DIR ...``: its content lands at the zip root. Or with
--installed NAME: that distribution and its requirements as installed for the interpreter running
this script (offline; compiled parts such as pydantic-core only fit a Lambda of the same Python
version and architecture, e.g. python3.11 on x86_64 Linux). The script API Lambda needs pydantic:

    python infra/terraform/scripts/package_lambda.py --installed pydantic -o infra/terraform/build/script_api.zip

Prints the zip path and its base64 SHA-256 (what Terraform's filebase64sha256 returns).
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import os
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SOURCES = ("interlinked", "flows", "blocks")
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "build" / "bridge.zip"

# 1980-01-01 00:00:00 is the earliest timestamp a zip entry can hold.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
DIR_MODE = 0o755

EXCLUDED_DIRS = {
    "__pycache__",
    ".git",
    ".hg",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".venv",
    "node_modules",
    "tests",
    "*.egg-info",
    "*.dist-info",
}
EXCLUDED_FILES = {"*.pyc", "*.pyo", ".DS_Store", "*.swp", "*~"}
# Installed dependencies keep their tests and *.dist-info (importlib.metadata reads it).
DEPENDENCY_EXCLUDED_DIRS = {"__pycache__"}


def _excluded(name: str, patterns: set[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def collect(
    base_dir: Path, sources: list[str], excluded_dirs: set[str] = EXCLUDED_DIRS
) -> list[tuple[str, Path]]:
    """Return sorted (archive name, file path) pairs for the given sources."""
    entries: dict[str, Path] = {}
    for source in sources:
        path = (base_dir / source).resolve()
        if not path.exists():
            raise FileNotFoundError(f"source {source!r} not found under {base_dir}")
        if path.is_file():
            files = [path]
        else:
            files = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not _excluded(d, excluded_dirs))
                files.extend(Path(root) / n for n in names if not _excluded(n, EXCLUDED_FILES))
        for file in files:
            try:
                arcname = file.relative_to(base_dir.resolve()).as_posix()
            except ValueError:
                # A source outside base_dir keeps its path relative to its own parent.
                arcname = file.relative_to(path.parent).as_posix()
            entries[arcname] = file
    return sorted(entries.items())


def installed(names: list[str]) -> dict[str, Path]:
    """(archive name → file) of installed distributions and their requirements (not extras).

    A requirement under an environment marker that is not installed (a backport for older
    Pythons) is skipped; any other missing distribution is an error."""
    entries: dict[str, Path] = {}
    pending = [(name, False) for name in names]
    seen: set[str] = set()
    while pending:
        name, optional = pending.pop()
        canonical = re.sub(r"[-_.]+", "-", name).lower()
        if canonical in seen:
            continue
        seen.add(canonical)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if optional:
                continue
            raise FileNotFoundError(f"distribution {name!r} is not installed for {sys.executable}") from None
        for file in dist.files or []:
            arcname = file.as_posix()
            if arcname.startswith("..") or "__pycache__" in file.parts or arcname.endswith((".pyc", ".pyo")):
                continue
            path = Path(dist.locate_file(file))
            if path.is_file():
                entries[arcname] = path
        for requirement in dist.requires or []:
            requirement, _, marker = requirement.partition(";")
            if "extra" in marker:
                continue
            found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            if found:
                pending.append((found.group(1), bool(marker.strip())))
    return entries


def build(output: Path, entries: list[tuple[str, Path]]) -> str:
    """Write the zip and return its base64-encoded SHA-256."""
    if not entries:
        raise ValueError("nothing to package")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for arcname, file in entries:
            info = zipfile.ZipInfo(arcname, date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr carries the mode
            info.external_attr = (0o100000 | FILE_MODE) << 16
            zf.writestr(info, file.read_bytes(), compresslevel=9)
    os.replace(tmp, output)
    return base64.b64encode(hashlib.sha256(output.read_bytes()).digest()).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources",
        nargs="*",
        default=list(DEFAULT_SOURCES),
        help=f"directories or files to package (default: {' '.join(DEFAULT_SOURCES)})",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=f"zip to write (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--extra-root",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="directory whose content goes to the zip root (pip install --target DIR ...); repeatable",
    )
    parser.add_argument(
        "--installed",
        action="append",
        default=[],
        metavar="NAME",
        help="an installed distribution (and its requirements) to put at the zip root; repeatable",
    )
    parser.add_argument(
        "--base-dir",
        type=Path,
        default=REPO_ROOT,
        help=f"directory the sources are relative to (default: {REPO_ROOT})",
    )
    args = parser.parse_args(argv)
    try:
        merged: dict[str, Path] = {}
        for root in args.extra_root:
            merged.update(collect(root, ["."], DEPENDENCY_EXCLUDED_DIRS))
        merged.update(installed(args.installed))
        merged.update(collect(args.base_dir, args.sources))  # our code wins over a dependency
        entries = sorted(merged.items())
        digest = build(args.output, entries)
    except (FileNotFoundError, ValueError) as exc:
        print(f"package_lambda: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output} {len(entries)} files sha256(base64)={digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
