"""The analysis service's wire contract, without any server."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import pytest

from flows.analysis.protocol import (
    ALL_ERROR_CODES,
    TASK_NAMES,
    ErrorCode,
    ServiceError,
    UnparseableMessage,
    cache_key,
    decode_message,
    encode,
    error_response,
    fits_sns,
    offloaded_response,
    parse_task,
    parse_timeout,
    request_identity,
    response_attributes,
    response_record,
    response_record_key,
    s3_path_of,
    work_response,
)
from flows.analysis.tasks import prepare_parameters

SEED_TASKS = [
    {
        "uuid": "509520fe-d329-437d-8752-b5868ad59425",
        "socketId": "Y1poEygzBfrDmIWpAAAA",
        "experimentId": "5e959f9c9f4b120771249001",
        "timeout": "2021-01-01T00:00:00Z",
        "body": {"name": "GetEmbedding", "type": "pca"},
    },
    {
        "uuid": "509520fe-d329-437d-8752-b5868ad59425",
        "socketId": "Y1poEygzBfrDmIWpAAAA",
        "experimentId": "5e959f9c9f4b120771249001",
        "timeout": "2021-01-01T00:00:00Z",
        "body": {
            "name": "ListGenes",
            "selectFields": ["highly_variable", "gene_names", "dispersions"],
            "orderBy": "dispersions",
            "orderDirection": "desc",
            "offset": 0,
            "limit": 20,
        },
    },
    {
        "uuid": "509520fe-d329-437d-8752-b5868ad59425",
        "socketId": "Y1poEygzBfrDmIWpAAAA",
        "experimentId": "5e959f9c9f4b120771249001",
        "timeout": "2099-12-31 00:00:00",
        "body": {
            "name": "GeneExpression",
            "cellSets": [
                "louvain-0",
                "louvain-1",
                "louvain-2",
                "louvain-3",
                "louvain-4",
                "louvain-5",
                "louvain-6",
            ],
            "genes": ["TGFB1", "CST3"],
        },
    },
    {
        "uuid": "509520fe-d329-437d-8752-b5868ad59425",
        "socketId": "Y1poEygzBfrDmIWpAAAA",
        "experimentId": "1234",
        "timeout": "2099-12-31 00:00:00",
        "body": {
            "name": "PrepareExperiment",
            "sourceBucket": "biomage-source-originals",
            "sourceMatrixPath": "pbmc_count_matrices/hg19/",
        },
    },
]


def test_seed_tasks_are_valid_and_the_two_old_ones_expired():
    outcomes = []
    for task in SEED_TASKS:
        try:
            parse_task(task)
            outcomes.append("ok")
        except ServiceError as error:
            outcomes.append(error.code)
    assert outcomes == ["TASK_EXPIRED", "TASK_EXPIRED", "ok", "ok"]
    assert parse_task(SEED_TASKS[0], check_expiry=False).name == "GetEmbedding"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-01-01T00:00:00Z", datetime(2021, 1, 1, tzinfo=UTC)),
        ("2099-12-31 00:00:00", datetime(2099, 12, 31, tzinfo=UTC)),
        ("2030-06-01T12:30:00+02:00", datetime(2030, 6, 1, 10, 30, tzinfo=UTC)),
        ("2030-06-01T12:30:00.250Z", datetime(2030, 6, 1, 12, 30, 0, 250000, tzinfo=UTC)),
        (None, None),
    ],
)
def test_both_timeout_forms_are_utc(text, expected):
    assert parse_timeout(text) == expected


@pytest.mark.parametrize("bad", ["soon", "", 12345, "2021-13-01 00:00:00"])
def test_bad_timeouts_are_invalid_requests(bad):
    with pytest.raises(ServiceError) as caught:
        parse_timeout(bad)
    assert caught.value.code == ErrorCode.INVALID_REQUEST and "timeout" in caught.value.message


def _task(body, **extra):
    return {"uuid": "u-1", "experimentId": "exp-1", "timeout": "2099-12-31 00:00:00", "body": body, **extra}


@pytest.mark.parametrize(
    ("task", "code", "words"),
    [
        ({"experimentId": "e", "body": {"name": "ListGenes"}}, "INVALID_REQUEST", "uuid"),
        ({"uuid": "u", "experimentId": "e", "body": "ListGenes"}, "INVALID_REQUEST", "body"),
        ({"uuid": "u", "experimentId": "e", "body": {"type": "pca"}}, "INVALID_REQUEST", "body.name"),
        (_task({"name": "Teleport"}), "UNKNOWN_TASK", "Teleport"),
        (_task({"name": "ListGenes"}, experimentId="../../etc"), "INVALID_REQUEST", "experimentId"),
        (_task({"name": "ListGenes"}, experimentId=""), "INVALID_REQUEST", "experimentId"),
        (_task({"name": "GeneExpression"}), "INVALID_REQUEST", "'genes' is required"),
        (_task({"name": "GeneExpression", "genes": ["A", 1]}), "INVALID_REQUEST", "string list"),
        (_task({"name": "ListGenes", "limit": 2.5}), "INVALID_REQUEST", "'limit'"),
        (_task({"name": "ListGenes", "offset": True}), "INVALID_REQUEST", "'offset'"),
        (_task({"name": "ClusterCells", "resolution": "high"}), "INVALID_REQUEST", "'resolution'"),
        (_task({"name": "GetEmbedding", "type": "pca", "config": [1]}), "INVALID_REQUEST", "'config'"),
        (_task({"name": "DifferentialExpression", "cellSet": 3}), "INVALID_REQUEST", "'cellSet'"),
        (
            _task(
                {"name": "ListGenes"},
                pagination={"orderBy": "x", "orderDirection": "UP", "offset": 0, "limit": 1},
            ),
            "INVALID_REQUEST",
            "orderDirection",
        ),
        (
            _task(
                {"name": "ListGenes"},
                pagination={"orderBy": "x", "orderDirection": "ASC", "offset": -1, "limit": 1},
            ),
            "INVALID_REQUEST",
            "pagination.offset",
        ),
        (
            _task({"name": "ListGenes"}, pagination={"orderBy": "x"}),
            "INVALID_REQUEST",
            "pagination.orderDirection",
        ),
        (_task({"name": "PrepareExperiment", "sourceBucket": "b"}), "INVALID_REQUEST", "sourceMatrixPath"),
        (_task({"name": "ListGenes"}, timeout="2021-01-01 00:00:00"), "TASK_EXPIRED", "expired"),
    ],
)
def test_invalid_tasks_get_stable_codes_and_say_why(task, code, words):
    with pytest.raises(ServiceError) as caught:
        parse_task(task)
    assert caught.value.code == code and words in caught.value.message
    assert code in ALL_ERROR_CODES


def test_unknown_task_is_reported_before_expiry_and_body_checks():
    with pytest.raises(ServiceError) as caught:
        parse_task(_task({"name": "Nope", "whatever": 1}, timeout="2000-01-01 00:00:00"))
    assert caught.value.code == "UNKNOWN_TASK"
    assert all(name in caught.value.message for name in TASK_NAMES)


def test_fields_the_real_ui_sends_are_accepted_even_when_unused():
    """Real Cellenics bodies carry fields this service does not use; the real worker ignores them."""
    task = parse_task(_task({"name": "GetEmbedding", "type": "pca", "extra": 1, "useSaved": True}))
    assert task.body["extra"] == 1
    current = parse_task(
        {"ETag": "ab12", "experimentId": "e", "timeout": "2099-01-01T00:00:00Z", "body": {"name": "GetNUmis"},
         "requestProps": {"broadcast": False}, "signedUrl": None}
    )  # fmt: skip
    assert current.uuid == "ab12"


def test_optional_fields_and_nulls_are_accepted():
    task = parse_task(_task({"name": "ListGenes", "orderBy": None, "limit": None, "geneNamesFilter": None}))
    assert task.name == "ListGenes" and task.experiment_id == "exp-1" and task.uuid == "u-1"
    assert parse_task({"uuid": "u", "experimentId": "e", "body": {"name": "ListGenes"}}).deadline is None


@pytest.mark.parametrize(
    ("text", "words"), [("not json", "not JSON"), ("[1, 2]", "not an object"), ('"x"', "not an object")]
)
def test_unparseable_messages(text, words):
    with pytest.raises(UnparseableMessage, match=words):
        decode_message(text)
    assert decode_message('{"a": 1}') == {"a": 1}


def test_prepare_config_maps_to_analysis_parameters():
    assert prepare_parameters({"config": {"minGenes": 10, "computeUmap": False}}) == {
        "min_genes": 10,
        "compute_umap": False,
    }
    assert prepare_parameters({}) == {}
    with pytest.raises(ServiceError, match="'colour'"):
        prepare_parameters({"config": {"colour": "red"}})


def test_response_documents_have_the_contract_shape():
    request = SEED_TASKS[2]
    ok = work_response(request, '{"x": 1}')
    assert ok == {
        "type": "WorkResponse",
        "request": request,
        "response": {"error": False, "errorCode": None, "userMessage": None, "cacheable": True},
        "results": [
            {
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "type": "inline",
                "body": '{"x": 1}',
            }
        ],
    }
    failed = error_response(request, "TASK_EXPIRED", "too late")
    assert failed["response"] == {
        "error": True,
        "errorCode": "TASK_EXPIRED",
        "userMessage": "too late",
        "cacheable": False,
    }
    assert failed["results"] == []
    big = offloaded_response(request, bucket="b", key="analysis-cache/e/k.json")
    assert big["results"] == [
        {"content-type": "application/json", "content-encoding": "utf-8", "type": "s3-path",
         "body": "b/analysis-cache/e/k.json"}
    ]  # fmt: skip
    assert (
        s3_path_of(big["results"][0]) == ("b", "analysis-cache/e/k.json")
        and s3_path_of(ok["results"][0]) is None
    )
    assert work_response(request, "{}", cacheable=False)["response"]["cacheable"] is False
    attributes = response_attributes(request, failed)
    assert attributes["uuid"] == request["uuid"] and attributes["errorCode"] == "TASK_EXPIRED"
    assert attributes["taskName"] == "GeneExpression" and attributes["error"] == "true"


def test_encode_is_compact_json_with_null_for_non_finite_and_sns_limit():
    assert encode({"x": [1.5, float("nan"), None], "y": "é"}) == '{"x":[1.5,null,null],"y":"é"}'
    assert json.loads(encode({"v": 0.1 + 0.2})) == {"v": 0.1 + 0.2}
    assert fits_sns("x" * 200_000) and not fits_sns("x" * 260_000)
    assert not fits_sns("é" * 130_000)  # bytes, not characters, count


def test_cache_key_is_content_addressed():
    body = {"name": "ListGenes", "limit": 5, "offset": 0}
    key = cache_key(experiment_id="e", version="v1", body=body, analysis_version="1.0.0")
    assert key.startswith("analysis-cache/e/") and key.endswith(".json")
    assert key == cache_key(
        experiment_id="e", version="v1", body=dict(reversed(body.items())), analysis_version="1.0.0"
    )
    for changed in (
        {"experiment_id": "e2"},
        {"version": "v2"},
        {"body": {**body, "limit": 6}},
        {"analysis_version": "1.0.1"},
    ):
        arguments = {
            "experiment_id": "e",
            "version": "v1",
            "body": body,
            "analysis_version": "1.0.0",
            **changed,
        }
        assert cache_key(**arguments) != key


def test_record_keys_and_identity():
    assert response_record_key("abc-123") == "analysis-responses/abc-123.json"
    assert "/" not in response_record_key("a/b/../c")[len("analysis-responses/") :]
    assert request_identity(SEED_TASKS[0]) == request_identity(json.loads(json.dumps(SEED_TASKS[0])))
    assert request_identity(SEED_TASKS[0]) != request_identity(SEED_TASKS[1])
    failed = error_response(SEED_TASKS[0], ErrorCode.UNKNOWN_GENE, "no such gene")
    record = response_record("m-1", failed, "sns-1", by="tests")
    assert {key: value for key, value in record.items() if key != "publishedAt"} == {
        "messageId": "m-1",
        "uuid": SEED_TASKS[0]["uuid"],
        "snsMessageId": "sns-1",
        "error": True,
        "errorCode": "UNKNOWN_GENE",
        "by": "tests",
    }


def test_service_ready_needs_a_live_fresh_ready_process(tmp_path):
    """The readiness check of the service's status file (``blocks.status``, as the local stack uses it)."""
    import psutil

    from blocks.status import service_ready, write_status

    path = tmp_path / "status.json"
    assert not service_ready(path)
    me = psutil.Process()
    status = {
        "ready": True,
        "pid": os.getpid(),
        "process_started": me.create_time(),
        "heartbeat": time.time(),
    }
    write_status(path, status)
    assert service_ready(path) and service_ready(path, pid=os.getpid())
    assert not service_ready(path, pid=os.getpid() + 1)
    write_status(path, {**status, "ready": False})
    assert not service_ready(path)
    write_status(path, {**status, "heartbeat": time.time() - 60})
    assert not service_ready(path)
    write_status(path, {**status, "process_started": me.create_time() - 100})  # a recycled pid
    assert not service_ready(path)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "GetTrajectoryAnalysisPseudoTime", "embedding": {}, "clustering": {}, "cellSets": ["louvain"],
          "rootNodes": ["0"]}, "rootNodes"),
        ({"name": "BatchDifferentialExpression", "cellSet": "louvain-0", "basis": ["all"]}, "cellSet"),
        ({"name": "ScTypeAnnotate", "species": "human"}, "tissue"),
        ({"name": "GetBackgroundExpressedGenes", "cellSet": "louvain-1", "basis": "all"}, "compareWith"),
    ],
)  # fmt: skip
def test_new_cellenics_tasks_refuse_malformed_bodies_by_field(body, field):
    with pytest.raises(ServiceError) as caught:
        parse_task({"uuid": "u", "experimentId": "pbmc", "body": body})
    assert caught.value.code == ErrorCode.INVALID_REQUEST and repr(field) in caught.value.message


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"requestProps": "page 2"}, "requestProps must be an object"),
        ({"requestProps": {"pagination": {"orderBy": "logFC", "orderDirection": "DESC", "offset": 0}}},
         "requestProps.pagination.limit is required"),
        ({"requestProps": {"pagination": {"orderBy": "logFC", "orderDirection": "DESC", "offset": 0, "limit": 5,
          "filters": [{"type": "numeric", "columnName": "logFC", "comparison": "atLeast", "value": 0}]}}},
         "requestProps.pagination.filters: a numeric filter needs comparison"),
        ({"pagination": {"orderBy": "logFC", "orderDirection": "DESC", "offset": 0, "limit": 5,
          "filters": [{"type": "numeric", "columnName": "logFC", "comparison": "lessThan", "value": "0"}]}},
         "pagination.filters: a numeric filter needs"),
    ],
)  # fmt: skip
def test_current_envelope_request_props_and_numeric_filters_are_checked(extra, words):
    request = {"ETag": "abc123", "experimentId": "pbmc", **extra,
               "body": {"name": "DifferentialExpression", "cellSet": "louvain-1", "compareWith": "rest"}}  # fmt: skip
    with pytest.raises(ServiceError) as caught:
        parse_task(request)
    assert caught.value.code == ErrorCode.INVALID_REQUEST and words in caught.value.message


def test_current_envelope_pagination_is_read_from_request_props_first():
    body = {"name": "DifferentialExpression", "cellSet": "louvain-1", "compareWith": "rest"}
    page = {"orderBy": "logFC", "orderDirection": "DESC", "offset": 0, "limit": 5}
    top = {**page, "limit": 9}
    current = parse_task(
        {"ETag": "ab", "experimentId": "pbmc", "body": body, "requestProps": {"pagination": page}}
    )
    assert current.pagination == page
    assert (
        parse_task({"ETag": "ab", "experimentId": "pbmc", "body": body, "pagination": top}).pagination == top
    )
    both = {
        "ETag": "ab",
        "experimentId": "pbmc",
        "body": body,
        "pagination": top,
        "requestProps": {"pagination": page},
    }
    assert parse_task(both).pagination == page
    # The SNS-era envelope pages by its own pagination only.
    sns = {
        "uuid": "u",
        "experimentId": "pbmc",
        "body": body,
        "pagination": top,
        "requestProps": {"pagination": page},
    }
    assert parse_task(sns).pagination == top
