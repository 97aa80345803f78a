"""The seed's HTTP API on the Terraform stack (modules/script_api) and the analyses' own buckets.

moto records the HTTP API, its routes, the integration and the Lambda, but serves no request
through them and runs no function without Docker; so the function's handler
(`interlinked.script_api_lambda.handler`) is invoked **in-process** with API Gateway payload-2.0
events, in the environment Terraform gave the function (read back from moto), against the moto
stack's data bucket. `submitjob` creates its run on the session's real Prefect server, in a
deployment of a work pool that no worker polls, so the run stays scheduled and is inspected.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
import uuid
from urllib.parse import unquote_plus

import pytest

pytestmark = pytest.mark.terraform

ENDPOINTS = ("submitjob", "upload", "bulk", "fetch", "exists", "log")


def policy_document(iam, role_arn: str, name: str) -> dict:
    doc = iam.get_role_policy(RoleName=role_arn.rsplit("/", 1)[1], PolicyName=name)["PolicyDocument"]
    return json.loads(doc) if isinstance(doc, str) else doc


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def api_event(path: str, body: dict) -> dict:
    """What an HTTP API ($default stage, payload format 2.0) passes to the function."""
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": path}, "stage": "$default"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


################################################################################
# The API and its Lambda as Terraform created them
################################################################################


def test_routes_are_the_seeds_endpoints_integrated_with_the_function(terraform_local_stack):
    stack = terraform_local_stack
    out = stack.outputs
    apigw, lam = stack.client("apigatewayv2"), stack.client("lambda")
    api_id = out["script_api_id"]
    assert out["script_api_route_keys"] == sorted(f"POST /{name}" for name in ENDPOINTS)

    routes = apigw.get_routes(ApiId=api_id)["Items"]
    assert sorted(route["RouteKey"] for route in routes) == sorted(f"POST /{name}" for name in ENDPOINTS)
    targets = {route["Target"] for route in routes}
    assert len(targets) == 1, targets
    assert {route["AuthorizationType"] for route in routes} == {"AWS_IAM"}
    integration = apigw.get_integration(
        ApiId=api_id, IntegrationId=targets.pop().removeprefix("integrations/")
    )
    function = lam.get_function(FunctionName=out["script_api_function_name"])["Configuration"]
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "2.0"
    assert function["FunctionArn"] in integration["IntegrationUri"]

    [stage] = apigw.get_stages(ApiId=api_id)["Items"]
    assert (stage["StageName"], stage["AutoDeploy"]) == ("$default", True)
    assert stage["AccessLogSettings"]["DestinationArn"].split(":log-group:")[1].rstrip(":*") == (
        f"/aws/apigateway/{out['script_api_function_name']}"
    )
    assert out["script_api_url"].endswith("/") and api_id in out["script_api_url"]
    assert stack.env["script_api_url"] == out["script_api_url"]

    # API Gateway may invoke it, from this API only.
    statement = json.loads(lam.get_policy(FunctionName=out["script_api_function_name"])["Policy"])[
        "Statement"
    ]
    [allow] = [s for s in statement if s["Sid"] == "AllowApiGatewayInvoke"]
    assert allow["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert f":{api_id}/" in json.dumps(allow["Condition"])


def test_the_function_runs_the_script_api_handler_with_least_privilege(terraform_local_stack):
    stack = terraform_local_stack
    out = stack.outputs
    lam, iam = stack.client("lambda"), stack.client("iam")
    config = lam.get_function(FunctionName=out["script_api_function_name"])["Configuration"]
    assert config["Handler"] == "interlinked.script_api_lambda.handler"
    assert config["Runtime"] == "python3.11"
    package = stack.workdir.parents[1] / "build" / "script_api.zip"
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(package.read_bytes()).digest()).decode()
    env = config["Environment"]["Variables"]
    assert env["INTERLINKED_DATA_BUCKET"] == stack.env["buckets"]["data"]
    assert env["INTERLINKED_DEPLOYMENT_SET"] == "local"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PREFECT_API_KEY_SECRET_ARN"] == out["prefect_api_key_secret_arn"]

    doc = policy_document(iam, out["script_api_role_arn"], "script-api")
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert set(by_sid) == {"WriteLogs", "ReadWriteDataObjects", "ListDataBucket", "ReadPrefectApiKey"}
    assert sorted(as_list(by_sid["ReadWriteDataObjects"]["Action"])) == ["s3:GetObject", "s3:PutObject"]
    assert as_list(by_sid["ReadWriteDataObjects"]["Resource"]) == [f"{out['data_bucket_arn']}/*"]
    assert as_list(by_sid["ListDataBucket"]["Action"]) == ["s3:ListBucket"]
    assert as_list(by_sid["ListDataBucket"]["Resource"]) == [out["data_bucket_arn"]]
    assert as_list(by_sid["ReadPrefectApiKey"]["Resource"]) == [out["prefect_api_key_secret_arn"]]
    # Nothing of the analysis buckets, queues, topics; no wildcard action.
    text = json.dumps(doc)
    assert out["analysis_bucket_arn"] not in text and "sqs:" not in text and "sns:" not in text
    assert not [a for s in doc["Statement"] for a in as_list(s["Action"]) if a.endswith(":*") or a == "*"]


################################################################################
# The handler in-process, in the function's environment, against the moto stack
################################################################################


def test_flow_runs_may_invoke_the_api_and_nothing_else_of_api_gateway(terraform_local_stack):
    """R scripts run in flow runs and sign their calls (interlinker, SigV4): the flow-run role may
    POST to this API's routes, and that is all it may do with API Gateway."""
    stack = terraform_local_stack
    out = stack.outputs
    api = stack.client("apigatewayv2").get_api(ApiId=out["script_api_id"])
    doc = policy_document(stack.client("iam"), out["task_role_arn"], "invoke-script-api")
    [statement] = doc["Statement"]
    assert as_list(statement["Action"]) == ["execute-api:Invoke"]
    assert as_list(statement["Resource"]) == [f"{out['script_api_execution_arn']}/*/POST/*"]
    assert out["script_api_execution_arn"].startswith("arn:aws:execute-api:")
    assert out["script_api_execution_arn"].endswith(f":{api['ApiId']}")


@pytest.fixture
def lambda_environment(terraform_local_stack, monkeypatch):
    """The function's environment as Terraform set it, boto3 pointed at the moto stack."""
    from interlinked import script_api_lambda

    config = terraform_local_stack.client("lambda").get_function(
        FunctionName=terraform_local_stack.outputs["script_api_function_name"]
    )["Configuration"]
    env = dict(config["Environment"]["Variables"])
    for name in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**env, **terraform_local_stack.client_env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(script_api_lambda, "_state", {})
    return env


def call(path: str, body: dict) -> tuple[int, object]:
    from interlinked.script_api_lambda import handler

    reply = handler(api_event(path, body), None)
    assert reply["headers"] == {"Content-Type": "application/json"}
    try:
        return reply["statusCode"], json.loads(reply["body"])
    except ValueError:
        return reply["statusCode"], reply["body"]


def test_upload_exists_fetch_and_log_through_the_handler(terraform_local_stack, lambda_environment):
    s3 = terraform_local_stack.client("s3")
    bucket = lambda_environment["INTERLINKED_DATA_BUCKET"]
    token = uuid.uuid4().hex
    key = f"api-test/{token}/x.json"

    assert call("/exists", {"bucket": ["interlinked"], "key": [key]}) == (
        404,
        {"result": f"object {key} does not exist", "message": "Not Found"},
    )
    assert call(
        "/upload",
        {"bucket": "interlinked", "subdir": f"api-test/{token}", "key": "x.json", "data": {"a": [1]}},
    ) == (
        200,
        "ok",
    )
    assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == {"a": [1]}
    assert call("/exists", {"bucket": "interlinked", "key": key}) == (200, {"result": "ok"})
    assert call("/fetch", {"bucket": "interlinked", "key": key}) == (200, {"a": [1]})
    status, reply = call(
        "/bulk", {"subdir": f"api-test/{token}", "items": {"b.json": 2, "c.json": 3}, "gzip": True}
    )
    assert (status, reply) == (200, {"result": "ok", "stored": 2})
    assert call("/fetch", {"key": f"api-test/{token}/c.json"}) == (200, 3)
    status, reply = call("/log", {"message": f"hello {token}", "level": "debug"})
    assert status == 200 and reply["key"] == f"s3://{bucket}/log/DEBUG"
    assert f"DEBUG hello {token}" in s3.get_object(Bucket=bucket, Key="log/DEBUG")["Body"].read().decode()
    assert call("/upload", {"bucket": "someone-elses", "key": "k", "data": 1})[0] == 403


@contextlib.contextmanager
def session_prefect():
    """A client of the session's Prefect server, whatever PREFECT_API_URL the test has set."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from _stack import TEST_ENV

    with (
        temporary_settings({PREFECT_API_URL: TEST_ENV["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        yield client


@pytest.fixture
def unpolled_script_job_deployment(stack_handle, terraform_local_stack):
    """``(deployment set, id)``: a `script-job/<set>` deployment on the session's Prefect server, in
    a pool no worker polls. Requested before `lambda_environment`: the session stack comes up with
    its own environment."""
    from prefect.client.schemas.actions import WorkPoolCreate

    stack_handle.ensure_up()
    deployment_set = f"tf-api-{uuid.uuid4().hex[:8]}"
    with session_prefect() as client:
        client.create_work_pool(WorkPoolCreate(name=deployment_set, type="process"), overwrite=True)
        flow_id = client.create_flow_from_name("script-job")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=deployment_set,
            work_pool_name=deployment_set,
            entrypoint="flows/script_jobs/flow.py:script_job",
        )
    yield deployment_set, deployment_id
    with session_prefect() as client:
        for run in client.read_flow_runs(limit=50):
            if run.deployment_id == deployment_id:
                client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)
        client.delete_work_pool(deployment_set)


def test_submitjob_stores_the_spec_and_creates_the_run(
    terraform_local_stack, unpolled_script_job_deployment, lambda_environment, monkeypatch
):
    from _stack import TEST_ENV

    deployment_set, deployment_id = unpolled_script_job_deployment
    # The function's environment, with the session's Prefect server (its basic-auth string, as the
    # function's secret would hold it on AWS) and the unpolled deployment's set.
    monkeypatch.setenv("PREFECT_API_URL", TEST_ENV["PREFECT_API_URL"])
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", TEST_ENV["PREFECT_API_AUTH_STRING"])
    monkeypatch.setenv("INTERLINKED_DEPLOYMENT_SET", deployment_set)
    monkeypatch.setenv("PREFECT_API_KEY_SECRET_ARN", "")
    s3 = terraform_local_stack.client("s3")
    bucket = terraform_local_stack.env["buckets"]["data"]
    token = uuid.uuid4().hex
    s3.put_object(Bucket=bucket, Key=f"scripts/{token}/test.r", Body=b"myfunc <- function(a, b) a + b\n")

    # The seed README's job as R's toJSON sends it (one-element arrays), with the seed's debug flag.
    status, reply = call(
        "/submitjob",
        {
            "func": ["myfunc"],
            "arguments": {"a": [1], "b": [2]},
            "name": ["Test job"],
            "script": [f"{token}/test.r"],
            "debug": [True],
        },
    )
    assert status == 200, reply
    assert reply["jobName"] == "Test job"
    spec = json.loads(s3.get_object(Bucket=bucket, Key=f"jobs/{reply['jobId']}.json")["Body"].read())
    assert spec["func"] == "myfunc" and spec["script"] == f"{token}/test.r" and spec["language"] == "r"
    assert spec["arguments"] == {"a": [1], "b": [2]} and spec["debug"] is True
    with session_prefect() as client:
        run = client.read_flow_run(reply["flowRunId"])
    assert str(run.deployment_id) == str(deployment_id)
    assert run.parameters == {"job_id": reply["jobId"]}
    assert run.name == "Test job"
    assert {f"job:{reply['jobId']}", "script-job"} <= set(run.tags)
    assert run.state.type.value == "SCHEDULED"

    # Refusals name the field or the missing script, and start nothing.
    status, reply = call("/submitjob", {"func": "f", "name": "x", "script": f"{token}/missing.r"})
    assert status == 400 and "missing.r" in reply["error"]
    status, reply = call("/submitjob", {"func": "f", "script": f"{token}/test.r"})
    assert status == 400 and "name" in reply["error"]


################################################################################
# An analysis's own bucket
################################################################################


def test_an_analysis_bucket_is_configured_and_routed_like_the_analysis_bucket(terraform_local_stack):
    stack = terraform_local_stack
    out = stack.outputs
    s3, sqs = stack.client("s3"), stack.client("sqs")
    assert stack.env["analysis_buckets"] == {"describe": "interlinked-local-describe"}
    own = out["analysis_buckets"]["describe"]["id"]
    assert own == "interlinked-local-describe"

    # The analysis bucket's configuration.
    assert (
        s3.get_bucket_encryption(Bucket=own)["ServerSideEncryptionConfiguration"]["Rules"][0][
            "ApplyServerSideEncryptionByDefault"
        ]["SSEAlgorithm"]
        == "AES256"
    )
    assert s3.get_bucket_versioning(Bucket=own)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=own)["PublicAccessBlockConfiguration"].values())
    lifecycle = {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=own)["Rules"]}
    assert lifecycle == {"abort-incomplete-multipart-uploads"}
    assert s3.get_bucket_logging(Bucket=own)["LoggingEnabled"]["TargetPrefix"] == f"{own}/"

    # Submissions notify the events queue, as the shared bucket's do.
    [config] = s3.get_bucket_notification_configuration(Bucket=own)["QueueConfigurations"]
    assert config["QueueArn"] == out["events_queue_arn"]
    assert {r["Name"]: r["Value"] for r in config["Filter"]["Key"]["FilterRules"]} == {"suffix": ".json"}
    events_url = stack.env["queues"]["events"]
    token = uuid.uuid4().hex
    s3.put_object(Bucket=own, Key=f"lab1/submissions/{token}.json", Body=b"{}")
    found = set()
    deadline = time.monotonic() + 15
    while not found and time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=events_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            sqs.delete_message(QueueUrl=events_url, ReceiptHandle=message["ReceiptHandle"])
            for record in json.loads(message["Body"]).get("Records", []):
                found.add((record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])))
    assert (own, f"lab1/submissions/{token}.json") in found

    # The events queue's policy admits the bucket; the bridge and the flow runs know the map.
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    assert f"arn:aws:s3:::{own}" in json.dumps(policy)
    expected = {"describe": own}
    bridge = stack.client("lambda").get_function(FunctionName=out["bridge_function_name"])["Configuration"]
    assert json.loads(bridge["Environment"]["Variables"]["INTERLINKED_ANALYSIS_BUCKETS"]) == expected
    [definition] = stack.client("batch").describe_job_definitions(
        jobDefinitions=[out["batch_job_definition_arn"]]
    )["jobDefinitions"]
    flow_run_env = {e["name"]: e["value"] for e in definition["containerProperties"]["environment"]}
    assert json.loads(flow_run_env["INTERLINKED_ANALYSIS_BUCKETS"]) == expected
    # R jobs find the API (interlinker's lambda_uri) in the flow runs' environment.
    assert flow_run_env["INTERLINKED_SCRIPT_API_URL"] == out["script_api_url"]

    # The bridge's routes, in its environment, start process-submission for the bucket.
    from interlinked.bridge.core import decide
    from interlinked.bridge.events import S3Record
    from interlinked.bridge.routes import load_routes

    variables = bridge["Environment"]["Variables"]
    table = load_routes(
        variables={
            "data": variables["INTERLINKED_DATA_BUCKET"],
            "analysis": variables["INTERLINKED_ANALYSIS_BUCKET"],
            "deployment_set": variables["INTERLINKED_DEPLOYMENT_SET"],
        },
        analysis_buckets=frozenset(json.loads(variables["INTERLINKED_ANALYSIS_BUCKETS"]).values()),
    )
    decision = decide(
        table,
        S3Record(bucket=own, key="lab1/submissions/submit.json", event_name="ObjectCreated:Put", etag="e"),
    )
    assert (decision.action, decision.deployment) == ("dispatch", "process-submission/local")
    assert decision.parameters["bucket"] == own
