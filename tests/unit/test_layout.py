"""The house rules of the layout, checked on the source (README, "Layout").

Dependencies point one way: ``interlinked/`` → ``flows/`` → ``analyses/`` and ``blocks/``.
``analyses/`` imports nothing of ours and neither Prefect nor boto3; ``blocks/`` never imports
``flows/`` or ``interlinked/``; ``flows/`` never imports ``interlinked/``; the Lambda front ends
(the bridge, the script API) reach only the standard library, boto3, what their zip carries and
Lambda-safe modules of ours; and no group of modules imports each other in a circle (imports
inside functions count too).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("analyses", "blocks", "flows", "interlinked")
OURS = set(PACKAGES)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path | None = None) -> set[str]:
    """Every module ``name`` imports (top level and inside functions; not under TYPE_CHECKING),
    resolved to the most specific module of ours that exists, or the top-level name otherwise."""
    tree = ast.parse((path or MODULES[name]).read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    is_package = (path or MODULES[name]).name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for candidate in candidates:
            target = _resolve(candidate)
            if target:
                targets.add(target)
                break
    targets.discard(name)
    return targets


def _resolve(dotted: str) -> str | None:
    if dotted.split(".")[0] not in OURS:
        return dotted.split(".")[0] or None
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def graph() -> dict[str, set[str]]:
    return {name: {target for target in imports_of(name) if target in MODULES} for name in MODULES}


def forbidden_imports(rules: dict[str, set[str]]) -> list[str]:
    """``module -> import`` lines that break ``rules`` (package → top-level names it may not import)."""
    broken = []
    for name in sorted(MODULES):
        banned = rules.get(name.split(".")[0], set())
        for target in sorted(imports_of(name)):
            if target.split(".")[0] in banned:
                broken.append(f"{name} imports {target}")
    return broken


RULES = {
    "analyses": {"blocks", "flows", "interlinked", "prefect", "prefect_aws", "boto3", "botocore"},
    "blocks": {"flows", "interlinked", "analyses"},
    "flows": {"interlinked"},
}


def test_dependencies_point_one_way():
    assert forbidden_imports(RULES) == []


def test_the_rules_catch_a_forbidden_import(tmp_path, monkeypatch):
    """A module that breaks a rule is reported (the check itself can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from interlinked.settings import get_settings\n    import boto3\n")
    monkeypatch.setitem(MODULES, "analyses._bad", bad)
    assert forbidden_imports(RULES) == [
        "analyses._bad imports boto3",
        "analyses._bad imports interlinked.settings",
    ]


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other in a circle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_circles():
    assert strongly_connected(graph()) == []


def test_a_circle_is_found():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAMBDA_SAFE_THIRD_PARTY = {"boto3", "botocore"}


# The jobs Lambda uses flows.jobs.client's JobService; the client's Prefect dispatcher, run context
# and default service (blocks.postgres, the Prefect-block S3 store) import Prefect inside functions
# the Lambda never calls (tests/unit/test_jobs_lambda.py runs it with Prefect blocked).
JOBS_LAMBDA_NEVER_CALLED = {
    "flows.jobs.client imports prefect",
    "blocks.postgres imports prefect",
    "blocks.postgres imports psycopg_pool",
    "blocks.postgres imports pydantic",
    "blocks.postgres imports psycopg",
    "blocks.clients imports prefect_aws",
    "blocks.s3 imports prefect_aws",
}


@pytest.mark.parametrize(
    ("entry", "packaged", "never_called"),
    [
        ("interlinked.bridge.lambda_handler", set(), set()),
        # submitjob validates with flows.script_jobs.spec: the package carries pydantic
        # (package_lambda.py --installed pydantic), never Prefect.
        ("interlinked.script_api_lambda", {"pydantic"}, set()),
        # package_lambda.py --installed pydantic-settings --installed psycopg --installed psycopg-binary
        (
            "interlinked.jobs_lambda",
            {"pydantic", "pydantic_settings", "psycopg"},
            JOBS_LAMBDA_NEVER_CALLED,
        ),
    ],
)
def test_the_lambda_reaches_only_the_standard_library_and_boto3(entry, packaged, never_called):
    """The Lambda runtime has boto3 but no Prefect, pydantic or psutil (only what its zip carries)."""
    seen: set[str] = set()
    pending = [entry]
    outside: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for target in imports_of(name):
            if target in MODULES:
                pending.append(target)
                # importing a submodule runs its packages' __init__ too
                parent = target.rsplit(".", 1)[0] if "." in target else None
                while parent:
                    pending.append(parent)
                    parent = parent.rsplit(".", 1)[0] if "." in parent else None
            elif target not in sys.stdlib_module_names and target not in LAMBDA_SAFE_THIRD_PARTY | packaged:
                outside.add(f"{name} imports {target}")
    assert sorted(outside - never_called) == []
