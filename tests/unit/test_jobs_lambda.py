"""The jobs Lambda's JSON contract (``interlinked.jobs_lambda``) on the in-memory store: every SDK
action as an ``aws lambda invoke`` payload, and errors as a JSON error with a stable code and the
JobError's reason — no stack trace, nothing changed (same version, same JSON, no new S3 copy).

``invoke`` does what ``aws lambda invoke --payload '<json>' out.json`` does around the handler: the
event crosses as JSON text and the reply must come back as JSON text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_jobs_machine import FakeDispatcher

from flows.jobs.client import JobService
from flows.jobs.store import MemoryJobStore
from flows.jobs.types import JobTypes
from interlinked import jobs_lambda

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service():
    copies: list[dict] = []
    service = JobService(
        MemoryJobStore(),
        mirror=lambda job: copies.append(job.to_json()),
        dispatcher=FakeDispatcher(),
        job_types=JobTypes({"script": {"flow": "script-job"}}, "local"),
    )
    service.copies = copies
    jobs_lambda.use_service(service)
    yield service
    jobs_lambda.use_service(None)


def invoke(event) -> dict:
    """``aws lambda invoke``: JSON text in, JSON text out (the reply must be plain JSON)."""
    reply = jobs_lambda.handler(json.loads(json.dumps(event)), None)
    return json.loads(json.dumps(reply, allow_nan=False))


def ok(event) -> dict:
    reply = invoke(event)
    assert reply["ok"] is True, reply
    assert reply["action"] == event["action"] or reply["action"] in jobs_lambda.ACTIONS
    return reply


def executing(service) -> tuple[str, str]:
    job = ok({"action": "create", "payload": {"jobType": "script", "inputData": {"name": "n"}}})["job"]
    ok({"action": "signal", "payload": {"jobId": job["id"], "state": "DISPATCH"}})
    job = ok(
        {
            "action": "signal",
            "payload": {
                "jobId": job["id"],
                "state": "EXECUTE",
                "flowRunId": "run-1",
                "infrastructureId": "batch:job-42",
            },
        }
    )["job"]
    return job["id"], job["currentExecution"]["executionId"]


def test_the_seeds_lifecycle_as_lambda_actions(service):
    job = ok(
        {
            "action": "create",
            "payload": {
                "jobType": "script",
                "inputData": {"name": "add", "script": "add.py"},
                "inputFiles": {"data": "s3://b/k"},
                "estimations": {"memoryMiB": 512, "heartbeatTimeoutSeconds": 60},
            },
        }
    )["job"]
    assert (job["state"], job["jobType"], job["inputFiles"]) == ("CREATED", "script", {"data": "s3://b/k"})
    assert job["currentExecution"] is None

    job = ok({"action": "signal", "payload": {"jobId": job["id"], "state": "DISPATCH"}})["job"]
    assert (job["state"], job["flowRunId"]) == ("DISPATCHED", "run-1")
    assert service.dispatcher.runs == [(job["id"], "script-job/local")]

    # the handling side: get, EXECUTE (where the caller runs), progress + metrics + checkpoint
    assert ok({"action": "get", "payload": {"jobId": job["id"]}})["job"]["inputData"]["script"] == "add.py"
    job = ok(
        {
            "action": "signal",
            "payload": {"jobId": job["id"], "state": "EXECUTE", "infrastructureId": "batch:job-42"},
        }
    )["job"]
    current = job["currentExecution"]
    assert set(current) >= {
        "executionId",
        "createdAt",
        "updatedAt",
        "metrics",
        "progress",
        "state",
        "failureReason",
        "finishedAt",
    }
    assert (current["state"], current["progress"], current["flowRunId"], current["infrastructureId"]) == (
        "EXECUTING",
        0.0,
        "run-1",
        "batch:job-42",
    )
    execution_id = current["executionId"]
    job = ok(
        {
            "action": "updateExecution",
            "payload": {
                "jobId": job["id"],
                "executionId": execution_id,
                "progress": 0.5,
                "metrics": {"cpu": 1234, "memory": 5678},
                "checkpoint": {"row": 10},
            },
        }
    )["job"]
    assert (job["currentExecution"]["progress"], job["currentExecution"]["metrics"]) == (
        0.5,
        {"cpu": 1234, "memory": 5678},
    )
    assert ok({"action": "getCheckpoint", "payload": {"jobId": job["id"]}})["checkpoint"] == {"row": 10}
    job = ok(
        {
            "action": "update",
            "payload": {"jobId": job["id"], "outputData": {"sum": 3}, "outputFiles": {"log": "s3://b/l"}},
        }
    )["job"]
    assert (job["outputData"], job["outputFiles"]) == ({"sum": 3}, {"log": "s3://b/l"})
    job = ok(
        {
            "action": "signalExecution",
            "payload": {"jobId": job["id"], "executionId": execution_id, "state": "SUCCESS"},
        }
    )["job"]
    assert (job["state"], job["currentExecution"]["state"], job["currentExecution"]["progress"]) == (
        "SUCCEEDED",
        "SUCCESS",
        1.0,
    )
    listed = ok({"action": "list", "payload": {"state": "SUCCEEDED"}})["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    # every change was copied (the S3 mirror), the last copy is the stored job
    assert service.copies[-1] == service.get(job["id"]).to_json()


def test_failure_with_reason_retry_and_cancel(service):
    job_id, execution_id = executing(service)
    job = ok(
        {
            "action": "signal_execution",  # the Python SDK's name works too
            "payload": {
                "jobId": job_id,
                "executionId": execution_id,
                "state": "FAILURE",
                "failureReason": "TIME_LIMIT: ran past 1 h",
            },
        }
    )["job"]
    assert job["state"] == "FAILED"
    assert job["currentExecution"]["failureReason"] == "TIME_LIMIT: ran past 1 h"
    assert job["currentExecution"]["failureCode"] == "TIME_LIMIT"
    job = ok({"action": "retry", "payload": {"jobId": job_id}})["job"]
    assert job["state"] == "DISPATCHED"
    job = ok({"action": "cancel", "payload": {"jobId": job_id}})["job"]
    assert job["state"] == "CANCELLED"
    assert service.dispatcher.cancelled == [job["flowRunId"]]


def test_the_payload_may_be_inline(service):
    job = ok({"action": "create", "jobType": "script", "inputData": {"name": "x"}})["job"]
    assert ok({"action": "get", "jobId": job["id"]})["job"]["id"] == job["id"]


def refused(service, event, code: str, *words: str) -> dict:
    """The reply is an error with ``code`` whose reason names ``words``; the store and the copies
    are as they were."""
    before = {job.id: job.to_json() for job in service.store.list(limit=1000)}
    copies = len(service.copies)
    reply = invoke(event)
    assert reply["ok"] is False, reply
    assert set(reply) == {"ok", "action", "error"}
    assert set(reply["error"]) == {"code", "reason"}
    assert reply["error"]["code"] == code, reply
    reason = reply["error"]["reason"]
    for word in words:
        assert word in reason, (word, reason)
    assert "Traceback" not in reason and 'File "' not in reason
    assert {job.id: job.to_json() for job in service.store.list(limit=1000)} == before
    assert len(service.copies) == copies
    return reply


def test_bad_transitions_are_refused_with_the_job_errors_reason(service):
    job_id, execution_id = executing(service)
    refused(
        service,
        {"action": "signal", "payload": {"jobId": job_id, "state": "EXECUTE"}},
        "JOB_REFUSED",
        "cannot EXECUTE",
        "still running",
    )
    refused(
        service,
        {
            "action": "updateExecution",
            "payload": {"jobId": job_id, "executionId": execution_id, "progress": 1.5},
        },
        "JOB_REFUSED",
        "progress must be in [0, 1]",
    )
    refused(
        service,
        {"action": "updateExecution", "payload": {"jobId": job_id, "executionId": "nope", "progress": 0.1}},
        "JOB_REFUSED",
        "no execution 'nope'",
    )
    refused(
        service,
        {
            "action": "signalExecution",
            "payload": {
                "jobId": job_id,
                "executionId": execution_id,
                "state": "SUCCESS",
                "failureReason": "x",
            },
        },
        "JOB_REFUSED",
        "FAILURE, not SUCCESS",
    )
    ok(
        {
            "action": "signalExecution",
            "payload": {"jobId": job_id, "executionId": execution_id, "state": "SUCCESS"},
        }
    )
    refused(  # a second SUCCESS
        service,
        {
            "action": "signalExecution",
            "payload": {"jobId": job_id, "executionId": execution_id, "state": "SUCCESS"},
        },
        "JOB_REFUSED",
        "already ended SUCCESS",
    )
    created = ok({"action": "create", "payload": {"jobType": "script"}})["job"]
    refused(  # SUCCESS before EXECUTE
        service,
        {
            "action": "signalExecution",
            "payload": {"jobId": created["id"], "executionId": "e", "state": "SUCCESS"},
        },
        "JOB_REFUSED",
        "no execution",
    )
    refused(
        service,
        {"action": "create", "payload": {"jobType": "nope"}},
        "JOB_REFUSED",
        "unknown job type 'nope'",
        "script",
    )
    refused(
        service,
        {"action": "signal", "payload": {"jobId": created["id"], "state": "RUN"}},
        "JOB_REFUSED",
        "unknown job signal 'RUN'",
    )


def test_unknown_job_is_not_found(service):
    refused(service, {"action": "get", "payload": {"jobId": "missing"}}, "JOB_NOT_FOUND", "no job 'missing'")


@pytest.mark.parametrize(
    ("event", "code", "words"),
    [
        ("not json", "BAD_REQUEST", ("not JSON",)),
        ([1, 2], "BAD_REQUEST", ("JSON object", "list")),
        ({"payload": {}}, "BAD_REQUEST", ('"action"', "create")),
        ({"action": "explode"}, "UNKNOWN_ACTION", ("'explode'", "signalExecution")),
        ({"action": "get", "payload": {}}, "BAD_REQUEST", ("needs 'jobId'",)),
        ({"action": "get", "payload": {"jobId": 7}}, "BAD_REQUEST", ("'jobId' must be a string", "int")),
        ({"action": "get", "payload": "id"}, "BAD_REQUEST", ('"payload" must be a JSON object',)),
        ({"action": "get", "payload": {}, "jobId": "x"}, "BAD_REQUEST", ("outside the payload", "jobId")),
        ({"action": "list", "payload": {"limit": 0}}, "BAD_REQUEST", ("'limit' must be between 1 and 1000",)),
        ({"action": "list", "payload": {"limit": True}}, "BAD_REQUEST", ("'limit' must be an integer",)),
        ({"action": "create", "payload": {"jobType": " "}}, "BAD_REQUEST", ("must not be empty",)),
    ],
)
def test_malformed_requests(service, event, code, words):
    if isinstance(event, str):  # a raw text payload reaches the handler as a string
        before = len(service.store.list(limit=1000))
        reply = jobs_lambda.handler(event, None)
        assert (reply["ok"], reply["error"]["code"]) == (False, code)
        assert all(word in reply["error"]["reason"] for word in words)
        assert len(service.store.list(limit=1000)) == before
        return
    refused(service, event, code, *words)


def test_a_misspelt_field_changes_nothing(service):
    job_id, execution_id = executing(service)
    refused(
        service,
        {
            "action": "updateExecution",
            "payload": {"jobId": job_id, "executionId": execution_id, "progres": 0.5},
        },
        "BAD_REQUEST",
        "unknown field(s) for updateExecution: progres",
        "progress",
    )
    refused(
        service,
        {"action": "signal", "payload": {"jobId": job_id, "state": "DISPATCH", "infrastructureId": "x"}},
        "BAD_REQUEST",
        "EXECUTE only",
    )


def test_a_failed_dispatch_is_undone_and_said(service):
    from interlinked.bridge.prefect_api import DeploymentNotFound, PrefectUnavailable

    job = ok({"action": "create", "payload": {"jobType": "script"}})["job"]
    service.dispatcher.fail = PrefectUnavailable("connection refused to 10.0.0.5:4200")
    reply = invoke({"action": "signal", "payload": {"jobId": job["id"], "state": "DISPATCH"}})
    assert reply["error"]["code"] == "UNAVAILABLE"
    assert "10.0.0.5" not in reply["error"]["reason"]
    assert service.get(job["id"]).state == "CREATED"
    service.dispatcher.fail = DeploymentNotFound("deployment 'script-job/local' does not exist")
    reply = invoke({"action": "signal", "payload": {"jobId": job["id"], "state": "DISPATCH"}})
    assert reply["error"]["code"] == "DEPLOYMENT_NOT_FOUND"
    assert "script-job/local" in reply["error"]["reason"]
    assert service.get(job["id"]).state == "CREATED"


def test_a_bug_is_internal_with_the_request_id_and_no_trace(service, caplog):
    class Context:
        aws_request_id = "req-123"

    def broken(*args, **kwargs):
        raise KeyError("secret detail of /var/task/flows/jobs/store.py")

    service.get = broken
    reply = jobs_lambda.handler({"action": "get", "payload": {"jobId": "x"}}, Context())
    assert reply == {
        "ok": False,
        "action": "get",
        "error": {"code": "INTERNAL", "reason": "internal error (request req-123); see the function's log"},
    }
    assert "secret detail" in caplog.text  # the details are in the log, not in the reply


def test_an_unreachable_store_is_unavailable(service):
    import psycopg

    def down(*args, **kwargs):
        raise psycopg.OperationalError('connection to server at "10.1.2.3", port 5432 failed')

    service.store.get = down
    reply = invoke({"action": "get", "payload": {"jobId": "x"}})
    assert reply["error"] == {"code": "UNAVAILABLE", "reason": "the job store did not answer; try again"}


def test_setup_without_a_database_says_what_is_missing(monkeypatch):
    jobs_lambda.use_service(None)
    for name in jobs_lambda._CONFIG:
        monkeypatch.delenv(name, raising=False)
    reply = jobs_lambda.handler({"action": "get", "payload": {"jobId": "x"}}, None)
    assert reply["ok"] is False and reply["error"]["code"] == "NOT_CONFIGURED"
    assert "INTERLINKED_DATABASE_URL" in reply["error"]["reason"]


def test_database_url_from_the_rds_secret():
    class Secrets:
        def get_secret_value(self, SecretId):
            assert SecretId == "arn:secret"
            return {"SecretString": json.dumps({"username": "u", "password": "p@ss/w:rd"})}

    url = jobs_lambda.database_url(
        Secrets(),
        {
            "INTERLINKED_DATABASE_URL_TEMPLATE": "postgresql://u:{password}@db:5432/interlinked?sslmode=require",
            "INTERLINKED_DATABASE_SECRET_ARN": "arn:secret",
        },
    )
    assert url == "postgresql://u:p%40ss%2Fw%3Ard@db:5432/interlinked?sslmode=require"


def test_the_handler_runs_without_prefect(tmp_path):
    """The Lambda package carries no Prefect: the whole lifecycle runs with ``import prefect`` failing."""
    script = tmp_path / "no_prefect.py"
    script.write_text(
        "import sys\n"
        "for name in ('prefect', 'prefect_aws'):\n"
        "    sys.modules[name] = None  # import fails\n"
        "from flows.jobs.client import JobService\n"
        "from flows.jobs.store import MemoryJobStore\n"
        "from flows.jobs.types import JobTypes\n"
        "from interlinked import jobs_lambda\n"
        "class D:\n"
        "    def create_run(self, job, deployment): return 'run-1'\n"
        "    def cancel_run(self, run): pass\n"
        "jobs_lambda.use_service(JobService(MemoryJobStore(), dispatcher=D(),"
        " job_types=JobTypes({'script': {'flow': 'script-job'}})))\n"
        "h = jobs_lambda.handler\n"
        "j = h({'action': 'create', 'payload': {'jobType': 'script'}})['job']\n"
        "h({'action': 'signal', 'payload': {'jobId': j['id'], 'state': 'DISPATCH'}})\n"
        "j = h({'action': 'signal', 'payload': {'jobId': j['id'], 'state': 'EXECUTE'}})['job']\n"
        "e = j['currentExecution']['executionId']\n"
        "h({'action': 'updateExecution', 'payload': {'jobId': j['id'], 'executionId': e, 'progress': 0.3}})\n"
        "r = h({'action': 'signalExecution', 'payload': {'jobId': j['id'], 'executionId': e, 'state': 'SUCCESS'}})\n"
        "assert r['ok'] and r['job']['state'] == 'SUCCEEDED', r\n"
        "assert 'prefect' not in [m for m in sys.modules if sys.modules[m] is not None], 'prefect imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
