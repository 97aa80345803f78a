"""The script API's Lambda front end (interlinked/script_api_lambda.py), offline: API Gateway proxy
events (HTTP API 2.0, REST API 1.0) translated into the shared request handling and its replies
into proxy responses. The backend is an in-memory bucket: what is checked here is the translation;
tests/terraform/test_script_api_on_terraform_stack.py runs the handler against the moto stack."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from flows.script_jobs.layout import job_spec_key, script_key
from interlinked import script_api_lambda
from interlinked.script_api_core import MAX_BODY, ApiError
from interlinked.script_api_lambda import handle_event, request_of


class MemoryBackend:
    bucket = "tf-data"

    def __init__(self):
        self.objects: dict[str, tuple[bytes, str, str | None]] = {}
        self.submitted: list[dict] = []

    def put(self, key, body, *, content_type, content_encoding=None):
        self.objects[key] = (body, content_type, content_encoding)

    def read(self, key):
        return self.objects[key][0] if key in self.objects else None

    def exists(self, key):
        return key in self.objects

    def submit(self, description):
        if "name" not in description:
            raise ApiError("invalid job description: name: missing (required)")
        self.submitted.append(description)
        return {"jobName": description["name"], "jobId": "j-1", "flowRunId": "r-1"}


def http_api_event(path: str, body, *, method: str = "POST", b64: bool = False) -> dict:
    """A payload-2.0 event as API Gateway HTTP APIs send it (stage ``$default``)."""
    text = body if isinstance(body, str) else json.dumps(body)
    if b64:
        text = base64.b64encode(text.encode()).decode()
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
        "body": text,
        "isBase64Encoded": b64,
    }


def rest_api_event(path: str, body, *, method: str = "POST") -> dict:
    """A payload-1.0 event (REST API proxy integration, stage in the path as the seed's ``/Prod``)."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"stage": "Prod", "httpMethod": method},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def test_http_api_events_reach_the_shared_handling_and_come_back_as_proxy_responses():
    backend = MemoryBackend()
    reply = handle_event(
        http_api_event("/upload", {"bucket": ["interlinked"], "key": "a.json", "data": [1]}), backend
    )
    assert reply == {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": "ok",
        "isBase64Encoded": False,
    }
    assert backend.objects["a.json"] == (b"[1]", "application/json", None)

    found = handle_event(http_api_event("/exists", {"bucket": "interlinked", "key": "a.json"}), backend)
    assert (found["statusCode"], json.loads(found["body"])) == (200, {"result": "ok"})
    missing = handle_event(http_api_event("/exists", {"bucket": "interlinked", "key": "b.json"}), backend)
    assert missing["statusCode"] == 404 and "does not exist" in json.loads(missing["body"])["result"]


def test_rest_api_events_with_a_stage_in_the_path_and_base64_bodies_are_understood():
    backend = MemoryBackend()
    stored = handle_event(
        rest_api_event("/Prod/upload", {"key": "z.json", "data": {"x": 1}, "gzip": True}), backend
    )
    assert stored["statusCode"] == 200
    body, _, encoding = backend.objects["z.json"]
    assert encoding == "gzip" and json.loads(gzip.decompress(body)) == {"x": 1}
    fetched = handle_event(http_api_event("/fetch", {"key": "z.json"}, b64=True), backend)
    assert (fetched["statusCode"], json.loads(fetched["body"])) == (200, {"x": 1})


def test_submitjob_passes_the_description_unboxed_and_replies_with_the_job():
    backend = MemoryBackend()
    reply = handle_event(
        http_api_event(
            "/submitjob",
            {
                "func": ["myfunc"],
                "arguments": {"a": [1]},
                "name": ["Test job"],
                "script": ["t.r"],
                "debug": [True],
            },
        ),
        backend,
    )
    assert json.loads(reply["body"]) == {"jobName": "Test job", "jobId": "j-1", "flowRunId": "r-1"}
    assert backend.submitted == [
        {"func": "myfunc", "name": "Test job", "script": "t.r", "arguments": {"a": [1]}, "debug": True}
    ]
    refused = handle_event(http_api_event("/submitjob", {"script": "t.r"}), backend)
    assert refused["statusCode"] == 400 and "name" in json.loads(refused["body"])["error"]


@pytest.mark.parametrize(
    ("event", "status", "fragment"),
    [
        (http_api_event("/exists", {"key": "a"}, method="GET"), 405, "POST"),
        (http_api_event("/nope", {}), 404, "no endpoint 'nope'"),
        (http_api_event("/upload", "not json"), 400, "not JSON"),
        (http_api_event("/upload", {"bucket": "other", "key": "k", "data": 1}), 403, "not served"),
        ({"Records": []}, 400, "not an API Gateway proxy event"),
        ({**http_api_event("/upload", {}), "body": "%%%", "isBase64Encoded": True}, 400, "base64"),
        (http_api_event("/upload", "x" * (MAX_BODY + 1)), 413, "larger than"),
    ],
)
def test_requests_that_cannot_be_served_get_a_status_and_the_reason(event, status, fragment):
    reply = handle_event(event, MemoryBackend())
    assert reply["statusCode"] == status
    assert fragment in json.loads(reply["body"])["error"]


def test_a_failing_backend_is_a_500_naming_the_error():
    class Broken(MemoryBackend):
        def exists(self, key):
            raise ConnectionError("S3 unreachable")

    reply = handle_event(http_api_event("/exists", {"key": "a"}), Broken())
    assert reply["statusCode"] == 500
    assert json.loads(reply["body"]) == {"error": "ConnectionError: S3 unreachable"}


def test_request_of_reads_both_payload_formats():
    assert request_of(http_api_event("/log", {"message": "m"})) == ("POST", "/log", b'{"message": "m"}')
    assert request_of(rest_api_event("/Prod/log", {"message": "m"}))[:2] == ("POST", "/Prod/log")


def test_an_unconfigured_function_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("INTERLINKED_DATA_BUCKET", raising=False)
    monkeypatch.setattr(script_api_lambda, "_state", {})
    reply = script_api_lambda.handler(http_api_event("/exists", {"key": "a"}))
    assert reply["statusCode"] == 500 and "INTERLINKED_DATA_BUCKET" in json.loads(reply["body"])["error"]


def test_the_lambda_uses_the_job_layout_of_flows_script_jobs():
    assert f"{script_api_lambda.JOBS_PREFIX}x.json" == job_spec_key("x")
    assert f"{script_api_lambda.SCRIPTS_PREFIX}a/b.r" == script_key("a/b.r")
