"""The local Prefect server's basic-auth secret: made once per state directory, given to the server
and to the stack's clients, the user's own respected, none when switched off."""

from __future__ import annotations

import importlib
import json
import os
import stat

import pytest

from interlinked.local.processes import StackError
from interlinked.settings import Settings

# The module (interlinked.local re-exports its function `parts` under the same name).
parts = importlib.import_module("interlinked.local.parts")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # The test session's own stack secret (tests/_stack.py) is in this process's environment.
    for name in parts.AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return Settings(_env_file=None, state_dir=tmp_path / "state")


def test_up_makes_a_private_secret_once_and_keeps_it(settings):
    assert parts.prefect_auth_string(settings) is None  # before `up`: nothing is made
    assert not parts.prefect_auth_file(settings).exists()

    made = parts.prefect_auth_string(settings, create=True)
    user, _, password = made.partition(":")
    assert user == parts.AUTH_USER and len(password) >= 32
    path = parts.prefect_auth_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == made
    # Kept: a second `up` (after `down`) and every reader get the same one.
    assert parts.prefect_auth_string(settings, create=True) == made
    assert parts.prefect_auth_string(settings) == made
    assert sorted(p.name for p in path.parent.iterdir()) == [parts.AUTH_FILE]  # no staged copy left


def test_the_server_and_every_client_get_it(settings):
    made = parts.prefect_auth_string(settings, create=True)
    assert parts._server_env(settings)["PREFECT_SERVER_API_AUTH_STRING"] == made
    assert parts.stack_env(settings)["PREFECT_API_AUTH_STRING"] == made
    assert parts.client_env(settings)["PREFECT_API_AUTH_STRING"] == made
    service = parts.parts(settings)
    for name in ("worker", "bridge", "analysis-service", "script-api"):
        assert service[name].env["PREFECT_API_AUTH_STRING"] == made, name
    assert parts.prefect_auth_headers(settings)["Authorization"].startswith("Basic ")


def test_a_secret_the_user_gives_is_used_and_kept(settings, monkeypatch):
    parts.prefect_auth_string(settings, create=True)
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "me:mine")
    assert parts.prefect_auth_string(settings, create=True) == "me:mine"
    assert parts._server_env(settings)["PREFECT_SERVER_API_AUTH_STRING"] == "me:mine"
    assert parts.client_env(settings)["PREFECT_API_AUTH_STRING"] == "me:mine"
    # The file holds the server's secret: a shell without the variable still reaches it.
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING")
    assert parts.prefect_auth_string(settings) == "me:mine"


def test_two_different_given_secrets_are_refused(settings, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "me:one")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "me:two")
    with pytest.raises(StackError, match="PREFECT_API_AUTH_STRING and PREFECT_SERVER_API_AUTH_STRING differ"):
        parts.prefect_auth_string(settings, create=True)


def test_off_means_no_secret_anywhere(settings, monkeypatch):
    monkeypatch.setenv("INTERLINKED_PREFECT_AUTH", "off")
    off = Settings(_env_file=None, state_dir=settings.state_dir)
    assert off.prefect_auth is False
    assert parts.prefect_auth_string(off, create=True) is None
    assert not parts.prefect_auth_file(off).exists()
    assert "PREFECT_SERVER_API_AUTH_STRING" not in parts._server_env(off)
    assert "PREFECT_API_AUTH_STRING" not in parts.client_env(off)
    assert parts.prefect_auth_headers(off) == {}


def test_cli_commands_send_it_to_the_stack_only(settings, monkeypatch):
    """`use_stack_defaults` (every Prefect-using command) adds the stack's secret for the stack's
    API, and nothing for an API of the user's own."""
    from interlinked import settings as settings_module
    from interlinked.commands.common import use_stack_defaults

    made = parts.prefect_auth_string(settings, create=True)
    monkeypatch.setenv("INTERLINKED_STATE_DIR", str(settings.state_dir))
    monkeypatch.setattr(os, "environ", dict(os.environ))  # use_stack_defaults writes os.environ
    settings_module.get_settings.cache_clear()
    try:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        use_stack_defaults()
        assert os.environ["PREFECT_API_AUTH_STRING"] == made

        del os.environ["PREFECT_API_AUTH_STRING"]
        os.environ["PREFECT_API_URL"] = "https://prefect.example.org/api"
        use_stack_defaults()
        assert "PREFECT_API_AUTH_STRING" not in os.environ
    finally:
        settings_module.get_settings.cache_clear()


def test_env_prints_it_as_an_export_line(settings):
    from interlinked.local import env_lines, stack_file

    made = parts.prefect_auth_string(settings, create=True)
    description = {
        "buckets": {"data": "d", "analysis": "a"},
        "queues": {"work": "w", "events": "e"},
        "topics": {"work_results": "r", "job_events": "j"},
    }
    stack_file(settings).write_text(json.dumps(description))
    assert f"export PREFECT_API_AUTH_STRING={made}" in env_lines(settings)
