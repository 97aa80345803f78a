"""Run a user script in a child process: Python, shell or R.

Output is streamed line by line to a callback while the script runs (the flow forwards it to the
Prefect run log and to the S3 log object); a hung script is killed with its whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.script_jobs.spec import Language

HERE = Path(__file__).resolve().parent
# Lines a callback receives: (stream name, line without the newline).
LineCallback = Callable[[str, str], None]

# Source the script, then call the named function if one was asked for. Its stdin is the arguments
# file (the runner opens it there), so `json.load(sys.stdin)` and `cat` read the JSON as before.
# Arguments too large for one environment string reach the script as the shell variable
# JOB_ARGUMENTS, read from the file and not exported: the kernel refuses an environment string over
# 128 KiB (E2BIG) for every program the script would start.
_SHELL_DRIVER = r"""
if [ -z "${JOB_ARGUMENTS+set}" ]; then
  JOB_ARGUMENTS="$(< "$JOB_ARGUMENTS_FILE")"
fi
source "$INTERLINKED_SCRIPT" || exit $?
if [ -n "$INTERLINKED_FUNC" ]; then
  if ! declare -F "$INTERLINKED_FUNC" >/dev/null; then
    echo "function '$INTERLINKED_FUNC' is not defined in $(basename "$INTERLINKED_SCRIPT")" >&2
    exit 127
  fi
  "$INTERLINKED_FUNC"
fi
"""

# Arguments (as JSON) up to this size are also exported as JOB_ARGUMENTS (the seed's interface);
# larger ones only travel by file. Below Linux's limit of 128 KiB for one environment string, with
# room for everything else the environment holds.
ENV_ARGUMENTS_LIMIT = 64 * 1024


# What a script inherits from the worker's environment: an allow-list (names, and name prefixes
# ending in "_"). Nothing else reaches user code — not the worker's AWS keys, not PREFECT_API_URL,
# PREFECT_API_KEY or PREFECT_API_AUTH_STRING (the local server's secret), not database URLs; what a job may use is passed explicitly (``env``: its own
# scoped AWS credentials, its ids, its progress channel).
INHERITED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        "R_LIBS",
        "R_LIBS_USER",
        "R_HOME",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "INTERLINKED_SCRIPT_API_URL",
        "INTERLINKED_ANALYSIS_BUCKETS",
        "INTERLINKED_CODE_DIR",
    }
)
INHERITED_PREFIXES = ("LC_",)


def inherited_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The part of ``environ`` (default: this process's) a script may see."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in environ.items()
        if name in INHERITED_ENV or name.startswith(INHERITED_PREFIXES)
    }


class ScriptRuntimeMissing(RuntimeError):
    """The interpreter a script needs is not installed where the job runs."""


@dataclass
class ScriptOutcome:
    """How a script run ended."""

    exit_code: int | None
    result: Any = None
    has_result: bool = False
    timed_out: bool = False
    duration: float = 0.0
    error: str | None = None
    out_of_memory: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None


def rscript_path() -> str | None:
    return shutil.which("Rscript")


def _command(language: Language, script: Path, func: str | None, result_file: Path):
    """The child's argv: small and fixed (the arguments travel by file, ``JOB_ARGUMENTS_FILE``)."""
    if language == "python":
        return [sys.executable, "-u", str(HERE / "entry.py"), str(script), func, str(result_file)]
    if language == "r":
        rscript = rscript_path()
        if rscript is None:
            raise ScriptRuntimeMissing(
                "R scripts need `Rscript`, which is not installed where this job runs "
                "(install r-base-core and r-cran-jsonlite)"
            )
        return [rscript, "--vanilla", str(HERE / "entry.R"), str(script), func, str(result_file)]
    if language == "shell":
        return ["bash", "-c", _SHELL_DRIVER]
    raise ValueError(f"unknown language {language!r}")


def _pump(stream, name: str, on_line: LineCallback, sink: list[str] | None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        if sink is not None:
            sink.append(line)
        on_line(name, line)
    stream.close()


def _kill_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _shell_result(stdout_lines: list[str]) -> tuple[bool, Any]:
    """Shell scripts return JSON on stdout: the whole of it, or else its last non-empty line."""
    text = "\n".join(stdout_lines).strip()
    if not text:
        return False, None
    for candidate in (text, text.splitlines()[-1].strip()):
        try:
            return True, json.loads(candidate)
        except ValueError:
            continue
    return False, None


def run_script(
    *,
    language: Language,
    script: Path,
    func: str | None,
    arguments: dict[str, Any],
    on_line: LineCallback,
    timeout_seconds: float | None = None,
    env: dict[str, str] | None = None,
    memory_limit_mib: int | None = None,
) -> ScriptOutcome:
    """Run ``script`` and return how it ended; never raises for a failing script.

    The arguments are written to a file whose path is ``JOB_ARGUMENTS_FILE`` in the script's
    environment and which is the script's stdin (nothing is written to a pipe, so a script that never
    reads its stdin cannot hold the runner before its timed wait); ``JOB_ARGUMENTS`` also holds them
    when they fit an environment string (:data:`ENV_ARGUMENTS_LIMIT`). Their size is bounded at
    submit time (:data:`flows.script_jobs.spec.MAX_ARGUMENTS_BYTES`).

    The script's environment is :func:`inherited_env` plus ``env``: nothing of the worker's own
    (credentials, Prefect API, database) unless ``env`` passes it.

    ``memory_limit_mib``: the script's process group is killed once its resident memory passes it
    (:class:`flows.jobs.memory.MemoryWatch`); the outcome then says ``out_of_memory``, exit code 137.
    """
    from flows.jobs.memory import OOM_EXIT_CODE, MemoryWatch

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="interlinked-job-") as workdir:
        arguments_file = Path(workdir) / "arguments.json"
        result_file = Path(workdir) / "result.json"
        arguments_json = json.dumps(arguments)
        arguments_file.write_text(arguments_json)
        command = _command(language, script, func or "", result_file)
        child_env = {
            **inherited_env(),
            **(env or {}),
            "JOB_ARGUMENTS_FILE": str(arguments_file),
            "INTERLINKED_SCRIPT": str(script),
            "INTERLINKED_FUNC": func or "",
            "PYTHONUNBUFFERED": "1",
        }
        child_env.pop("JOB_ARGUMENTS", None)
        if len(arguments_json.encode()) <= ENV_ARGUMENTS_LIMIT:
            child_env["JOB_ARGUMENTS"] = arguments_json
        with arguments_file.open("rb") as stdin:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=child_env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        stdout_lines: list[str] = []
        stderr_lines: list[str] = []
        pumps = [
            threading.Thread(
                target=_pump, args=(process.stdout, "stdout", on_line, stdout_lines), daemon=True
            ),
            threading.Thread(
                target=_pump, args=(process.stderr, "stderr", on_line, stderr_lines), daemon=True
            ),
        ]
        for pump in pumps:
            pump.start()
        timed_out = False
        watch = MemoryWatch(process.pid, memory_limit_mib) if memory_limit_mib else None
        try:
            with watch or contextlib.nullcontext():
                process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
        except BaseException:
            # Cancellation (Prefect turns SIGTERM into an exception here) or an interrupt: the script
            # runs in its own process group, so stop it explicitly rather than orphan it.
            _kill_group(process)
            raise
        for pump in pumps:
            pump.join(timeout=10)
        duration = time.monotonic() - started

        outcome = ScriptOutcome(exit_code=process.returncode, timed_out=timed_out, duration=duration)
        if watch is not None and watch.killed:
            outcome.exit_code, outcome.out_of_memory, outcome.error = OOM_EXIT_CODE, True, watch.reason()
        elif timed_out:
            outcome.error = f"timed out after {timeout_seconds:g} s: the script was killed"
        elif process.returncode != 0:
            last = next((line.strip() for line in reversed(stderr_lines) if line.strip()), "")
            outcome.error = f"script exited with code {process.returncode}" + (f": {last}" if last else "")
        elif language == "shell":
            outcome.has_result, outcome.result = _shell_result(stdout_lines)
        elif result_file.exists():
            outcome.has_result, outcome.result = True, json.loads(result_file.read_text())
        else:
            outcome.error = "script finished without writing a result"
        return outcome
