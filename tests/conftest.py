"""Session-wide fixtures. The environment of the test stack is set by importing ``_stack``."""

from __future__ import annotations

import pytest

from _stack import STACK, run_cli


@pytest.fixture(scope="session")
def stack_handle():
    yield STACK
    if STACK.description is not None:
        run_cli("down")


@pytest.fixture
def stack(stack_handle) -> dict:
    """The running local stack's `interlinked env --json` description."""
    return stack_handle.ensure_up()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`), a test module runs whole on one worker.

    Each worker process imports ``_stack`` and so has its own local stack (free ports, its own
    state directory): modules spread over the workers, while a module's tests keep sharing their
    module-scoped fixtures. The Terraform tests share one `terraform apply` per session, so they
    form a single group.
    """
    for item in items:
        path = item.path.as_posix()
        group = "terraform" if "/tests/terraform/" in path else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
