"""Why an execution failed: a stable code, a one-line message and the evidence it was read from.

ECS and Batch make the reason hard to read: a task killed for memory can report exit code 0 with
``OutOfMemoryError`` in a container's ``reason``; a Batch time-limit kill can leave no exit code at
all; a Spot reclaim shows up as ``Host EC2 (instance i-…) terminated.``. The functions here read
what each source records — a local exit status, a Python exception, an ECS ``DescribeTasks`` task,
a Batch ``DescribeJobs`` job, a Prefect state — and return a :class:`Failure` whose ``code`` a
program can branch on (retry with more memory, do not retry a code error, ...) and whose
``evidence`` shows a person what it was decided from. Pure: no I/O.

The execution keeps ``failureReason`` as text (the seed's field), ``"CODE: message"``, so
:func:`code_of` reads the code back from any stored reason.
"""

from __future__ import annotations

import re
import traceback as tb
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FailureCode(StrEnum):
    """The stable failure codes (their values never change; new ones may be added)."""

    CODE_ERROR = "CODE_ERROR"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    TIME_LIMIT = "TIME_LIMIT"
    KILLED = "KILLED"
    SPOT_RECLAIM = "SPOT_RECLAIM"
    STUCK = "STUCK"
    INFRASTRUCTURE_NEVER_STARTED = "INFRASTRUCTURE_NEVER_STARTED"
    ORPHANED = "ORPHANED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"


#: What each code means, for ``jobs show`` and the README.
MEANING: dict[FailureCode, str] = {
    FailureCode.CODE_ERROR: "the work raised an error or exited non-zero (see the traceback)",
    FailureCode.OUT_OF_MEMORY: "killed for using more memory than it was given (exit 137 or an OOM reason)",
    FailureCode.TIME_LIMIT: "ran past its time limit and was stopped",
    FailureCode.KILLED: "its process or host was killed from outside (SIGTERM/SIGKILL, host gone)",
    FailureCode.SPOT_RECLAIM: "its Spot capacity was reclaimed by AWS",
    FailureCode.STUCK: "alive but reported no progress within its window; stopped by the sweeper",
    FailureCode.INFRASTRUCTURE_NEVER_STARTED: "its infrastructure never started (Pending/RUNNABLE too long)",
    FailureCode.ORPHANED: "its infrastructure vanished without saying why (worker or host gone)",
    FailureCode.CANCELLED: "cancelled by a user or an operator",
    FailureCode.UNKNOWN: "ended without a reason this system can read",
}

#: Codes after which running the same work again can succeed (the sweeper retries these).
RETRYABLE = frozenset(
    {
        FailureCode.OUT_OF_MEMORY,
        FailureCode.KILLED,
        FailureCode.SPOT_RECLAIM,
        FailureCode.STUCK,
        FailureCode.INFRASTRUCTURE_NEVER_STARTED,
        FailureCode.ORPHANED,
        FailureCode.UNKNOWN,
    }
)


@dataclass(frozen=True)
class Failure:
    """A classified failure: ``code``, a one-line ``message`` and the ``evidence`` (JSON)."""

    code: FailureCode
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The execution's ``failureReason``: ``"CODE: message"``."""
        return f"{self.code.value}: {self.message}"

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "evidence": self.evidence}


# -- what the texts say ----------------------------------------------------------------------------
_OOM = re.compile(
    r"OutOfMemory|out of memory|Container killed due to memory usage|OOMKilled|\bMemoryError\b|"
    r"Cannot allocate memory|\bOUT_OF_MEMORY\b|over its memory limit",
    re.IGNORECASE,
)
_SPOT = re.compile(r"\bspot\b|SpotInterruption|Server\.SpotInstance", re.IGNORECASE)
_HOST_TERMINATED = re.compile(
    r"Host EC2 \(instance (?P<instance>[^)]*)\) (?:terminated|stopped)", re.IGNORECASE
)
_TIME_LIMIT = re.compile(
    r"Job attempt duration exceeded timeout|exceeded (?:its |the )?time ?limit|timed out after",
    re.IGNORECASE,
)
_NEVER_STARTED = re.compile(
    r"CannotPullContainer|ResourceInitializationError|CannotStartContainer|TaskFailedToStart|"
    r"unable to place|RESOURCE:|CannotCreateVolume|ECS was unable to assume",
    re.IGNORECASE,
)
_CANCELLED = re.compile(r"cancel", re.IGNORECASE)
_CRASH_EXIT = re.compile(r"non-zero status code (?P<code>-?\d+)")
_LEADING_CODE = re.compile(r"^(?P<code>[A-Z_]+):")

# Exit statuses: a container killed by SIGKILL exits 137 (128 + 9) — on ECS/Batch that is the memory
# limit's kill unless something else is said — and by SIGTERM 143. A local child killed by a signal
# reports minus the signal number (os.waitstatus_to_exitcode): -9 is a kill from outside (a local
# memory limit (RLIMIT) shows as a MemoryError instead), so it is not taken as memory.
_SIGKILL_EXITS = frozenset({137})
_SIGTERM_EXITS = frozenset({143, -15})


def code_of(failure_reason: str | None) -> FailureCode | None:
    """The code at the start of a stored ``failureReason`` (``"STUCK: ..."``), if it has one."""
    match = _LEADING_CODE.match(failure_reason or "")
    if match and match.group("code") in FailureCode.__members__:
        return FailureCode(match.group("code"))
    return None


def _texts(*values: Any) -> str:
    return " | ".join(str(v) for v in values if v)


def from_exception(error: BaseException) -> Failure:
    """The failure of work that raised ``error``: CODE_ERROR with its traceback (OUT_OF_MEMORY for a
    ``MemoryError``, TIME_LIMIT for a ``TimeoutError``)."""
    text = "".join(tb.format_exception(error)).strip()
    message = f"{type(error).__name__}: {error}".strip().rstrip(":")
    evidence = {"exception": type(error).__name__, "traceback": text[-4000:]}
    if isinstance(error, MemoryError) or _OOM.search(str(error)):
        return Failure(FailureCode.OUT_OF_MEMORY, message, evidence)
    if isinstance(error, TimeoutError):
        return Failure(FailureCode.TIME_LIMIT, message, evidence)
    return Failure(FailureCode.CODE_ERROR, message, evidence)


def from_exit(
    exit_code: int | None,
    *,
    timed_out: bool = False,
    output_tail: str | None = None,
    source: str = "local process",
) -> Failure | None:
    """The failure a process's exit status means; None for a clean exit (0, no OOM text).

    ``output_tail`` (its last stderr lines) is evidence and is read for OOM/traceback texts; a
    container's SIGKILL status (137) without other evidence is taken as the memory limit's kill, as ECS
    and Batch report it; a local ``-9`` is a kill from outside (KILLED).
    """
    evidence: dict[str, Any] = {"source": source, "exitCode": exit_code}
    if output_tail:
        evidence["outputTail"] = output_tail[-4000:]
    if timed_out:
        return Failure(FailureCode.TIME_LIMIT, f"{source} ran past its time limit and was killed", evidence)
    if output_tail and _OOM.search(output_tail):
        return Failure(FailureCode.OUT_OF_MEMORY, f"{source} ran out of memory (exit {exit_code})", evidence)
    if exit_code is None:
        return Failure(FailureCode.UNKNOWN, f"{source} ended without an exit status", evidence)
    if exit_code == 0:
        return None
    if exit_code in _SIGKILL_EXITS:
        return Failure(
            FailureCode.OUT_OF_MEMORY,
            f"{source} was killed with SIGKILL (exit {exit_code}), as the memory killer does",
            evidence,
        )
    if exit_code in _SIGTERM_EXITS:
        return Failure(FailureCode.KILLED, f"{source} was stopped with SIGTERM (exit {exit_code})", evidence)
    if exit_code < 0:
        return Failure(FailureCode.KILLED, f"{source} was killed by signal {-exit_code}", evidence)
    return Failure(FailureCode.CODE_ERROR, f"{source} exited with code {exit_code}", evidence)


def _host_loss(text: str, *, spot: bool | None, evidence: dict[str, Any]) -> Failure | None:
    """SPOT_RECLAIM or KILLED for a lost host / Spot interruption text; None when there is none."""
    host = _HOST_TERMINATED.search(text)
    if host:
        evidence["instance"] = host.group("instance")
    if _SPOT.search(text) or (host and spot):
        return Failure(FailureCode.SPOT_RECLAIM, f"Spot capacity reclaimed: {text}", evidence)
    if host:
        return Failure(FailureCode.KILLED, f"its host was terminated: {text}", evidence)
    return None


# -- ECS -------------------------------------------------------------------------------------------
def from_ecs_task(task: dict[str, Any], *, spot: bool | None = None) -> Failure | None:
    """The failure of a stopped ECS task (one entry of ``DescribeTasks``' ``tasks``); None while it
    runs or when it stopped cleanly.

    Read in this order: an out-of-memory text anywhere (whatever the exit code), a Spot/host loss
    (``stopCode`` ``SpotInterruption``, ``TerminationNotice`` on Spot capacity, ``Host EC2 ...
    terminated``), ``TaskFailedToStart``, a user stop, then the essential container's exit code.
    """
    if task.get("lastStatus") not in ("STOPPED", "DEPROVISIONING", "STOPPING") and not task.get("stoppedAt"):
        return None
    containers = task.get("containers") or []
    stop_code = task.get("stopCode")
    stopped_reason = task.get("stoppedReason") or ""
    capacity = task.get("capacityProviderName") or ""
    on_spot = spot if spot is not None else ("SPOT" in capacity.upper() or None)
    evidence: dict[str, Any] = {
        "source": "ecs:DescribeTasks",
        "taskArn": task.get("taskArn"),
        "lastStatus": task.get("lastStatus"),
        "stopCode": stop_code,
        "stoppedReason": stopped_reason,
        "containers": [
            {k: c.get(k) for k in ("name", "exitCode", "reason", "lastStatus") if c.get(k) is not None}
            for c in containers
        ],
    }
    if capacity:
        evidence["capacityProviderName"] = capacity
    reasons = [c.get("reason") or "" for c in containers]
    all_text = _texts(stopped_reason, *reasons)
    if _OOM.search(all_text):
        return Failure(FailureCode.OUT_OF_MEMORY, f"ECS task ran out of memory: {all_text}", evidence)
    lost = _host_loss(all_text, spot=on_spot, evidence=evidence)
    if stop_code == "SpotInterruption" or (stop_code == "TerminationNotice" and on_spot):
        return Failure(FailureCode.SPOT_RECLAIM, f"Spot capacity reclaimed: {stopped_reason}", evidence)
    if lost is not None:
        return lost
    if stop_code == "TerminationNotice":
        return Failure(FailureCode.KILLED, f"its host was shut down: {stopped_reason}", evidence)
    if stop_code == "TaskFailedToStart" or _NEVER_STARTED.search(all_text):
        return Failure(
            FailureCode.INFRASTRUCTURE_NEVER_STARTED, f"ECS task failed to start: {all_text}", evidence
        )
    if _TIME_LIMIT.search(all_text):
        return Failure(FailureCode.TIME_LIMIT, f"ECS task ran past its time limit: {all_text}", evidence)
    if stop_code == "UserInitiated":
        return Failure(FailureCode.CANCELLED, f"ECS task stopped by request: {stopped_reason}", evidence)
    if stop_code == "ServiceSchedulerInitiated":
        return Failure(FailureCode.KILLED, f"ECS task stopped by its service: {stopped_reason}", evidence)
    essential = [c for c in containers if c.get("exitCode") is not None] or containers
    codes = [c.get("exitCode") for c in essential if c.get("exitCode") is not None]
    nonzero = next((code for code in codes if code != 0), None)
    if nonzero is not None:
        failure = from_exit(nonzero, source="ECS task")
        assert failure is not None
        return Failure(failure.code, f"{failure.message}: {stopped_reason}".rstrip(": "), evidence)
    if codes:
        return None  # every container exited 0 and nothing above says otherwise: it succeeded
    return Failure(
        FailureCode.ORPHANED,
        f"ECS task stopped without an exit code: {stopped_reason or 'no reason'}",
        evidence,
    )


# -- Batch -----------------------------------------------------------------------------------------
BATCH_WAITING = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"})
BATCH_TERMINAL = frozenset({"SUCCEEDED", "FAILED"})


def from_batch_job(job: dict[str, Any], *, spot: bool | None = None) -> Failure | None:
    """The failure of an ended AWS Batch job (one entry of ``DescribeJobs``' ``jobs``); None while it
    is not FAILED (SUCCEEDED, or still waiting/running).

    Reads ``statusReason``, ``container.reason``/``exitCode`` and the last of ``attempts``: an OOM
    text wins over the exit code; ``Job attempt duration exceeded timeout`` is a time limit even
    without an exit code; ``Host EC2 (instance …) terminated.`` is a lost host (Spot reclaim when
    ``spot`` or the text says Spot); a job that never reached RUNNING never started.
    """
    if job.get("status") != "FAILED":
        return None
    attempts = job.get("attempts") or []
    last = attempts[-1] if attempts else {}
    container = {**(last.get("container") or {}), **(job.get("container") or {})}
    exit_code = container.get("exitCode")
    status_reason = job.get("statusReason") or ""
    texts = _texts(status_reason, last.get("statusReason"), container.get("reason"))
    evidence: dict[str, Any] = {
        "source": "batch:DescribeJobs",
        "jobId": job.get("jobId"),
        "status": job.get("status"),
        "statusReason": status_reason,
        "exitCode": exit_code,
        "containerReason": container.get("reason"),
        "attempts": [
            {
                "statusReason": a.get("statusReason"),
                "exitCode": (a.get("container") or {}).get("exitCode"),
                "reason": (a.get("container") or {}).get("reason"),
            }
            for a in attempts
        ],
    }
    if _OOM.search(texts):
        return Failure(FailureCode.OUT_OF_MEMORY, f"Batch job ran out of memory: {texts}", evidence)
    if _TIME_LIMIT.search(texts):
        return Failure(FailureCode.TIME_LIMIT, f"Batch job ran past its time limit: {texts}", evidence)
    lost = _host_loss(texts, spot=spot, evidence=evidence)
    if lost is not None:
        return lost
    started = job.get("startedAt") or any(a.get("startedAt") for a in attempts)
    if _NEVER_STARTED.search(texts) or (not started and exit_code is None and not _CANCELLED.search(texts)):
        return Failure(
            FailureCode.INFRASTRUCTURE_NEVER_STARTED,
            f"Batch job failed before it started: {texts or 'no reason given'}",
            evidence,
        )
    if _CANCELLED.search(texts) or "Terminated by" in texts:
        return Failure(FailureCode.CANCELLED, f"Batch job terminated by request: {texts}", evidence)
    if exit_code is not None:
        failure = from_exit(exit_code, source="Batch job")
        if failure is not None:
            return Failure(failure.code, f"{failure.message}: {texts}".rstrip(": "), evidence)
    return Failure(
        FailureCode.ORPHANED, f"Batch job failed without an exit code: {texts or 'no reason'}", evidence
    )


# -- Prefect ---------------------------------------------------------------------------------------
def from_prefect_state(state_type: str | None, name: str | None, message: str | None) -> Failure | None:
    """The failure a final Prefect flow-run state tells (the worker's crash message carries the exit
    status: ``Flow run infrastructure exited with non-zero status code 137``); None unless the state
    is FAILED, CRASHED or CANCELLED."""
    state_type = (state_type or "").upper()
    text = message or ""
    evidence = {"source": "prefect", "stateType": state_type, "stateName": name, "message": text[-2000:]}
    if state_type == "CANCELLED":
        return Failure(FailureCode.CANCELLED, f"flow run cancelled: {text or name}", evidence)
    if state_type not in ("FAILED", "CRASHED"):
        return None
    if _OOM.search(text):
        return Failure(FailureCode.OUT_OF_MEMORY, f"flow run ran out of memory: {text}", evidence)
    if _TIME_LIMIT.search(text):
        return Failure(FailureCode.TIME_LIMIT, f"flow run ran past its time limit: {text}", evidence)
    lost = _host_loss(text, spot=None, evidence=evidence)
    if lost is not None:
        return lost
    crash = _CRASH_EXIT.search(text)
    if crash:
        failure = from_exit(int(crash.group("code")), source="flow run infrastructure")
        if failure is not None:
            evidence["exitCode"] = int(crash.group("code"))
            return Failure(failure.code, failure.message, evidence)
    if state_type == "CRASHED":
        return Failure(FailureCode.ORPHANED, f"flow run crashed: {text or 'no message'}", evidence)
    return Failure(FailureCode.CODE_ERROR, f"flow run failed: {text or 'no message'}", evidence)
