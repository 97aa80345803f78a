# The root stack against a moto server (`moto_server -H 127.0.0.1 -p 5055`, or `interlinked up`).
# Also the integration-test fixture of tests/terraform.

provider "aws" {
  region     = "us-east-1"
  access_key = "test"
  secret_key = "test"

  s3_use_path_style           = true
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    apigatewayv2   = var.aws_endpoint_url
    batch          = var.aws_endpoint_url
    cloudwatch     = var.aws_endpoint_url
    cloudwatchlogs = var.aws_endpoint_url
    dynamodb       = var.aws_endpoint_url
    ec2            = var.aws_endpoint_url
    ecr            = var.aws_endpoint_url
    ecs            = var.aws_endpoint_url
    events         = var.aws_endpoint_url
    iam            = var.aws_endpoint_url
    kms            = var.aws_endpoint_url
    lambda         = var.aws_endpoint_url
    s3             = var.aws_endpoint_url
    secretsmanager = var.aws_endpoint_url
    sns            = var.aws_endpoint_url
    sqs            = var.aws_endpoint_url
    ssm            = var.aws_endpoint_url
    sts            = var.aws_endpoint_url
  }

  default_tags {
    tags = { Stack = "interlinked-local" }
  }
}

# moto creates a default VPC with one subnet per availability zone in every region.
data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
}

module "interlinked" {
  source = "../.."

  name        = "interlinked"
  environment = var.environment
  tags        = var.tags

  prefect_api_url  = var.prefect_api_url
  aws_endpoint_url = var.aws_endpoint_url

  # The local Prefect server runs without authentication and ignores this placeholder; the secret
  # exists so the secret wiring (ECS/Batch secrets, bridge env + IAM) is exercised locally too.
  create_prefect_api_key_secret = true
  prefect_api_key               = "local-no-auth"

  force_destroy_buckets = true
  # The emulator speaks plain HTTP, and moto evaluates bucket policies without their Bool
  # conditions: a DenyInsecureTransport statement would deny every S3 request.
  deny_insecure_transport = false
  # moto 5 ignores the RedriveAllowPolicy queue attribute, and the provider would wait for it to
  # read back until it times out; the redrive policies of the source queues are unaffected.
  restrict_dlq_redrive_sources = false
  topic_subscriber_queues      = ["job_events", "work_results"]

  container_image = "interlinked:local"
  vpc_id          = data.aws_vpc.default.id
  subnet_ids      = slice(sort(data.aws_subnets.default.ids), 0, 2)

  # moto's CreateComputeEnvironment requires an explicit serviceRole (AWS uses its service-linked
  # role when none is given), so the local stack creates one.
  create_batch_service_role = true
  # moto ships no AWS managed policies unless started with MOTO_IAM_LOAD_MANAGED_POLICIES=true, so
  # AWSBatchServiceRole cannot be attached; the role itself is all moto checks.
  attach_aws_managed_policies = false
  log_retention_days          = 7

  # `interlinked up` deploys the `local` set of prefect.yaml: the bridge and the analysis service
  # start runs of those deployments.
  deployment_set = "local"

  # moto records ECS services without running their tasks; created here so that their task
  # definitions, roles and log groups are checked against the emulator (tests/terraform). Locally
  # `interlinked up` runs the bridge and the analysis service as processes.
  enable_batch_worker_service = true
  enable_bridge_service       = true
  enable_analysis_service     = true

  bridge_package_path = coalesce(var.bridge_package_path, "${path.module}/../../build/bridge.zip")
  # moto runs an enabled SQS event source mapping synchronously inside SendMessage and invokes the
  # function in a Docker container; locally the bridge runs as a process polling the events queue,
  # so the mapping is created but disabled.
  bridge_event_source_mapping_enabled = false

  # The seed's HTTP API (API Gateway + Lambda). moto records the API and the function without
  # serving requests through them; locally `interlinked up` serves the same handling as the
  # script-api process, and tests/terraform invoke the Lambda handler in-process against moto.
  enable_script_api       = true
  script_api_package_path = coalesce(var.script_api_package_path, "${path.module}/../../build/script_api.zip")

  # An analysis with a bucket of its own (NeuroCAAS: the bucket is the analysis), configured and
  # routed like the analysis bucket.
  analysis_buckets = var.analysis_buckets

  # The task collections table: cheap on moto (no provider wait), so the apply checks it for real.
  # Deletion protection off: the emulator's state is thrown away with `down --wipe`.
  enable_tasks_table              = true
  tasks_table_deletion_protection = false

  # enable_database stays off (the root default): moto 5.2 creates the RDS instance and its managed
  # secret, but the provider's wait for the instance makes the apply ~2.5 min longer. Locally
  # `interlinked up` runs PostgreSQL itself.
}
