"""examples/local applied to a fresh moto server: the resources exist as declared and the
`interlinked_env` output points at working resources."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from urllib.parse import unquote_plus

import pytest

pytestmark = pytest.mark.terraform

CONTRACT_KEYS = {"prefect_api_url", "aws_endpoint_url", "region", "buckets", "queues", "topics"}


def drain(sqs, url: str) -> list[dict]:
    """Receive (and delete) everything currently visible in a queue."""
    messages = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not batch:
            return messages
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)


def wait_for_messages(sqs, url: str, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = drain(sqs, url)
        if found:
            return found
        time.sleep(0.2)
    return []


################################################################################
# The contract
################################################################################


def test_interlinked_env_has_the_contract_shape(terraform_local_stack):
    stack = terraform_local_stack
    env = stack.env
    assert set(env) >= CONTRACT_KEYS
    assert env["prefect_api_url"] == "http://127.0.0.1:4200/api"
    assert env["aws_endpoint_url"] == stack.endpoint_url
    assert env["region"] == "us-east-1"
    assert set(env["buckets"]) == {"data", "analysis"}
    assert set(env["queues"]) == {"work", "events"}
    assert set(env["topics"]) == {"work_results", "job_events"}
    for url in env["queues"].values():
        assert url.startswith(stack.endpoint_url + "/"), url
    for arn in env["topics"].values():
        assert arn.startswith("arn:aws:sns:us-east-1:"), arn
    # No name is typed twice: the contract and the individual outputs agree.
    out = stack.outputs
    assert out["interlinked_env"] == env
    assert env["buckets"] == {"data": out["data_bucket_name"], "analysis": out["analysis_bucket_name"]}
    assert env["queues"] == {"work": out["work_queue_url"], "events": out["events_queue_url"]}
    assert env["topics"] == {
        "work_results": out["work_results_topic_arn"],
        "job_events": out["job_events_topic_arn"],
    }
    assert out["work_queue_name"] == "development-queue.fifo"


def test_contract_points_at_working_resources(terraform_local_stack):
    stack = terraform_local_stack
    s3, sqs, sns = stack.client("s3"), stack.client("sqs"), stack.client("sns")
    env = stack.env

    for bucket in env["buckets"].values():
        key = f"cache/contract-{uuid.uuid4().hex}.txt"
        s3.put_object(Bucket=bucket, Key=key, Body=b"interlinked")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"interlinked"

    body = json.dumps({"experimentId": "e1", "body": {"name": "ListGenes"}, "id": uuid.uuid4().hex})
    sqs.send_message(QueueUrl=env["queues"]["work"], MessageBody=body, MessageGroupId="contract-test")
    received = sqs.receive_message(QueueUrl=env["queues"]["work"], MaxNumberOfMessages=1, WaitTimeSeconds=2)
    messages = received.get("Messages", [])
    assert [m["Body"] for m in messages] == [body]
    sqs.delete_message(QueueUrl=env["queues"]["work"], ReceiptHandle=messages[0]["ReceiptHandle"])

    for arn in env["topics"].values():
        assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["TopicArn"] == arn


################################################################################
# Storage
################################################################################


@pytest.mark.parametrize("role", ["data", "analysis"])
def test_bucket_configuration(terraform_local_stack, role):
    s3 = terraform_local_stack.client("s3")
    out = terraform_local_stack.outputs
    bucket = terraform_local_stack.env["buckets"][role]

    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    logging = s3.get_bucket_logging(Bucket=bucket)["LoggingEnabled"]
    assert logging == {"TargetBucket": out["access_logs_bucket_name"], "TargetPrefix": f"{bucket}/"}

    lifecycle = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert lifecycle["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    if role == "data":
        assert lifecycle["expire-logs"]["Filter"]["Prefix"] == "logs/"
        assert lifecycle["expire-logs"]["Expiration"]["Days"] == 90
        assert lifecycle["expire-analysis-cache"]["Filter"]["Prefix"] == "analysis-cache/"
        assert lifecycle["expire-analysis-cache"]["Expiration"]["Days"] == 14
        assert lifecycle["expire-analysis-responses"]["Filter"]["Prefix"] == "analysis-responses/"
        assert lifecycle["expire-analysis-responses"]["Expiration"]["Days"] == 30
        assert "expire-cache" not in lifecycle, "nothing is written under cache/"
    else:
        assert set(lifecycle) == {"abort-incomplete-multipart-uploads"}


################################################################################
# Messaging
################################################################################


@pytest.mark.parametrize("role", ["work", "events"])
def test_queue_has_a_dlq(terraform_local_stack, role):
    sqs = terraform_local_stack.client("sqs")
    out = terraform_local_stack.outputs
    attrs = sqs.get_queue_attributes(
        QueueUrl=terraform_local_stack.env["queues"][role], AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == out[f"{role}_dlq_arn"]
    assert int(redrive["maxReceiveCount"]) == 5
    assert attrs["SqsManagedSseEnabled"] == "true"
    dlq = sqs.get_queue_attributes(QueueUrl=out[f"{role}_dlq_url"], AttributeNames=["All"])["Attributes"]
    assert dlq["QueueArn"] == out[f"{role}_dlq_arn"]
    assert int(dlq["MessageRetentionPeriod"]) == 1209600
    if role == "work":
        assert attrs["FifoQueue"] == "true"
        assert attrs["ContentBasedDeduplication"] == "true"
        assert dlq["FifoQueue"] == "true"
    else:
        assert "FifoQueue" not in attrs


def test_topics_and_subscriptions(terraform_local_stack):
    sns, sqs = terraform_local_stack.client("sns"), terraform_local_stack.client("sqs")
    out = terraform_local_stack.outputs
    subscriber_urls = out["topic_subscriber_queue_urls"]
    assert set(subscriber_urls) == {"job_events", "work_results"}
    for key, arn in terraform_local_stack.env["topics"].items():
        attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
        assert attrs["KmsMasterKeyId"] == "alias/aws/sns"
        subscriptions = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=subscriber_urls[key], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("sqs", queue_arn)]
        raw = sns.get_subscription_attributes(SubscriptionArn=subscriptions[0]["SubscriptionArn"])[
            "Attributes"
        ]
        assert raw["RawMessageDelivery"] == "true"

        drain(sqs, subscriber_urls[key])
        message = json.dumps({"type": "probe", "topic": key, "id": uuid.uuid4().hex})
        sns.publish(TopicArn=arn, Message=message)
        assert [m["Body"] for m in wait_for_messages(sqs, subscriber_urls[key])] == [message]


def test_s3_notifications_route_to_the_events_queue(terraform_local_stack):
    s3, sqs = terraform_local_stack.client("s3"), terraform_local_stack.client("sqs")
    env, out = terraform_local_stack.env, terraform_local_stack.outputs
    events_arn = out["events_queue_arn"]

    data_cfg = s3.get_bucket_notification_configuration(Bucket=env["buckets"]["data"])["QueueConfigurations"]
    assert [(c["QueueArn"], c["Events"]) for c in data_cfg] == [(events_arn, ["s3:ObjectCreated:*"])]
    assert {r["Name"]: r["Value"] for r in data_cfg[0]["Filter"]["Key"]["FilterRules"]} == {
        "prefix": "jobs/incoming/",
        "suffix": ".json",
    }
    analysis_cfg = s3.get_bucket_notification_configuration(Bucket=env["buckets"]["analysis"])[
        "QueueConfigurations"
    ]
    assert [c["QueueArn"] for c in analysis_cfg] == [events_arn]
    assert {r["Name"]: r["Value"] for r in analysis_cfg[0]["Filter"]["Key"]["FilterRules"]} == {
        "suffix": ".json"
    }

    events_url = env["queues"]["events"]
    drain(sqs, events_url)  # S3 test events from the apply
    token = uuid.uuid4().hex
    s3.put_object(Bucket=env["buckets"]["data"], Key=f"jobs/incoming/{token}.json", Body=b"{}")
    s3.put_object(Bucket=env["buckets"]["data"], Key=f"jobs/{token}.json", Body=b"{}")  # not routed
    s3.put_object(Bucket=env["buckets"]["analysis"], Key=f"lab1/submissions/{token}.json", Body=b"{}")
    keys = set()
    deadline = time.monotonic() + 10
    while len(keys) < 2 and time.monotonic() < deadline:
        for message in wait_for_messages(sqs, events_url, timeout=2):
            for record in json.loads(message["Body"]).get("Records", []):
                # Keys arrive URL-encoded (moto also encodes "/"): consumers must unquote_plus.
                keys.add((record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])))
    assert keys == {
        (env["buckets"]["data"], f"jobs/incoming/{token}.json"),
        (env["buckets"]["analysis"], f"lab1/submissions/{token}.json"),
    }


################################################################################
# Compute
################################################################################


def test_ecs_cluster_and_worker_service(terraform_local_stack):
    ecs = terraform_local_stack.client("ecs")
    out = terraform_local_stack.outputs
    cluster = ecs.describe_clusters(clusters=[out["ecs_cluster_arn"]], include=["SETTINGS"])["clusters"][0]
    assert cluster["status"] == "ACTIVE"
    assert {"name": "containerInsights", "value": "enabled"} in cluster["settings"]

    service = ecs.describe_services(cluster=out["ecs_cluster_arn"], services=[out["worker_service_name"]])[
        "services"
    ][0]
    assert service["status"] == "ACTIVE"
    assert service["launchType"] == "FARGATE"
    assert service["desiredCount"] == 1
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    assert task["taskRoleArn"] == out["worker_task_role_arn"]
    assert task["executionRoleArn"] == out["execution_role_arn"]
    container = task["containerDefinitions"][0]
    assert container["command"] == [
        "prefect",
        "worker",
        "start",
        "--pool",
        out["worker_pool_name"],
        "--type",
        "ecs",
    ]
    env = {item["name"]: item["value"] for item in container["environment"]}
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PREFECT_WORKER_ENABLE_CANCELLATION"] == "true"
    assert container["secrets"] == [
        {"name": "PREFECT_API_KEY", "valueFrom": out["prefect_api_key_secret_arn"]}
    ]
    assert container["readonlyRootFilesystem"] is True
    assert container["logConfiguration"]["options"]["awslogs-group"] == out["log_group_names"]["worker"]


def test_roles_are_least_privilege(terraform_local_stack):
    iam = terraform_local_stack.client("iam")
    out = terraform_local_stack.outputs

    def statements(role_arn: str, policy: str) -> dict[str, dict]:
        doc = iam.get_role_policy(RoleName=role_arn.rsplit("/", 1)[1], PolicyName=policy)["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        return {s["Sid"]: s for s in doc["Statement"]}

    for arn in (out["execution_role_arn"], out["task_role_arn"], out["worker_task_role_arn"]):
        trust = iam.get_role(RoleName=arn.rsplit("/", 1)[1])["Role"]["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}

    worker = statements(out["worker_task_role_arn"], "prefect-worker")
    assert worker["RunTasksInCluster"]["Condition"]["ArnEquals"]["ecs:cluster"] == out["ecs_cluster_arn"]
    assert sorted(worker["PassFlowRunRoles"]["Resource"]) == sorted(
        [out["execution_role_arn"], out["task_role_arn"]]
    )
    assert (
        worker["PassFlowRunRoles"]["Condition"]["StringEquals"]["iam:PassedToService"]
        == "ecs-tasks.amazonaws.com"
    )
    assert not [sid for sid in worker if "Batch" in sid], "Batch permissions belong to the Batch worker"

    flow_run = statements(out["task_role_arn"], "flow-run")
    # The shared buckets and each analysis's own (process-submission reads and writes it).
    assert sorted(flow_run["ListBuckets"]["Resource"]) == sorted(
        [out["data_bucket_arn"], out["analysis_bucket_arn"]]
        + [bucket["arn"] for bucket in out["analysis_buckets"].values()]
    )
    assert out["work_queue_arn"] in flow_run["UseQueues"]["Resource"]
    assert out["events_queue_arn"] in flow_run["UseQueues"]["Resource"]
    assert sorted(flow_run["PublishTopics"]["Resource"]) == sorted(
        terraform_local_stack.env["topics"].values()
    )

    execution = statements(out["execution_role_arn"], "execution")
    assert execution["ReadPrefectApiKey"]["Resource"] == out["prefect_api_key_secret_arn"]
    for sid, statement in {**worker, **flow_run, **execution}.items():
        assert statement["Action"] != "*" and "*" not in statement["Action"], sid


def test_batch_queue_and_job_definition(terraform_local_stack):
    batch = terraform_local_stack.client("batch")
    out = terraform_local_stack.outputs
    queue = batch.describe_job_queues(jobQueues=[out["batch_job_queue_arn"]])["jobQueues"][0]
    assert queue["state"] == "ENABLED"
    environment_arn = queue["computeEnvironmentOrder"][0]["computeEnvironment"]
    environment = batch.describe_compute_environments(computeEnvironments=[environment_arn])[
        "computeEnvironments"
    ][0]
    assert environment["computeResources"]["type"] == "FARGATE"
    assert environment["state"] == "ENABLED"

    definition = batch.describe_job_definitions(jobDefinitions=[out["batch_job_definition_arn"]])[
        "jobDefinitions"
    ][0]
    assert definition["status"] == "ACTIVE"
    assert definition["platformCapabilities"] == ["FARGATE"]
    container = definition["containerProperties"]
    # The same command the aws-batch worker sends (prefect flow-run execute reads PREFECT__FLOW_RUN_ID).
    assert container["command"] == ["prefect", "flow-run", "execute"]
    assert container["image"] == "interlinked:local"
    assert container["jobRoleArn"] == out["task_role_arn"]
    assert container["executionRoleArn"] == out["execution_role_arn"]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["logConfiguration"]["options"]["awslogs-group"] == out["log_group_names"]["batch"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["INTERLINKED_DATA_BUCKET"] == terraform_local_stack.env["buckets"]["data"]
    assert env["WORKER_QUEUE"] == "development-queue.fifo"


def test_log_groups_have_retention(terraform_local_stack):
    logs = terraform_local_stack.client("logs")
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups()["logGroups"]}
    for name in terraform_local_stack.outputs["log_group_names"].values():
        assert groups[name]["retentionInDays"] == 7


################################################################################
# Event bridge
################################################################################


def test_bridge_lambda(terraform_local_stack):
    lam, sm = terraform_local_stack.client("lambda"), terraform_local_stack.client("secretsmanager")
    out = terraform_local_stack.outputs
    config = lam.get_function(FunctionName=out["bridge_function_name"])["Configuration"]
    assert config["Handler"] == "interlinked.bridge.lambda_handler.handler"
    assert config["Runtime"] == "python3.11"
    digest = base64.b64encode(
        hashlib.sha256(terraform_local_stack.package_path.read_bytes()).digest()
    ).decode()
    assert config["CodeSha256"] == digest
    env = config["Environment"]["Variables"]
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    # Runs of the deployments `interlinked up` deploys (prefect.yaml's `local` set).
    assert env["INTERLINKED_DEPLOYMENT_SET"] == "local"
    assert env["INTERLINKED_DATA_BUCKET"] == terraform_local_stack.env["buckets"]["data"]
    assert env["INTERLINKED_ANALYSIS_BUCKET"] == terraform_local_stack.env["buckets"]["analysis"]
    assert env["PREFECT_API_KEY_SECRET_ARN"] == out["prefect_api_key_secret_arn"]
    assert env["BRIDGE_DLQ_URL"] == out["bridge_dlq_url"] == out["dlq_urls"]["bridge"]
    assert sm.get_secret_value(SecretId=env["PREFECT_API_KEY_SECRET_ARN"])["SecretString"]

    mappings = lam.list_event_source_mappings(FunctionName=out["bridge_function_arn"])["EventSourceMappings"]
    assert len(mappings) == 1
    mapping = mappings[0]
    assert mapping["EventSourceArn"] == out["events_queue_arn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["State"] == "Disabled"  # see examples/local: moto would invoke it through Docker

    policy = lam.get_function(FunctionName=out["bridge_function_name"])["Configuration"]["Role"]
    iam = terraform_local_stack.client("iam")
    doc = iam.get_role_policy(RoleName=policy.rsplit("/", 1)[1], PolicyName="event-bridge")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["ConsumeEventsQueue"]["Resource"] == out["events_queue_arn"]
    assert set(by_sid) == {"WriteLogs", "ConsumeEventsQueue", "WriteOwnDlq", "ReadPrefectApiKey"}

    # Prefect down (issue 12, fault 5): kept records start over in the events queue, asynchronous
    # events are parked there, and the PREFECT_UNAVAILABLE log line is a metric with an alarm.
    assert "sqs:SendMessage" in by_sid["ConsumeEventsQueue"]["Action"]
    assert env["INTERLINKED_EVENTS_QUEUE_URL"] == out["events_queue_url"]
    logs = terraform_local_stack.client("logs")
    [metric_filter] = logs.describe_metric_filters(logGroupName=f"/aws/lambda/{out['bridge_function_name']}")[
        "metricFilters"
    ]
    assert "PREFECT_UNAVAILABLE" in metric_filter["filterPattern"]
    cloudwatch = terraform_local_stack.client("cloudwatch")
    [alarm] = cloudwatch.describe_alarms(AlarmNames=[f"{out['bridge_function_name']}-prefect-unavailable"])[
        "MetricAlarms"
    ]
    assert alarm["MetricName"] == metric_filter["metricTransformations"][0]["metricName"]
    assert alarm["Namespace"] == metric_filter["metricTransformations"][0]["metricNamespace"]
