# The root stack on real AWS with every feature on, including a customer managed KMS key for the
# buckets, topics, log groups, the Prefect API key secret and the Lambda environment: the Prefect
# ECS and aws-batch workers and the analysis service as ECS services, and the event bridge as the
# Lambda (default) or as an ECS service (bridge_runs_on = "ecs"; no zip is needed then), and a
# Multi-AZ PostgreSQL instance on RDS for the task store (enable_database; its master password is
# kept and rotated by RDS in Secrets Manager, encrypted with the same key), and the DynamoDB table of
# task collections (on-demand, encrypted with the same key, point-in-time recovery), the seed's HTTP
# API as API Gateway + Lambda (enable_script_api) and the analyses' own buckets (analysis_buckets).
#
#   python infra/terraform/scripts/package_lambda.py        # -> infra/terraform/build/bridge.zip
#   python infra/terraform/scripts/package_lambda.py --installed pydantic \
#     -o infra/terraform/build/script_api.zip               # the seed's HTTP API (enable_script_api)
#   terraform -chdir=infra/terraform/examples/aws init
#   terraform -chdir=infra/terraform/examples/aws apply -var prefect_api_url=... -var container_image=... \
#     -var vpc_id=... -var 'subnet_ids=["subnet-...","subnet-..."]'

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Stack = "interlinked-${var.environment}" }, var.tags)
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}

resource "aws_kms_key" "this" {
  description             = "interlinked-${var.environment}: buckets, topics, log groups, secrets, Lambda environment"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Decrypt*", "kms:Describe*", "kms:Encrypt*", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*" }
        }
      },
      {
        Sid       = "S3EventNotificationsToEncryptedTopics"
        Effect    = "Allow"
        Principal = { Service = "s3.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource  = "*"
        Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
      },
    ]
  })

  tags = { Name = "interlinked-${var.environment}" }
}

resource "aws_kms_alias" "this" {
  name          = "alias/interlinked-${var.environment}"
  target_key_id = aws_kms_key.this.key_id
}

module "interlinked" {
  source = "../.."

  name        = "interlinked"
  environment = var.environment
  kms_key_arn = aws_kms_key.this.arn

  prefect_api_url               = var.prefect_api_url
  prefect_api_key_secret_arn    = var.prefect_api_key_secret_arn
  create_prefect_api_key_secret = var.prefect_api_key_secret_arn == null
  prefect_api_key_env_name      = var.prefect_api_key_env_name

  analysis_submission_groups = var.analysis_submission_groups
  topic_subscriber_queues    = ["job_events", "work_results"]

  enable_compute              = true
  enable_worker_service       = true
  enable_batch                = true
  enable_batch_worker_service = true
  enable_analysis_service     = var.enable_analysis_service
  container_image             = var.container_image
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.subnet_ids
  security_group_egress_ports = var.security_group_egress_ports
  batch_compute_type          = var.batch_compute_type
  log_retention_days          = 90

  deployment_set = var.deployment_set

  enable_database                     = var.enable_database
  database_subnet_ids                 = var.database_subnet_ids
  database_allowed_security_group_ids = var.database_allowed_security_group_ids
  database_secret_reader_role_names   = var.database_secret_reader_role_names
  database_instance_class             = var.database_instance_class
  database_backup_retention_days      = 14

  # The DynamoDB task store (on-demand: idle costs nothing but storage); flow runs keep PostgreSQL
  # as their store while the database exists, unless tasks_backend says otherwise.
  enable_tasks_table = var.enable_tasks_table
  tasks_backend      = var.tasks_backend

  # The event bridge runs either as the Lambda (default) or as an ECS service: both would consume
  # the same events queue, so exactly one of them exists.
  enable_bridge         = var.bridge_runs_on == "lambda"
  enable_bridge_service = var.bridge_runs_on == "ecs"
  bridge_package_path   = var.bridge_runs_on == "lambda" ? coalesce(var.bridge_package_path, "${path.module}/../../build/bridge.zip") : null

  # The seed's HTTP API (API Gateway + Lambda) and the analyses' own buckets.
  enable_script_api             = var.enable_script_api
  script_api_package_path       = var.enable_script_api ? coalesce(var.script_api_package_path, "${path.module}/../../build/script_api.zip") : null
  script_api_authorization_type = var.script_api_authorization_type
  analysis_buckets              = var.analysis_buckets
}
