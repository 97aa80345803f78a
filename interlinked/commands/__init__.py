"""The command groups of `interlinked`, one module each; ``interlinked.cli`` only parses and dispatches.

- :mod:`.stack` — ``up``, ``down``, ``env``, ``demo`` (the local stack);
- :mod:`.script_jobs` — ``submit``, ``status`` (``flows.script_jobs.client``);
- :mod:`.experiments` — ``experiments import``, ``request`` (``flows.analysis.client``);
- :mod:`.submissions` — ``submissions upload | watch`` (``flows.submissions.client``);
- :mod:`.jobs` — ``jobs create | dispatch | list | show | cancel | retry`` (``flows.jobs.client``);
- :mod:`.groups` — ``groups add`` (a group's IAM identity, ``interlinked.local.identities``);
- :mod:`.tasks` — ``tasks add | status | reset | retry-failed | delete`` (``flows.collections.client``);
- :mod:`.common` — exit codes, the error line, reading a JSON argument, the stack's Prefect defaults.

Each group has ``register(subparsers)``, which adds its commands and sets each one's ``func``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every command group, in the order ``interlinked --help`` lists them."""
    from interlinked.commands import experiments, groups, jobs, script_jobs, stack, submissions, tasks

    for group in (stack, script_jobs, jobs, experiments, submissions, groups, tasks):
        group.register(subparsers)


__all__ = ["register"]
