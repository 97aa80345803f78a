"""Subcommands of `interlinked` that live outside `interlinked/cli.py`.

``register(subparsers)`` adds them to the CLI's argparse subparsers; each sets ``func``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `experiments import`, `request` (the analysis service) and `submissions upload|watch`."""
    from interlinked.commands import experiments, submissions

    experiments.register(subparsers)
    submissions.register(subparsers)


__all__ = ["register"]
