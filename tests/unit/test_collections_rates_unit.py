"""flows.collections.progress, the one throughput and ETA of `tasks status` and the drain's artifacts:
done-per-minute over a window and the ETA, from per-minute buckets (pure arithmetic; the stores' buckets are tested in tests/collections/test_collections_progress.py)."""

from __future__ import annotations

import pytest

from flows.collections.model import CollectionStatus
from flows.collections.progress import estimate, format_eta, rate

# 10:00:30 on some day: half of the current minute has passed.
NOW = 29_000_000 * 60 + 30
CURRENT = 29_000_000


def test_rate_counts_the_window_and_the_passed_part_of_this_minute():
    buckets = {
        CURRENT: (5, 1),  # this minute, half of it passed
        CURRENT - 4: (10, 0),
        CURRENT - 5: (100, 0),  # the window (5 minutes back from :30) starts in it: counts whole
        CURRENT - 6: (1000, 0),  # before the window: left out
        CURRENT + 1: (7, 0),  # a clock ahead of ours: not in the window
    }
    finished, done, minutes = rate(buckets, now=NOW, window_minutes=5)
    assert (finished, done) == (116, 115)
    assert minutes == pytest.approx(5.5)


def test_rate_of_a_collection_that_began_finishing_within_the_window():
    # Finishing began two minutes ago: averaged over those 2.5 minutes, not over the 10 of the window.
    buckets = {CURRENT - 2: (30, 0), CURRENT - 1: (60, 0), CURRENT: (30, 0)}
    finished, _, minutes = rate(buckets, now=NOW, window_minutes=10)
    assert finished == 120 and minutes == pytest.approx(2.5)
    # Empty buckets (a store may return zero rows) do not move the start.
    finished, _, minutes = rate({**buckets, CURRENT - 8: (0, 0)}, now=NOW, window_minutes=10)
    assert finished == 120 and minutes == pytest.approx(2.5)


def test_a_window_shorter_than_a_minute_still_covers_the_minute_it_starts_in():
    finished, _, minutes = rate({CURRENT - 1: (60, 0), CURRENT: (30, 0)}, now=NOW, window_minutes=1)
    assert finished == 90 and minutes == pytest.approx(1.5)


def test_estimate_extrapolates_what_is_left():
    status = CollectionStatus("step", todo=80, locked=10, done=30, failed=2, blocked=5)
    buckets = {CURRENT - minute: (4, 0) for minute in range(10)}  # 4 a minute for 10 minutes
    progress = estimate("step", status, buckets, now=CURRENT * 60, window_minutes=10)
    assert progress.finished == 40 and progress.remaining == 90  # blocked tasks are not waited for
    assert progress.per_minute == pytest.approx(40 / 9)
    assert progress.eta_seconds == pytest.approx(90 / (40 / 9) * 60)
    assert progress.as_dict()["remaining"] == 90


def test_estimate_without_a_rate_or_without_work_left():
    idle = estimate("step", CollectionStatus("step", todo=3), {}, now=NOW, window_minutes=10)
    assert idle.per_minute == 0 and idle.eta_seconds is None
    finished = estimate("step", CollectionStatus("step", done=3), {CURRENT: (3, 0)}, now=NOW)
    assert finished.eta_seconds == 0.0


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        rate({}, now=NOW, window_minutes=0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "done"), (12.4, "12s"), (250, "4m 10s"), (11_100, "3h 05m")],
)
def test_format_eta(seconds, text):
    assert format_eta(seconds) == text
