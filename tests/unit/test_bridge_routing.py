"""Routes file and routing decisions (pure): what runs, what is ignored, with which key."""

from __future__ import annotations

import json
import uuid

import pytest

from interlinked.bridge.core import UNROUTABLE, BridgeFailure, decide, derived_id
from interlinked.bridge.events import MessageRecord, S3Record, TestEventRecord
from interlinked.bridge.routes import RoutesError, load_routes, parse_routes, render

VARIABLES = {"data": "data-bkt", "analysis": "analysis-bkt", "deployment_set": "local"}


@pytest.fixture(scope="module")
def table():
    return load_routes(variables=VARIABLES)


def s3(key: str, bucket: str = "analysis-bkt", event: str = "ObjectCreated:Put", **extra) -> S3Record:
    return S3Record(bucket=bucket, key=key, event_name=event, etag="e1", event_time="t1", **extra)


def test_submission_key_runs_process_submission_with_group_tag(table):
    decision = decide(table, s3("lab1/submissions/submit.json"))
    assert decision.action == "dispatch"
    assert decision.deployment == "process-submission/local"
    assert decision.parameters == {
        "bucket": "analysis-bkt",
        "key": "lab1/submissions/submit.json",
        "etag": "e1",
        "version_id": None,
        "writer": None,  # the event named no identity
    }
    assert decision.tags == ["submission", "group:lab1"]
    assert decision.flow_run_name == "lab1: submit.json"
    assert decision.idempotency_key == "submission:s3:analysis-bkt/lab1/submissions/submit.json@e1#t1"


def test_the_writer_of_a_submission_is_passed_to_the_flow(table):
    record = s3("lab1/submissions/submit.json", writer="AWS:AROAEXAMPLE123:alice")
    decision = decide(table, record)
    assert decision.parameters["writer"] == "AWS:AROAEXAMPLE123:alice"
    # the same upload is the same run, whoever the event names
    assert decision.idempotency_key == decide(table, s3("lab1/submissions/submit.json")).idempotency_key


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("lab1/results/job__analysis-bkt_t/logs/DATASET_NAME:x_STATUS.txt", "own-submission-results"),
        ("lab1/results/job__analysis-bkt_t/process_results/x/summary.json", "own-submission-results"),
        ("lab1/inputs/data.json", "no-route"),
        ("lab1/configs/config.json", "no-route"),
        ("lab1/submissions/nested/submit.json", "no-route"),
        ("submissions/submit.json", "no-route"),
        ("lab1/submissions/submit.txt", "no-route"),
    ],
)
def test_everything_else_in_the_analysis_bucket_is_ignored(table, key, code):
    decision = decide(table, s3(key))
    assert decision.action == "ignore" and decision.code == code


def test_own_writes_in_the_data_bucket_never_loop_back(table):
    for key in ("results/j/result.json", "logs/j.log", "jobs/abc.json", "scripts/j/a.py"):
        assert decide(table, s3(key, bucket="data-bkt")).code == "own-job-outputs"


def test_job_drop_gets_a_stable_job_id(table):
    record = s3("jobs/incoming/my job.json", bucket="data-bkt")
    decision = decide(table, record)
    assert decision.deployment == "script-job-submission/local"
    job_id = decision.parameters["job_id"]
    assert uuid.UUID(job_id) and job_id == derived_id(decision.idempotency_key, "job")
    assert decision.tags == ["script-job", f"job:{job_id}", "by-event"]
    assert decide(table, record).parameters["job_id"] == job_id  # a redelivery: the same job


def test_test_event_and_deletions_are_ignored(table):
    assert decide(table, TestEventRecord(bucket="analysis-bkt")).code == "test-event"
    assert decide(table, s3("lab1/submissions/a.json", event="ObjectRemoved:Delete")).code == "not-created"


def test_job_message_passes_the_payload(table):
    record = MessageRecord(
        type="script-job", body={"script": "a.py"}, payload={"script": "a.py"}, message_id="m1"
    )
    decision = decide(table, record)
    assert decision.parameters["description"] == {"script": "a.py"}
    assert decision.idempotency_key == "script-job-message:msg:m1"


def test_unroutable_message_type_is_a_failure_naming_the_known_types(table):
    record = MessageRecord(type="launch", body={}, payload={}, message_id="m1")
    with pytest.raises(BridgeFailure) as failure:
        decide(table, record)
    assert failure.value.category == UNROUTABLE and "'launch'" in failure.value.reason
    assert "script-job" in failure.value.reason and failure.value.permanent


def test_very_long_keys_are_hashed(table):
    decision = decide(table, s3("lab1/submissions/" + "x" * 900 + ".json"))
    assert len(decision.idempotency_key) < 100 and decision.idempotency_key.startswith("submission:sha256:")


def test_settings_variables_follow_the_environment(monkeypatch):
    monkeypatch.setenv("INTERLINKED_ANALYSIS_BUCKET", "other-analysis")
    monkeypatch.setenv("INTERLINKED_DEPLOYMENT_SET", "ecs")
    table = load_routes()
    decision = decide(table, s3("g/submissions/s.json", bucket="other-analysis"))
    assert decision.deployment == "process-submission/ecs"


def test_an_analysis_buckets_submissions_run_process_submission_with_that_bucket(monkeypatch):
    """NeuroCAAS's "the bucket is the analysis": INTERLINKED_ANALYSIS_BUCKETS (what Terraform gives
    the bridge) makes each analysis's own bucket routed and ignored like the analysis bucket."""
    monkeypatch.setenv("INTERLINKED_ANALYSIS_BUCKET", "shared-analysis")
    monkeypatch.setenv("INTERLINKED_ANALYSIS_BUCKETS", json.dumps({"describe": "describe-ncap-web"}))
    table = load_routes()
    decision = decide(table, s3("lab1/submissions/submit.json", bucket="describe-ncap-web"))
    assert (decision.action, decision.deployment) == ("dispatch", "process-submission/local")
    assert decision.parameters["bucket"] == "describe-ncap-web"
    assert decision.tags == ["submission", "group:lab1"]
    own = decide(table, s3("lab1/results/job__describe-ncap-web_t/end.txt", bucket="describe-ncap-web"))
    assert (own.action, own.code) == ("ignore", "own-submission-results")
    assert decide(table, s3("lab1/submissions/submit.json", bucket="shared-analysis")).action == "dispatch"
    # A bucket nobody registered stays unrouted, and the data bucket's rules do not spread.
    assert decide(table, s3("lab1/submissions/submit.json", bucket="elsewhere")).code == "no-route"
    assert decide(table, s3("jobs/incoming/j.json", bucket="describe-ncap-web")).code == "no-route"
    assert "describe-ncap-web" in table.buckets()


def test_without_the_variable_an_analysis_bucket_is_not_routed(table):
    assert decide(table, s3("lab1/submissions/submit.json", bucket="describe-ncap-web")).code == "no-route"


@pytest.mark.parametrize("value", ["not json", '["a"]', '{"describe": 3}'])
def test_a_malformed_analysis_bucket_map_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("INTERLINKED_ANALYSIS_BUCKETS", value)
    with pytest.raises(RoutesError, match="INTERLINKED_ANALYSIS_BUCKETS"):
        load_routes()


def test_routes_file_from_the_environment(monkeypatch, tmp_path):
    path = tmp_path / "routes.json"
    path.write_text(
        json.dumps(
            {
                "routes": [
                    {
                        "name": "emit-only",
                        "match": {"source": "s3", "bucket": "{analysis}", "prefix": "in/", "suffix": ".csv"},
                        "action": "emit",
                    }
                ]
            }
        )
    )
    monkeypatch.setenv("INTERLINKED_BRIDGE_ROUTES", str(path))
    table = load_routes(variables=VARIABLES)
    assert decide(table, s3("in/a.csv")).action == "emit"
    assert decide(table, s3("in/a.json")).code == "no-route"


def route(**changes):
    base = {
        "name": "r",
        "match": {"source": "s3", "bucket": "{analysis}"},
        "deployment": "flow/local",
        "parameters": {"key": "{key}"},
    }
    base.update(changes)
    return {"routes": [base]}


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([], "expected a JSON object"),
        ({"routes": []}, "non-empty list"),
        ({"routes": [], "extra": 1}, "unknown top-level"),
        (route(parameters={"key": "{nope}"}), "unknown variable(s) ['nope']"),
        (route(match={"source": "s3", "bucket": "{nobucket}"}), "unknown variable(s) ['nobucket']"),
        (route(match={"source": "s3", "bucket": "b", "key_regex": "("}), "invalid regular expression"),
        (route(match={"source": "ftp"}), "match.source must be"),
        (route(match={"source": "message"}, parameters={}), "match.type is required"),
        (route(deployment="no-slash"), "'<flow name>/<deployment name>'"),
        (route(action="explode"), "'action' must be one of"),
        (route(tags="t"), "'tags' must be a list"),
        (route(name="bad name!"), "simple identifier"),
        (route(surprise=1), "unknown field(s) ['surprise']"),
        ({"routes": route()["routes"] * 2}, "repeated"),
    ],
)
def test_invalid_routes_are_refused_with_the_entry_named(document, words):
    with pytest.raises(RoutesError) as error:
        parse_routes(document, variables=VARIABLES, source="routes.json")
    assert words in str(error.value) and "routes.json" in str(error.value)


def test_render_keeps_types_for_whole_placeholders():
    variables = {"body": {"a": [1]}, "key": "k", "none": None}
    assert render({"x": "{body}", "y": "s3://{key}", "z": ["{none}", "{none}-x"]}, variables) == {
        "x": {"a": [1]},
        "y": "s3://k",
        "z": [None, "-x"],
    }


def test_a_cloudtrail_upload_runs_the_submission_with_its_writer_and_a_read_is_ignored(table):
    from test_bridge_events import cloudtrail

    from interlinked.bridge.events import parse_message

    [record] = parse_message(json.dumps(cloudtrail()))
    decision = decide(table, record)
    assert (decision.action, decision.deployment) == ("dispatch", "process-submission/local")
    assert decision.parameters["writer"] == "AROAJBNCAL3UTR5C42U4M:alice"
    [read] = parse_message(json.dumps(cloudtrail("GetObject")))
    assert (decide(table, read).action, decide(table, read).code) == ("ignore", "not-created")
