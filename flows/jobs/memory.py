"""Memory escalation: an execution that failed out of memory is followed by one with twice the
memory, up to a cap — and, on the local pool, a memory limit that is really enforced.

- :func:`is_out_of_memory` — whether an ended execution failed with the code ``OUT_OF_MEMORY``
  (the failure classification sets it; a reason text that carries the code counts too);
- :func:`memory_for_next` — the memory of the next execution: the estimate (or the default) at first,
  then twice the last execution's after an OUT_OF_MEMORY failure, never above the job type's cap
  (``maxMemoryMiB`` in ``job_types.json``, else ``INTERLINKED_JOBS_MAX_MEMORY_MIB``);
- :class:`MemoryWatch` — the local enforcement. ECS and Batch enforce a task's memory with its
  cgroup; a local run gets ``INTERLINKED_MEMORY_LIMIT_MIB`` in its environment (a job variable of
  the dispatch) and the script runner watches the resident memory of the script's whole process
  group, killing the group with SIGKILL once it passes the limit — what the kernel's OOM killer
  does to a container. The run then ends with exit code 137 and an ``OUT_OF_MEMORY`` reason.
  Resident memory (not address space, as ``RLIMIT_AS`` would count) is what a container limit
  counts, so runtimes that reserve large address ranges (the JVM, R, OpenBLAS) are not killed
  for memory they never touch.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

from flows.jobs.model import FAILURE, Execution, Job, JobError

OUT_OF_MEMORY = "OUT_OF_MEMORY"
MEMORY_LIMIT_ENV = "INTERLINKED_MEMORY_LIMIT_MIB"
OOM_EXIT_CODE = 137  # 128 + SIGKILL, what a container killed by the OOM killer exits with
_CODE = re.compile(rf"\b{OUT_OF_MEMORY}\b")


def is_out_of_memory(execution: Execution | None) -> bool:
    """Whether ``execution`` ended FAILURE with the code OUT_OF_MEMORY (a ``failureCode`` field when
    the classification recorded one, else the code in its reason)."""
    if execution is None or execution.state != FAILURE:
        return False
    code = getattr(execution, "failure_code", None) or (execution.model_extra or {}).get("failureCode")
    return code == OUT_OF_MEMORY or bool(_CODE.search(execution.failure_reason or ""))


def memory_cap(job_type_entry: dict[str, Any], default_cap: int) -> int:
    """The job type's memory cap in MiB (``maxMemoryMiB`` of its entry, else ``default_cap``)."""
    cap = job_type_entry.get("maxMemoryMiB", default_cap)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 16:
        raise JobError(f"maxMemoryMiB of a job type must be a whole number of MiB ≥ 16, got {cap!r}")
    return cap


def memory_for_next(job: Job, *, default_mib: int, cap_mib: int) -> tuple[int, str]:
    """(MiB for the next execution, why). Refuses (:class:`JobError`) an estimate above the cap."""
    estimate = job.estimations.memory_mib
    if estimate is not None and estimate > cap_mib:
        raise JobError(
            f"estimations.memoryMiB {estimate} is above the cap of job type {job.job_type!r} "
            f"({cap_mib} MiB; maxMemoryMiB in job_types.json or INTERLINKED_JOBS_MAX_MEMORY_MIB)"
        )
    base = estimate or default_mib
    why = f"{base} MiB from estimations.memoryMiB" if estimate else f"{base} MiB (default, no memoryMiB)"
    last = job.executions[-1] if job.executions else None
    if not is_out_of_memory(last):
        return base, why
    before = int((last.resources or {}).get("memoryMiB") or base)
    doubled = before * 2
    if before >= cap_mib:
        return cap_mib, f"{cap_mib} MiB: attempt {last.attempt} ran out of memory already at the cap"
    if doubled > cap_mib:
        return cap_mib, f"{cap_mib} MiB: attempt {last.attempt} ran out of memory at {before} MiB (x2 capped)"
    return doubled, f"{doubled} MiB: attempt {last.attempt} ran out of memory at {before} MiB (x2)"


def limit_from_environment(environ: dict[str, str] | None = None) -> int | None:
    """The local memory limit (MiB) this run was dispatched with, or None."""
    text = (environ if environ is not None else os.environ).get(MEMORY_LIMIT_ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise JobError(f"{MEMORY_LIMIT_ENV} must be a whole number of MiB, got {text!r}") from None
    if value < 1:
        raise JobError(f"{MEMORY_LIMIT_ENV} must be positive, got {value}")
    return value


def _group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in process group ``pgid`` (Linux ``/proc``)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            # Fields after the command (which may hold spaces and parentheses): state ppid pgrp ...
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{entry}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return total


class MemoryWatch:
    """Kill process group ``pgid`` (SIGKILL) once its resident memory passes ``limit_mib``.

    Samples every ``interval`` seconds in a daemon thread; ``killed`` tells whether it acted and
    ``peak_mib`` the largest resident size it saw. Use as a context manager around the wait.
    """

    def __init__(
        self,
        pgid: int,
        limit_mib: int,
        *,
        interval: float = 0.05,
        measure: Callable[[int], int] = _group_rss_bytes,
    ):
        self.pgid = pgid
        self.limit_mib = limit_mib
        self.interval = interval
        self.killed = False
        self.peak_mib = 0.0
        self.at_kill_mib = 0.0
        self._measure = measure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"memory-watch-{pgid}", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        limit = self.limit_mib * 1024 * 1024
        while not self._stop.is_set():
            used = self._measure(self.pgid)
            self.peak_mib = max(self.peak_mib, used / 1048576)
            if used > limit:
                self.killed = True
                self.at_kill_mib = used / 1048576
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pgid, signal.SIGKILL)
                return
            self._stop.wait(self.interval)

    def reason(self) -> str:
        """The failure reason of a killed run (starts with the code OUT_OF_MEMORY)."""
        return (
            f"{OUT_OF_MEMORY}: the script used {self.at_kill_mib:.0f} MiB, over its memory limit of "
            f"{self.limit_mib} MiB, and was killed (exit code {OOM_EXIT_CODE})"
        )
