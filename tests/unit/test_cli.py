"""CLI behaviour that needs no running stack: bad input is refused before anything is contacted."""

from interlinked.cli import EXIT_INVALID, main


def test_submit_unreadable_file(tmp_path, capsys):
    assert main(["submit", str(tmp_path / "missing.json")]) == EXIT_INVALID
    assert "cannot read" in capsys.readouterr().err


def test_submit_invalid_json(tmp_path, capsys):
    path = tmp_path / "job.json"
    path.write_text("{not json")
    assert main(["submit", str(path)]) == EXIT_INVALID
    assert "is not valid JSON" in capsys.readouterr().err


def test_env_without_stack_says_how_to_start_it(tmp_path, monkeypatch, capsys):
    from interlinked import settings as settings_module

    monkeypatch.setenv("INTERLINKED_STATE_DIR", str(tmp_path / "nothing-here"))
    settings_module.get_settings.cache_clear()
    try:
        assert main(["env", "--json"]) == 3
        assert "run `interlinked up`" in capsys.readouterr().err
    finally:
        settings_module.get_settings.cache_clear()


def test_help_lists_the_contract_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    for command in ("up", "down", "env", "demo", "submit", "status"):
        assert command in out


def test_submit_refuses_arguments_over_the_limit_naming_it(tmp_path, capsys):
    """Fault 7: a job whose arguments are over the documented limit is refused at submit (exit 2)."""
    import json

    from flows.script_jobs.spec import MAX_ARGUMENTS_BYTES

    path = tmp_path / "job.json"
    big = "x" * (MAX_ARGUMENTS_BYTES + 1)
    path.write_text(json.dumps({"name": "big", "script": "a.py", "func": "f", "arguments": {"blob": big}}))
    assert main(["submit", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "arguments" in err and f"limit of {MAX_ARGUMENTS_BYTES:,} bytes" in err and "8 MiB" in err
