from interlinked.settings import PROJECT_ROOT, Settings


def test_defaults_are_project_local_and_contract_names(monkeypatch):
    for name in ("INTERLINKED_STATE_DIR", "INTERLINKED_PREFECT_PORT", "INTERLINKED_AWS_PORT", "WORKER_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.state_dir == PROJECT_ROOT / ".interlinked"
    assert settings.work_queue == "development-queue.fifo"  # the seed's default WORKER_QUEUE
    assert settings.prefect_api_url == "http://127.0.0.1:4200/api"
    assert settings.deployment("script-job") == "script-job/local"


def test_environment_overrides_with_prefix_and_seed_alias(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERLINKED_PREFECT_PORT", "4999")
    monkeypatch.setenv("INTERLINKED_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("WORKER_QUEUE", "staging-queue.fifo")
    settings = Settings(_env_file=None)
    assert settings.prefect_port == 4999
    assert settings.prefect_api_url == "http://127.0.0.1:4999/api"
    assert settings.state_dir == tmp_path and settings.logs_dir == tmp_path / "logs"
    assert settings.work_queue == "staging-queue.fifo"


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.delenv("INTERLINKED_DATA_BUCKET", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("INTERLINKED_DATA_BUCKET=lab-data\nINTERLINKED_AWS_PORT=6001\n")
    monkeypatch.delenv("INTERLINKED_AWS_PORT", raising=False)
    settings = Settings(_env_file=env_file)
    assert settings.data_bucket == "lab-data"
    assert settings.aws_endpoint_url == "http://127.0.0.1:6001"


def test_invalid_port_is_refused(monkeypatch):
    import pytest
    from pydantic import ValidationError

    monkeypatch.setenv("INTERLINKED_PREFECT_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="prefect_port"):
        Settings(_env_file=None)
