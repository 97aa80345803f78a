"""Real Cellenics requests through the protocol and the task handlers, in process.

Every request fixture (tests/fixtures/cellenics/requests, shaped as the real UI and API send them)
is parsed, answered and wrapped as the service does; the WorkResponse must pass our schema of the
real API's ``WorkResponse.v1.yaml`` and the result the checks of what the real UI reads. The same
fixtures go through the running service in tests/integration/test_analysis_service.py.
"""

from __future__ import annotations

import json

import pytest
from _cellenics import (
    FILE_TASKS,
    NOT_CACHEABLE,
    UI_CHECKS,
    check_work_response,
    fixtures,
    materialise,
    parse_body,
)

from flows.analysis.experiments import prepare_in_memory
from flows.analysis.protocol import encode, parse_task, work_response
from flows.analysis.tasks import present, run_task

FIXTURES = fixtures()
# Tasks answered with a stored file (the processed .h5ad) are answered by the service from S3, not
# by a handler: tests/integration/test_analysis_service.py checks them; the response shape is below.
COMPUTED = sorted(
    name for name, item in FIXTURES.items() if item["request"]["body"]["name"] not in FILE_TASKS
)


@pytest.fixture(scope="module")
def pbmc():
    import scanpy as sc

    return prepare_in_memory(sc.datasets.pbmc68k_reduced(), "pbmc", "v1")


@pytest.fixture(scope="module")
def truth(pbmc):
    return {
        "n_cells": pbmc.adata.n_obs,
        "n_cell_ids": pbmc.adata.n_obs,
        "gene_names": [str(name) for name in pbmc.adata.var_names],
    }


def answer(request: dict, experiment) -> dict:
    """What the service publishes for ``request`` (without the transport)."""
    task = parse_task(request)
    value = run_task(task, experiment)
    body = present(task, value if isinstance(value, str) else encode(value))  # as the service cuts it
    return work_response(task.request, body, cacheable=task.cacheable, content_type=task.content_type)


def test_fixtures_cover_every_task_the_service_shares_with_the_real_worker():
    named = {fixture["request"]["body"]["name"] for fixture in FIXTURES.values()}
    assert named == set(UI_CHECKS)
    assert all(fixture.get("source") for fixture in FIXTURES.values())


@pytest.mark.parametrize("name", COMPUTED)
def test_real_request_gets_a_response_the_real_api_and_ui_accept(name, pbmc, truth):
    fixture = FIXTURES[name]
    generation = name.split("_", 1)[0]
    request = materialise(fixture, "pbmc")
    response = answer(request, pbmc)
    check_work_response(json.loads(encode(response)), generation=generation)
    task = request["body"]["name"]
    assert response["response"]["cacheable"] is (task not in NOT_CACHEABLE)
    item = response["results"][0]
    UI_CHECKS[task](parse_body(item["body"], item["content-type"]), request, truth)


def test_the_schema_rejects_the_previous_result_format():
    """Our previous items (``{"type": "application/json", "body": ...}``) were dropped by the real API."""
    import jsonschema

    old = {
        "type": "WorkResponse",
        "request": materialise(FIXTURES["v1_GetNUmis"], "pbmc"),
        "response": {"error": False, "cacheable": True},
        "results": [{"type": "application/json", "body": "[]"}],
    }
    with pytest.raises(jsonschema.ValidationError):
        check_work_response(old)


def test_the_processed_file_response_is_one_the_real_api_accepts():
    from flows.analysis.protocol import H5AD_CONTENT_TYPE, file_response

    request = materialise(FIXTURES["v2_DownloadAnnotSeuratObject"], "pbmc")
    response = file_response(
        request, bucket="results", key=f"worker-results/{request['ETag']}", signed_url="u"
    )
    check_work_response(json.loads(encode(response)), generation="v2")
    [item] = response["results"]
    assert item == {
        "content-type": H5AD_CONTENT_TYPE,
        "content-encoding": "identity",
        "type": "s3-path",
        "body": f"results/worker-results/{request['ETag']}",
    }
    assert response["response"]["signedUrl"] == "u" and response["response"]["cacheable"] is True
