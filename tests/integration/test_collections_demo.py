"""The task-collections demo (`examples/collections_demo.py`) on the local stack, small: two steps
with dependencies, failures on purpose, one drain stopped with SIGTERM mid-drain whose tasks the
other drains finish, and the final counts per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _stack import ROOT, TEST_ENV

pytestmark = pytest.mark.integration


def test_demo_two_steps_with_failures_and_a_sigterm(stack):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "collections_demo.py"),
            "--samples",
            "80",
            "--fail-every",
            "20",
            "--drains",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **TEST_ENV},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    # 80 samples, one in 20 fails in step A (4: their step-B tasks are blocked), 4 others fail in B.
    assert outcome["counts"] == {
        "A": {"done": 76, "failed": 4, "blocked": 0, "todo": 0, "locked": 0},
        "B": {"done": 72, "failed": 4, "blocked": 4, "todo": 0, "locked": 0},
    }
    assert outcome["stopped_mid_drain"] is True
    assert "SIGTERM to drain 1" in result.stderr
