"""flows.collections.runner: a command bash would only exec runs without bash, with what bash
would have given it (arguments, environment, exit code, output); every other command, and any
that cannot start, runs under ``bash -c`` as before."""

from __future__ import annotations

import json
import os
import sys

import pytest

from flows.collections import runner
from flows.collections.runner import TaskRun, direct_command, run_task


@pytest.mark.parametrize(
    "command",
    [
        "true",
        "env",
        "/usr/bin/env",
        "sleep 0",
        "/usr/bin/printf %s,x:y@z+1=2 -a",
    ],
)
def test_plain_commands_run_without_a_shell(command):
    assert direct_command(command, dict(os.environ)) is not None


@pytest.mark.parametrize(
    "command",
    [
        "echo hi",  # a builtin (its program differs in options)
        "true --help",  # the program answers --help, the builtin does not
        "cd /tmp",
        "exit 3",
        "X=1 env",  # an assignment
        "env > out.txt",
        "ls *.py",
        "echo $HOME",
        "ls ~",
        "sleep 1 && true",
        "sleep 1; true",
        "printf 'a b'",
        'printf "a"',
        "printf a\\ b",
        "ls # comment",
        "echo {a,b}",
        "ls\ntrue",
        "if true; then true; fi",
        "no-such-program-anywhere",
        "",
    ],
)
def test_anything_bash_would_interpret_is_left_to_bash(command):
    assert direct_command(command, dict(os.environ)) is None


@pytest.mark.parametrize("name", ["BASH_ENV", "SHELLOPTS", "BASHOPTS", "BASH_FUNC_env%%"])
def test_an_environment_that_changes_bash_leaves_the_command_to_bash(name):
    assert direct_command("env", {**os.environ, name: "x"}) is None


def test_an_environment_bash_would_rewrite_leaves_the_command_to_bash():
    assert direct_command("env", {**os.environ, "SHLVL": "abc"}) is None
    assert direct_command("env", {**os.environ, "OLDPWD": "/no/such/directory"}) is None
    assert direct_command("env", {k: v for k, v in os.environ.items() if k != "PATH"}) is None


def _environment_seen(command: str, out, monkeypatch, direct: bool) -> dict[str, str]:
    """The environment a program sees when run as a task, directly or forced through bash."""
    with monkeypatch.context() as patch:
        if not direct:
            patch.setattr(runner, "direct_command", lambda command, environment: None)
        result = run_task(TaskRun("c", "t1", command, 1, "owner", None, attributes={"a": 1}))
    assert result["outcome"] == "done", result
    return json.loads(out.read_text())


@pytest.mark.parametrize("how", ["on PATH", "by path"])
def test_a_direct_exec_gives_the_program_what_bash_would(how, tmp_path, monkeypatch):
    out = tmp_path / "env.json"
    script = tmp_path / "dump-env"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps({{**os.environ, 'ARGV': sys.argv[1:]}}))\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    command = ("dump-env" if how == "on PATH" else str(script)) + " a1 b,2 --c=3"
    assert direct_command(command, dict(os.environ)) is not None
    by_bash = _environment_seen(command, out, monkeypatch, direct=False)
    directly = _environment_seen(command, out, monkeypatch, direct=True)
    assert directly == by_bash
    assert directly["ARGV"] == ["a1", "b,2", "--c=3"]
    assert (directly["TASK_ID"], directly["COLLECTION"], directly["TASK_ATTRIBUTES"]) == (
        "t1",
        "c",
        '{"a": 1}',
    )


def test_exit_codes_and_failures_are_bash_s(tmp_path):
    result = run_task(TaskRun("c", "t1", "false", 1, "owner", None))
    assert (result["outcome"], result["exit_code"]) == ("failed", 1)
    # Not found: bash's exit code and message, as before.
    result = run_task(TaskRun("c", "t1", "no-such-program-anywhere", 1, "owner", None))
    assert result["exit_code"] == 127 and "not found" in result["error"]
    # Found but not executable: bash says so (126), the direct exec is not attempted.
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\ntrue\n")
    result = run_task(TaskRun("c", "t1", str(script), 1, "owner", None))
    assert result["exit_code"] == 126 and "ermission denied" in result["error"]


def test_a_program_that_cannot_start_is_left_to_bash(tmp_path, monkeypatch):
    # Executable but no valid program (no interpreter line, not ELF): exec fails with ENOEXEC,
    # bash then runs it as a shell script, as it always did.
    script = tmp_path / "no-shebang"
    out = tmp_path / "ran.txt"
    script.write_text(f"echo ran > {out}\n")
    script.chmod(0o755)
    assert direct_command(str(script), dict(os.environ)) is not None
    result = run_task(TaskRun("c", "t1", str(script), 1, "owner", None))
    assert result["outcome"] == "done", result
    assert out.read_text() == "ran\n"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_task_never_gets_the_platforms_secrets(chunked, tmp_path, monkeypatch):
    out = tmp_path / "env.json"
    script = tmp_path / "dump-env"
    script.write_text(
        f"#!{sys.executable}\nimport json, os\nopen({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))\n"
    )
    script.chmod(0o755)
    secrets = {
        "PREFECT_API_KEY": "pnu_secret",
        "PREFECT_API_AUTH_STRING": "interlinked:secret",
        "INTERLINKED_DATABASE_URL": "postgresql://u:secret@h/db",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://u:secret@h/prefect",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MY_TOOL_HOME", "/opt/tool")
    run = TaskRun("c", "t1", str(script), 1, "owner", None)
    result = runner.run_tasks([run])[0] if chunked else run_task(run)
    assert result["outcome"] == "done", result
    seen = json.loads(out.read_text())
    assert not set(secrets) & set(seen)
    assert seen["MY_TOOL_HOME"] == "/opt/tool"  # the rest of the environment is the task's
