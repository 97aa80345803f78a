"""Prefect worker types of interlinked, registered through the `prefect.collections` entry point."""

from interlinked.workers.warm import WarmProcessWorker

__all__ = ["WarmProcessWorker"]
