"""Child process of a Python script job: import the user's file and call ``func(arguments)``.

Usage: ``JOB_ARGUMENTS_FILE=ARGUMENTS.json python -m flows.script_jobs.entry SCRIPT FUNC RESULT.json``.
The arguments travel by file (its path in the environment), never on the command line: argv and the
environment are limited by the kernel, a job's arguments only by the submit-time limit.
The user's stdout/stderr stay theirs (they become the job log); the return value is written as JSON
to the result file. Any exception prints the traceback and exits 1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path


def _print_user_traceback() -> None:
    # Drop this module's own frame: the user should see their code, not ours.
    kind, error, trace = sys.exc_info()
    traceback.print_exception(kind, error, trace.tb_next if trace else None)


def _jsonable(value):
    # numpy scalars/arrays and similar expose these; anything else is a clear error below.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def main(argv: list[str]) -> int:
    script, func_name, result_file = argv
    arguments_file = os.environ["JOB_ARGUMENTS_FILE"]
    path = Path(script).resolve()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        print(f"cannot import {path}: not a Python file", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _print_user_traceback()
        return 1
    func = getattr(module, func_name, None)
    if not callable(func):
        print(f"function {func_name!r} is not defined in {path.name}", file=sys.stderr)
        return 2
    arguments = json.loads(Path(arguments_file).read_text())
    try:
        value = func(arguments)
    except BaseException:
        _print_user_traceback()
        return 1
    try:
        encoded = json.dumps(value, default=_jsonable)
    except (TypeError, ValueError) as error:
        print(f"{func_name} returned a value that cannot be stored as JSON: {error}", file=sys.stderr)
        return 2
    Path(result_file).write_text(encoded)
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    sys.exit(main(sys.argv[1:]))
