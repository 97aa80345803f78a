"""`interlinked jobs ...` on an in-memory job service: output, --json, exit code 2 on bad input.

The service's store and dispatcher are in-process stand-ins (the PostgreSQL store has its own tests,
the stack's dispatch its integration test); what is checked here is the command layer.
"""

from __future__ import annotations

import json

import pytest

from flows.jobs import client
from flows.jobs.client import JobService
from flows.jobs.store import MemoryJobStore
from flows.jobs.types import load_job_types
from interlinked.cli import EXIT_INVALID, main
from tests.unit.test_jobs_machine import FakeDispatcher


@pytest.fixture
def service(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never contacted
    monkeypatch.setenv("INTERLINKED_DEPLOYMENT_SET", "local")
    service = JobService(MemoryJobStore(), dispatcher=FakeDispatcher(), job_types=load_job_types())
    client.set_default_service(service)
    yield service
    client.set_default_service(None)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_show_list_cancel(service, capsys, tmp_path):
    estimations = tmp_path / "estimations.json"
    estimations.write_text('{"memoryMiB": 256, "maxAttempts": 2}')
    code, out, _ = run(
        capsys, "jobs", "create", "script", "--input", '{"name": "n"}', "--estimations", f"@{estimations}"
    )
    assert code == 0
    job_id = out.strip()
    assert service.get(job_id).estimations.max_attempts == 2

    code, out, _ = run(capsys, "jobs", "dispatch", job_id, "--json")
    assert code == 0 and json.loads(out)["state"] == "DISPATCHED"
    assert service.dispatcher.runs == [(job_id, "script-job/local")]

    code, out, _ = run(capsys, "jobs", "show", job_id, "--json")
    document = json.loads(out)
    assert code == 0 and document["id"] == job_id and document["inputData"] == {"name": "n"}
    code, out, _ = run(capsys, "jobs", "show", job_id)
    assert "DISPATCHED" in out and "script" in out

    code, out, _ = run(capsys, "jobs", "list", "--state", "DISPATCHED", "--json")
    assert [job["id"] for job in json.loads(out)["jobs"]] == [job_id]
    code, out, _ = run(capsys, "jobs", "list", "--state", "CREATED", "--json")
    assert json.loads(out)["jobs"] == []

    code, out, _ = run(capsys, "jobs", "cancel", job_id, "--json")
    assert code == 0 and json.loads(out)["state"] == "CANCELLED"
    code, out, _ = run(capsys, "jobs", "retry", job_id, "--json")
    assert code == 0 and json.loads(out)["state"] == "DISPATCHED"


def test_create_with_dispatch_prints_the_id(service, capsys):
    code, out, _ = run(capsys, "jobs", "create", "script-job", "--input", "{}", "--dispatch")
    assert code == 0 and service.get(out.strip()).state == "DISPATCHED"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["jobs", "create", "nope", "--input", "{}"], "unknown job type 'nope'"),
        (["jobs", "create", "script", "--input", "[1]"], "--input must be a JSON object"),
        (["jobs", "create", "script", "--input", "{x"], "--input is not valid JSON"),
        (["jobs", "create", "script", "--input", "@/no/such/file"], "cannot read /no/such/file"),
        (
            ["jobs", "create", "script", "--input", "{}", "--estimations", '{"cpu": -1}'],
            "invalid estimations",
        ),
        (["jobs", "show", "missing"], "no job 'missing'"),
        (["jobs", "dispatch", "missing"], "no job 'missing'"),
        (["jobs", "list", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_input_exits_2_with_the_reason_and_changes_nothing(service, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_INVALID
    assert message in err and out == ""
    assert service.list() == []


def test_a_refused_transition_exits_2(service, capsys):
    job = service.create("script", {})
    code, _, err = run(capsys, "jobs", "retry", job.id)
    assert code == EXIT_INVALID and "only FAILED or CANCELLED" in err
    run(capsys, "jobs", "dispatch", job.id)
    code, _, err = run(capsys, "jobs", "dispatch", job.id)
    assert code == EXIT_INVALID and "only a CREATED job is dispatched" in err
    assert service.get(job.id).version == 3


def test_unknown_state_filter_is_an_argparse_error(service, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["jobs", "list", "--state", "DONE"])
    assert exit_.value.code == EXIT_INVALID
    assert "invalid choice: 'DONE'" in capsys.readouterr().err


def _mover(monkeypatch, steps):
    """Replace the watch loop's sleep by the next step (a change to the jobs) each time it waits."""
    from interlinked.commands import jobs as jobs_command

    pending = list(steps)

    def sleep(_seconds: float) -> None:
        assert pending, "the watch kept looking after the last change"
        pending.pop(0)()

    monkeypatch.setattr(jobs_command, "_sleep", sleep)
    return pending


def test_show_watch_follows_progress_until_the_job_ends(service, capsys, monkeypatch):
    job = service.create("script", {})
    service.signal(job.id, "DISPATCH")
    execution_id = service.signal(job.id, "EXECUTE").current_execution.execution_id
    pending = _mover(
        monkeypatch,
        [
            lambda: None,  # no change: nothing printed
            lambda: service.update_execution(job.id, execution_id, progress=0.5),
            lambda: service.signal_execution(job.id, execution_id, "FAILURE", failure_reason="boom"),
        ],
    )
    code, out, _ = run(capsys, "jobs", "show", job.id, "--watch", "--interval", "0.01")
    assert code == 1 and pending == []
    lines = out.splitlines()
    assert len(lines) == 3
    assert "EXECUTING" in lines[0] and "0%" in lines[0]
    assert "50%" in lines[1] and "FAILED" in lines[2] and "boom" in lines[2]


def test_show_watch_json_prints_one_document_per_change(service, capsys, monkeypatch):
    job = service.create("script", {})
    service.signal(job.id, "DISPATCH")
    execution_id = service.signal(job.id, "EXECUTE").current_execution.execution_id
    _mover(monkeypatch, [lambda: service.signal_execution(job.id, execution_id, "SUCCESS")])
    code, out, _ = run(capsys, "jobs", "show", job.id, "--watch", "--json")
    documents = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [d["state"] for d in documents] == ["EXECUTING", "SUCCEEDED"]


def test_list_watch_ends_when_every_job_ended(service, capsys, monkeypatch):
    first, second = service.create("script", {}), service.create("script", {})
    service.cancel(first.id)
    _mover(monkeypatch, [lambda: service.cancel(second.id)])
    code, out, _ = run(capsys, "jobs", "list", "--watch", "--json")
    snapshots = [json.loads(line)["jobs"] for line in out.splitlines()]
    assert code == 0 and len(snapshots) == 2
    assert sorted(j["state"] for j in snapshots[-1]) == ["CANCELLED", "CANCELLED"]


def test_watch_refuses_a_non_positive_interval(service, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["jobs", "show", "x", "--watch", "--interval", "0"])
    assert exit_.value.code == EXIT_INVALID and "positive number of seconds" in capsys.readouterr().err
