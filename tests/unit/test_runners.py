import json
import os
import time
from pathlib import Path

import pytest

from flows.script_jobs.runners import ScriptRuntimeMissing, rscript_path, run_script

needs_r = pytest.mark.skipif(
    rscript_path() is None, reason="Rscript is not installed (apt-get install r-base-core r-cran-jsonlite)"
)


def _run(tmp_path: Path, name: str, source: str, **options):
    script = tmp_path / name
    script.write_text(source)
    lines: list[tuple[str, str]] = []
    outcome = run_script(script=script, on_line=lambda stream, line: lines.append((stream, line)), **options)
    return outcome, lines


def test_python_calls_func_with_arguments_mapping(tmp_path):
    outcome, lines = _run(
        tmp_path,
        "add.py",
        "def myfunc(args):\n    print('sum of', sorted(args))\n    return args['a'] + args['b']\n",
        language="python",
        func="myfunc",
        arguments={"a": 1, "b": 2},
    )
    assert outcome.succeeded and outcome.has_result and outcome.result == 3
    assert ("stdout", "sum of ['a', 'b']") in lines


def test_python_numpy_values_become_json(tmp_path):
    outcome, _ = _run(
        tmp_path,
        "np.py",
        "import numpy as np\ndef f(args):\n    return {'mean': np.float64(2.5), 'v': np.arange(3)}\n",
        language="python",
        func="f",
        arguments={},
    )
    assert outcome.result == {"mean": 2.5, "v": [0, 1, 2]}


def test_python_error_streams_user_traceback(tmp_path):
    outcome, lines = _run(
        tmp_path,
        "bad.py",
        "def f(args):\n    raise ValueError('no good: ' + args['x'])\n",
        language="python",
        func="f",
        arguments={"x": "42"},
    )
    assert not outcome.succeeded and outcome.exit_code == 1
    stderr = "\n".join(line for stream, line in lines if stream == "stderr")
    assert "Traceback" in stderr and 'bad.py", line 2, in f' in stderr
    assert "script_entry.py" not in stderr  # our own frame is hidden
    assert outcome.error.endswith("ValueError: no good: 42")


def test_python_missing_function_and_unserialisable_result(tmp_path):
    outcome, _ = _run(tmp_path, "m.py", "x = 1\n", language="python", func="nope", arguments={})
    assert outcome.exit_code == 2 and "function 'nope' is not defined in m.py" in outcome.error
    outcome, _ = _run(
        tmp_path, "o.py", "def f(a):\n    return object()\n", language="python", func="f", arguments={}
    )
    assert outcome.exit_code == 2 and "cannot be stored as JSON" in outcome.error


def test_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "child-alive"
    source = (
        "import subprocess, sys, time\n"
        "def f(args):\n"
        f"    subprocess.Popen(['bash', '-c', 'sleep 3; touch {marker}'])\n"
        "    time.sleep(60)\n"
    )
    outcome, _ = _run(
        tmp_path, "hang.py", source, language="python", func="f", arguments={}, timeout_seconds=1
    )
    # Killed at its timeout, not after its 60 s sleep: the outcome says so (no wall-clock check).
    assert outcome.timed_out and not outcome.succeeded
    assert "timed out after 1 s" in outcome.error
    time.sleep(3.5)
    assert not marker.exists(), "a grandchild of the timed-out script survived"


def test_shell_reads_arguments_and_returns_json_stdout(tmp_path):
    source = "echo \"working\" >&2\nsum() { python3 -c \"import json,sys; d=json.load(sys.stdin); print(json.dumps({'s': d['a'] + d['b']}))\"; }\n"
    outcome, lines = _run(tmp_path, "s.sh", source, language="shell", func="sum", arguments={"a": 2, "b": 5})
    assert outcome.succeeded and outcome.result == {"s": 7}
    assert ("stderr", "working") in lines


def test_shell_without_func_uses_env_and_last_json_line(tmp_path):
    source = 'echo "progress: starting"\necho "$JOB_ARGUMENTS" | python3 -c "import json,sys; print(len(json.load(sys.stdin)))"\n'
    outcome, _ = _run(
        tmp_path, "t.sh", source, language="shell", func=None, arguments={"a": 1, "b": 2, "c": 3}
    )
    assert outcome.result == 3


def test_shell_non_json_output_has_no_result_and_failure_has_code(tmp_path):
    outcome, _ = _run(tmp_path, "n.sh", "echo hello world\n", language="shell", func=None, arguments={})
    assert outcome.succeeded and not outcome.has_result and outcome.result is None
    outcome, _ = _run(tmp_path, "f.sh", "echo oops >&2\nexit 3\n", language="shell", func=None, arguments={})
    assert outcome.exit_code == 3 and outcome.error == "script exited with code 3: oops"


@needs_r
def test_r_calls_func_with_list_arguments(tmp_path):
    outcome, lines = _run(
        tmp_path,
        "test.r",
        "myfunc <- function(args) {\n  cat('in R\\n')\n  args$a + args$b\n}\n",
        language="r",
        func="myfunc",
        arguments={"a": 1, "b": 2},
    )
    assert outcome.succeeded and outcome.result == 3
    assert ("stdout", "in R") in lines


@needs_r
def test_r_structures_and_errors(tmp_path):
    outcome, _ = _run(
        tmp_path,
        "s.R",
        "f <- function(args) list(n = length(args$xs), total = sum(args$xs), name = args$who)\n",
        language="r",
        func="f",
        arguments={"xs": [1, 2, 3.5], "who": "ada"},
    )
    assert outcome.result == {"n": 3, "total": 6.5, "name": "ada"}
    outcome, lines = _run(
        tmp_path, "e.R", "f <- function(args) stop('R says no')\n", language="r", func="f", arguments={}
    )
    assert outcome.exit_code == 1 and "R says no" in outcome.error
    assert any("Traceback" in line for _, line in lines)


def test_r_missing_runtime_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("flows.script_jobs.runners.shutil.which", lambda name: None)
    script = tmp_path / "x.R"
    script.write_text("f <- function(a) 1\n")
    with pytest.raises(ScriptRuntimeMissing, match="Rscript"):
        run_script(language="r", script=script, func="f", arguments={}, on_line=lambda *a: None)


def test_arguments_file_is_json(tmp_path):
    outcome, _ = _run(
        tmp_path,
        "echo.py",
        "def f(args):\n    return args\n",
        language="python",
        func="f",
        arguments={"nested": {"list": [1, "two", None]}, "unicode": "ü"},
    )
    assert json.dumps(outcome.result, sort_keys=True) == json.dumps(
        {"nested": {"list": [1, "two", None]}, "unicode": "ü"}, sort_keys=True
    )


@pytest.fixture
def python_ctrl_c():
    """SIGINT as Python handles it by default (KeyboardInterrupt in the main thread), for one test.

    Code run in-process by another test of the same pytest worker may leave a SIGINT handler of its
    own: once in a full suite run the interrupt below was swallowed and the script ran its 60 s.
    """
    import signal

    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    yield
    signal.signal(signal.SIGINT, saved)


def test_interrupting_the_runner_stops_the_script_group(tmp_path, python_ctrl_c):
    import signal
    import threading

    marker = tmp_path / "pid"
    script = tmp_path / "sleepy.py"
    script.write_text(
        "import subprocess, time\n"
        "def f(args):\n"
        f"    open({str(marker)!r}, 'w').write(str(subprocess.Popen(['sleep', '60']).pid))\n"
        "    time.sleep(60)\n"
    )

    def interrupt_when_started():
        # Wait for the event (the script has started its child), however long a loaded machine
        # takes; pytest's timeout bounds the test.
        while not (marker.exists() and marker.read_text()):
            time.sleep(0.05)
        # To the main thread itself, as a Ctrl-C would: its blocking wait is interrupted there.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_script(language="python", script=script, func="f", arguments={}, on_line=lambda *a: None)
    grandchild = int(marker.read_text())
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the script's child survived the interrupted runner")


# Fault 7 (issue 12): big arguments. One MiB is past Linux's limit for one environment string
# (128 KiB, E2BIG at process start) and past a pipe's buffer (64 KiB).
MIB_ARGUMENTS = {"blob": "x" * (1024 * 1024), "n": 1}


def test_one_mib_arguments_reach_python_intact(tmp_path):
    outcome, _ = _run(
        tmp_path,
        "big.py",
        "import os\ndef f(args):\n    return {'len': len(args['blob']), 'n': args['n'], "
        "'file': os.path.exists(os.environ['JOB_ARGUMENTS_FILE'])}\n",
        language="python",
        func="f",
        arguments=MIB_ARGUMENTS,
    )
    assert outcome.succeeded, outcome.error
    assert outcome.result == {"len": 1024 * 1024, "n": 1, "file": True}


def test_one_mib_arguments_reach_shell_on_stdin_variable_and_file(tmp_path):
    count = "python3 -c 'import json,sys; print(len(json.load(sys.stdin)[\"blob\"]))'"
    source = (
        f"f() {{\n"
        f"  a=$({count})\n"
        f'  b=$(printf %s "$JOB_ARGUMENTS" | {count})\n'
        f'  c=$({count} < "$JOB_ARGUMENTS_FILE")\n'
        '  echo "{\\"stdin\\": $a, \\"variable\\": $b, \\"file\\": $c}"\n'
        "}\n"
    )
    outcome, _ = _run(tmp_path, "big.sh", source, language="shell", func="f", arguments=MIB_ARGUMENTS)
    assert outcome.succeeded, outcome.error
    size = 1024 * 1024
    assert outcome.result == {"stdin": size, "variable": size, "file": size}


def test_small_arguments_are_still_exported_to_the_shells_children(tmp_path):
    source = 'python3 -c \'import json,os; print(json.loads(os.environ["JOB_ARGUMENTS"])["a"])\'\n'
    outcome, _ = _run(tmp_path, "env.sh", source, language="shell", func=None, arguments={"a": 41})
    assert outcome.succeeded and outcome.result == 41


@needs_r
def test_one_mib_arguments_reach_r_intact(tmp_path):
    outcome, _ = _run(
        tmp_path,
        "big.R",
        "f <- function(args) list(len = nchar(args$blob), n = args$n)\n",
        language="r",
        func="f",
        arguments=MIB_ARGUMENTS,
    )
    assert outcome.succeeded, outcome.error
    assert outcome.result == {"len": 1024 * 1024, "n": 1}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("language", ["python", "shell"])
def test_hung_script_with_one_mib_arguments_is_killed_at_its_timeout(tmp_path, language):
    # The script never reads its stdin: before, the runner blocked writing it and never reached the
    # timed wait (or the process never started: E2BIG). pytest's timeout turns a hang into a failure.
    name, source = {
        "python": ("hang.py", "import time\ndef f(args):\n    time.sleep(3600)\n"),
        "shell": ("hang.sh", "sleep 3600\n"),
    }[language]
    outcome, _ = _run(
        tmp_path,
        name,
        source,
        language=language,
        func="f" if language == "python" else None,
        arguments=MIB_ARGUMENTS,
        timeout_seconds=1,
    )
    assert outcome.timed_out and "timed out after 1 s" in outcome.error


@pytest.mark.timeout(120)
def test_hung_script_with_arguments_over_a_pipe_buffer_is_killed_at_its_timeout(tmp_path):
    # 100 KiB: small enough for the environment before the fix, too big for one pipe write.
    outcome, _ = _run(
        tmp_path,
        "hang.sh",
        "sleep 3600\n",
        language="shell",
        func=None,
        arguments={"blob": "y" * (100 * 1024)},
        timeout_seconds=1,
    )
    assert outcome.timed_out and "timed out after 1 s" in outcome.error


def test_the_script_sees_an_allow_list_of_the_environment(tmp_path, monkeypatch):
    """The worker's keys, Prefect API and database URL never reach user code; what is passed does."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "WORKERKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_secret")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "interlinked:secret")
    monkeypatch.setenv("INTERLINKED_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("SOMETHING_ELSE", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5055")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    source = "import os\ndef f(args):\n    return sorted(os.environ)\n"
    outcome, _ = _run(
        tmp_path,
        "env.py",
        source,
        language="python",
        func="f",
        arguments={},
        env={"AWS_ACCESS_KEY_ID": "ASIASCOPED", "LAMBDA_JOB_ID": "j1"},
    )
    assert outcome.succeeded, outcome.error
    seen = set(outcome.result)
    assert not seen & {
        "AWS_SECRET_ACCESS_KEY",
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "INTERLINKED_DATABASE_URL",
    }
    assert "SOMETHING_ELSE" not in seen
    assert {"AWS_ACCESS_KEY_ID", "LAMBDA_JOB_ID", "AWS_ENDPOINT_URL", "LC_ALL", "PATH"} <= seen
