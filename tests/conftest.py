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
