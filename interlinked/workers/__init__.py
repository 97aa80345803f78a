"""Prefect worker types of interlinked, registered through the `prefect.collections` entry point."""

from interlinked.workers.batch import BatchWorker
from interlinked.workers.warm import WarmProcessWorker

__all__ = ["BatchWorker", "WarmProcessWorker"]
