"""The interlinker R package drives jobs through the jobs Lambda (``interlinked.jobs_lambda``).

The Invoke call is signed as botocore signs it (service ``lambda``); and an R program runs the seed's
lifecycle against the real handler behind a local HTTP endpoint that answers as Lambda's Invoke API
does (the reply document, HTTP 200 — also for the handler's JSON errors), on the in-memory store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from flows.jobs.client import JobService
from flows.jobs.store import MemoryJobStore
from flows.jobs.types import JobTypes
from interlinked import jobs_lambda

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "r/interlinker/R/interlinker.R"
RSCRIPT = shutil.which("Rscript")
URL = "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/interlinked-prod-jobs-api/invocations"
BODY = '{"action":"get","payload":{"jobId":"j-1"}}'
STAMP = "20261202T120304Z"


def rscript(program: str) -> subprocess.CompletedProcess:
    if RSCRIPT is None:
        pytest.skip("Rscript is not installed (Debian: r-base-core; `make test` installs it as root)")
    result = subprocess.run([RSCRIPT, "-e", program], capture_output=True, text=True, timeout=180)
    if result.returncode and "there is no package called" in result.stderr:
        pytest.skip(
            f"an R package is missing (Debian: r-cran-httr, r-cran-jsonlite, r-cran-openssl): {result.stderr}"
        )
    return result


def test_the_invoke_call_is_signed_as_botocore_signs_it():
    result = rscript(
        f"""
        source("{SOURCE}")
        headers <- .sigv4_headers({json.dumps(URL)}, {json.dumps(BODY)},
            time = as.POSIXct("2026-12-02 12:03:04", tz = "UTC"), access_key = "AKIDEXAMPLE",
            secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token = "",
            region = "eu-west-1", service = "lambda")
        cat(jsonlite::toJSON(as.list(headers), auto_unbox = TRUE))
        """
    )
    assert result.returncode == 0, result.stderr
    headers = json.loads(result.stdout)
    request = AWSRequest(method="POST", url=URL, data=BODY.encode(), headers={"X-Amz-Date": STAMP})
    request.context["timestamp"] = STAMP
    signer = SigV4Auth(
        Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "lambda", "eu-west-1"
    )
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    scope = f"AKIDEXAMPLE/{STAMP[:8]}/eu-west-1/lambda/aws4_request"
    assert headers["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed}, Signature={signature}"
    )


@pytest.fixture
def invoke_endpoint():
    """A local endpoint answering as Lambda's Invoke API with the jobs handler; the service behind it."""
    service = JobService(
        MemoryJobStore(),
        dispatcher=type(
            "D", (), {"create_run": lambda self, job, d: "run-1", "cancel_run": lambda self, r: None}
        )(),
        job_types=JobTypes({"script": {"flow": "script-job"}}, "local"),
    )
    jobs_lambda.use_service(service)
    events: list[dict] = []

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self):
            event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            events.append(event)
            body = json.dumps(jobs_lambda.handler(event, None)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Invoke)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/invocations", service, events
    finally:
        server.shutdown()
        jobs_lambda.use_service(None)


def test_an_r_program_runs_the_seeds_lifecycle(invoke_endpoint):
    url, service, events = invoke_endpoint
    result = rscript(
        f"""
        source("{SOURCE}")
        options(interlinker = list(jobs_url = {json.dumps(url)}))
        job <- jobCreate("script", inputData = list(name = "from R", n = 3), estimations = list(memoryMiB = 512))
        job <- jobSignal(job$id, "DISPATCH")
        job <- jobGet(job$id)
        job <- jobSignal(job$id, "EXECUTE", infrastructureId = "batch:r-job-1")
        execution <- job$currentExecution$executionId
        job <- jobUpdateExecution(job$id, execution, progress = 0.5, metrics = list(cpu = 1234, memory = 5678))
        job <- jobUpdate(job$id, outputData = list(total = 42))
        job <- jobSignalExecution(job$id, execution, "SUCCESS")
        refused <- tryCatch(jobSignalExecution(job$id, execution, "SUCCESS"),
                            interlinker_job_error = function(e) list(code = e$code, message = conditionMessage(e)))
        listed <- jobList(state = "SUCCEEDED")
        cat(jsonlite::toJSON(list(id = job$id, state = job$state, refused = refused,
                                  listed = length(listed)), auto_unbox = TRUE))
        """
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["state"] == "SUCCEEDED" and out["listed"] == 1
    assert out["refused"]["code"] == "JOB_REFUSED"
    assert "already ended SUCCESS" in out["refused"]["message"]
    job = service.get(out["id"])
    assert job.input_data == {"name": "from R", "n": 3}
    assert job.output_data == {"total": 42}
    current = job.current_execution
    assert (current.state, current.infrastructure_id, current.metrics) == (
        "SUCCESS",
        "batch:r-job-1",
        {"cpu": 1234, "memory": 5678},
    )
    # what went over the wire is the Lambda's event shape, nothing else
    assert [e["action"] for e in events] == [
        "create",
        "signal",
        "get",
        "signal",
        "updateExecution",
        "update",
        "signalExecution",
        "signalExecution",
        "list",
    ]
    assert all(set(e) == {"action", "payload"} for e in events)
