"""Throughput and ETA of a collection: the one way they are computed, for ``tasks status`` (CLI
and ``--watch``), ``tasks drain --wait`` and the drain's collection status artifact.

Every store keeps, next to its per-state counters, a count of tasks *finished* (``done`` or finally
``failed``) per minute and collection, moved by the same write that finishes a task
(:meth:`~flows.collections.store.TaskStore.finished_per_minute`; PostgreSQL and DynamoDB alike).
:func:`progress` reads the buckets of the window (one query, no task is read: the same cost at
100,000 tasks as at 10) and the counters, and gives the rate and the time left at that rate.

The rate is what finished since the window's start over the time since then, where the start is
the first minute of the window or, when the collection only began finishing later, the minute of
its first finish in the window (a drain that started 30 s ago is not averaged over 10 minutes).
Minutes count whole at the start (their count is whole), the current one up to now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flows.collections.model import CollectionStatus
from flows.collections.store import TaskStore

#: Minutes of history the rate is taken over unless told otherwise.
DEFAULT_WINDOW_MINUTES = 10


@dataclass(frozen=True)
class Progress:
    """Done-per-minute over a recent window and the ETA of what is left at that rate.

    ``per_minute`` counts every finished task (done or failed: both leave the to-do list);
    ``done_per_minute`` only the successful ones. ``eta_seconds`` is None when nothing finished in
    the window (no rate to extrapolate) and 0 when nothing is left. ``remaining`` is todo + locked
    (blocked tasks wait on a failure and are not counted: they will not finish by themselves).
    """

    collection: str
    window_minutes: float
    finished: int
    done: int
    per_minute: float
    done_per_minute: float
    remaining: int
    eta_seconds: float | None

    @property
    def per_second(self) -> float:
        """Tasks finished per second (``tasks status``'s ``throughput``)."""
        return self.per_minute / 60

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_minutes": self.window_minutes,
            "finished": self.finished,
            "done": self.done,
            "per_minute": self.per_minute,
            "done_per_minute": self.done_per_minute,
            "remaining": self.remaining,
            "eta_seconds": self.eta_seconds,
        }


def rate(
    buckets: Mapping[int, tuple[int, int]],
    *,
    now: float,
    window_minutes: float = DEFAULT_WINDOW_MINUTES,
) -> tuple[int, int, float]:
    """``(finished, done, minutes covered)`` of the per-minute ``buckets`` (minute since the epoch
    -> ``(done, failed)``) of the window ending at ``now`` (seconds since the epoch): from the
    minute ``window_minutes`` before ``now`` (whole), or from the first minute with a finish in
    it if later, up to ``now``. Buckets after ``now``'s minute (a clock ahead) are left out."""
    if window_minutes <= 0:
        raise ValueError("window_minutes must be positive")
    current = math.floor(now / 60)
    first = math.floor((now - window_minutes * 60) / 60)
    finished = done = 0
    start = current
    for minute, (done_n, failed_n) in buckets.items():
        if first <= minute <= current and done_n + failed_n:
            finished += done_n + failed_n
            done += done_n
            start = min(start, minute)
    covered = (now - start * 60) / 60
    return finished, done, max(covered, 1 / 60)


def estimate(
    collection: str,
    status: CollectionStatus,
    buckets: Mapping[int, tuple[int, int]],
    *,
    now: float,
    window_minutes: float = DEFAULT_WINDOW_MINUTES,
) -> Progress:
    """The :class:`Progress` of ``collection`` from its status counters and finished buckets."""
    finished, done, minutes = rate(buckets, now=now, window_minutes=window_minutes)
    per_minute = finished / minutes
    remaining = status.todo + status.locked
    if remaining == 0:
        eta: float | None = 0.0
    elif per_minute > 0:
        eta = remaining / per_minute * 60
    else:
        eta = None
    return Progress(
        collection=collection,
        window_minutes=window_minutes,
        finished=finished,
        done=done,
        per_minute=per_minute,
        done_per_minute=done / minutes,
        remaining=remaining,
        eta_seconds=eta,
    )


def progress(
    store: TaskStore,
    collection: str | None = None,
    *,
    window_minutes: float = DEFAULT_WINDOW_MINUTES,
    status: Mapping[str, CollectionStatus] | None = None,
) -> dict[str, Progress]:
    """Throughput and ETA of ``collection`` (or every collection), by name.

    ``status`` reuses a ``store.status(...)`` result the caller already has (the CLI prints both);
    otherwise it is read here. Raises ``UnknownCollection`` for a named unknown collection.
    """
    if status is None:
        status = store.status(collection, failures=0)
    result = {}
    for name, counts in status.items():
        if collection is not None and name != collection:
            continue
        now, buckets = store.finished_per_minute(name, minutes=math.ceil(window_minutes) + 1)
        result[name] = estimate(name, counts, buckets, now=now, window_minutes=window_minutes)
    return result


def format_eta(seconds: float | None) -> str:
    """``"3h 05m"``, ``"4m 10s"``, ``"12s"``, ``"done"`` or ``"-"`` (no rate yet)."""
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "done"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
