# interlinked root stack: storage + messaging, and optionally compute (ECS cluster with the Prefect
# ECS and aws-batch workers, Batch, the analysis service, the event bridge as an ECS service), the
# event-bridge Lambda, the seed's HTTP API (API Gateway + Lambda, enable_script_api), a PostgreSQL instance on RDS (enable_database) and the DynamoDB table of task
# collections (enable_tasks_table), and the jobs SDK as a Lambda (enable_jobs_api, on the database). The provider is configured by the caller (examples/aws,
# examples/local).

data "aws_region" "current" {}

locals {
  name_prefix = "${var.name}-${var.environment}"

  tags = merge(
    {
      Project     = var.name
      Environment = var.environment
      ManagedBy   = "terraform"
    },
    var.tags,
  )

  create_api_key_secret      = var.prefect_api_key_secret_arn == null && var.create_prefect_api_key_secret
  prefect_api_key_secret_arn = local.create_api_key_secret ? aws_secretsmanager_secret.prefect_api_key[0].arn : var.prefect_api_key_secret_arn

  # Default S3 routing: submissions of the analysis bucket and of every analysis's own bucket
  # (the same {group}/submissions/ layout) and job drops of the data bucket go to the events queue.
  submission_bucket_keys = concat(["analysis"], [for name in sort(keys(var.analysis_buckets)) : "analysis:${name}"])
  default_s3_event_routes = concat(
    length(var.analysis_submission_groups) == 0 ? [
      for key in local.submission_bucket_keys :
      { bucket = key, destination = "events", filter_prefix = tostring(null), filter_suffix = ".json", events = ["s3:ObjectCreated:*"] }
      ] : flatten([
        for key in local.submission_bucket_keys : [
          for group in var.analysis_submission_groups :
          { bucket = key, destination = "events", filter_prefix = "${group}/submissions/", filter_suffix = ".json", events = ["s3:ObjectCreated:*"] }
        ]
    ]),
    [
      { bucket = "data", destination = "events", filter_prefix = "jobs/incoming/", filter_suffix = ".json", events = ["s3:ObjectCreated:*"] },
    ],
  )
  s3_event_routes = var.s3_event_routes == null ? local.default_s3_event_routes : var.s3_event_routes

  # The compute security groups reach the database: their egress gains its port.
  security_group_egress_ports = var.enable_database ? distinct(concat(var.security_group_egress_ports, [5432])) : var.security_group_egress_ports

  # Flow runs (the task store) find the database through these two variables: the URL without the
  # password and the secret holding it.
  database_environment = !var.enable_database ? {} : {
    INTERLINKED_DATABASE_URL_TEMPLATE = module.database[0].connection_url_template
    INTERLINKED_DATABASE_SECRET_ARN   = module.database[0].master_user_secret_arn
  }

  # Which task store flow runs open (INTERLINKED_TASKS_BACKEND): as told, else PostgreSQL where the
  # database exists (the store's default), else the DynamoDB table where that exists.
  tasks_backend = var.tasks_backend != null ? var.tasks_backend : (
    var.enable_database ? "postgres" : var.enable_tasks_table ? "dynamodb" : null
  )
  tasks_environment = merge(
    var.enable_tasks_table ? { INTERLINKED_TASKS_TABLE = module.tasks_table[0].name } : {},
    local.tasks_backend != null ? { INTERLINKED_TASKS_BACKEND = local.tasks_backend } : {},
  )

  # Roles that use the task collections table, keyed statically (as the database secret readers).
  tasks_table_users = !var.enable_tasks_table ? {} : merge(
    var.enable_compute ? { flow_run = reverse(split("/", module.compute[0].flow_run_task_role_arn))[0] } : {},
    { for name in var.tasks_table_user_role_names : name => name },
  )

  # Roles that read the master user secret, keyed statically (the flow-run role's name is only
  # known after apply).
  database_secret_readers = !var.enable_database ? {} : merge(
    var.enable_compute ? { flow_run = reverse(split("/", module.compute[0].flow_run_task_role_arn))[0] } : {},
    { for name in var.database_secret_reader_role_names : name => name },
  )

  # Both bridge front ends (Lambda, ECS service) route with the same bucket names and create runs of
  # the deployments of one set (interlinked/bridge/routes.json: "<flow>/{deployment_set}").
  bridge_environment = merge(
    {
      INTERLINKED_DATA_BUCKET     = module.storage.data_bucket_name
      INTERLINKED_ANALYSIS_BUCKET = module.storage.analysis_bucket_name
      INTERLINKED_DEPLOYMENT_SET  = var.deployment_set
      JOB_EVENTS_TOPIC_ARN        = module.messaging.job_events_topic_arn
      # Where an asynchronous invocation's event is parked while the Prefect API is down.
      INTERLINKED_EVENTS_QUEUE_URL = module.messaging.events_queue_url
      # The analyses' own buckets: their submissions are routed like the analysis bucket's.
      INTERLINKED_ANALYSIS_BUCKETS = local.analysis_buckets_json
    },
    var.bridge_environment,
  )

  # INTERLINKED_ANALYSIS_BUCKETS (analysis -> bucket, flows/submissions/quotas.py) of the bridge
  # and the flow runs.
  analysis_buckets_json = jsonencode({ for name, bucket in module.storage.analysis_buckets : name => bucket.id })
}

################################################################################
# Prefect API key secret (optional)
################################################################################

resource "aws_secretsmanager_secret" "prefect_api_key" {
  #checkov:skip=CKV2_AWS_57:The Prefect API key is issued by Prefect (Cloud service account or server auth string); it is rotated there, not by a Lambda rotator.
  #checkov:skip=CKV_AWS_149:Encrypted with the AWS managed key by default; a customer managed key is one variable away (kms_key_arn, used by examples/aws).
  count = local.create_api_key_secret ? 1 : 0

  name                    = "${local.name_prefix}/prefect-api-key"
  description             = "Prefect API key (or basic-auth string) of the interlinked worker, flow runs and event bridge"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7

  tags = merge(local.tags, { Name = "${local.name_prefix}/prefect-api-key" })
}

resource "aws_secretsmanager_secret_version" "prefect_api_key" {
  count = local.create_api_key_secret && var.prefect_api_key != null ? 1 : 0

  secret_id     = aws_secretsmanager_secret.prefect_api_key[0].id
  secret_string = var.prefect_api_key
}

################################################################################
# Modules
################################################################################

module "storage" {
  source = "./modules/storage"

  name_prefix               = local.name_prefix
  data_bucket_name          = var.data_bucket_name
  analysis_bucket_name      = var.analysis_bucket_name
  analysis_buckets          = var.analysis_buckets
  create_access_logs_bucket = var.enable_access_logging
  kms_key_arn               = var.kms_key_arn
  logs_expiration_days      = var.logs_expiration_days
  cache_expiration_days     = var.cache_expiration_days

  response_records_expiration_days = var.response_records_expiration_days

  force_destroy           = var.force_destroy_buckets
  deny_insecure_transport = var.deny_insecure_transport

  tags = local.tags
}

module "messaging" {
  source = "./modules/messaging"

  name_prefix                  = local.name_prefix
  work_queue_name              = var.work_queue_name
  max_receive_count            = var.max_receive_count
  restrict_dlq_redrive_sources = var.restrict_dlq_redrive_sources
  deny_insecure_transport      = var.deny_insecure_transport
  topic_kms_master_key_id      = coalesce(var.kms_key_arn, "alias/aws/sns")
  topic_subscriber_queues      = var.topic_subscriber_queues
  buckets                      = module.storage.buckets
  s3_notifications             = local.s3_event_routes

  tags = local.tags
}

module "compute" {
  source = "./modules/compute"
  count  = var.enable_compute ? 1 : 0

  name_prefix                 = local.name_prefix
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.subnet_ids
  security_group_ids          = var.security_group_ids
  security_group_egress_ports = local.security_group_egress_ports
  assign_public_ip            = var.assign_public_ip

  image                  = var.container_image
  prefect_api_url        = var.prefect_api_url
  create_script_job_role = true
  script_job_bucket_arn  = module.storage.data_bucket_arn
  create_submission_role = true
  submission_bucket_arns = concat(
    [module.storage.analysis_bucket_arn],
    [for name in sort(keys(var.analysis_buckets)) : module.storage.analysis_buckets[name].arn],
  )
  submission_result_arns     = var.submission_result_arns
  group_registry_bucket_arn  = module.storage.data_bucket_arn
  prefect_api_key_secret_arn = local.prefect_api_key_secret_arn
  prefect_api_key_env_name   = var.prefect_api_key_env_name
  worker_pool_name           = var.worker_pool_name
  enable_worker_service      = var.enable_worker_service
  worker_desired_count       = var.worker_desired_count

  enable_batch_worker_service = var.enable_batch_worker_service
  batch_worker_pool_name      = var.batch_worker_pool_name

  bridge_service = !var.enable_bridge_service ? null : {
    events_queue_arn      = module.messaging.events_queue_arn
    events_queue_url      = module.messaging.events_queue_url
    dead_letter_queue_arn = module.messaging.events_dlq_arn
    environment           = local.bridge_environment
  }

  analysis_service = !var.enable_analysis_service ? null : {
    work_queue_arn         = module.messaging.work_queue_arn
    work_queue_url         = module.messaging.work_queue_url
    dead_letter_queue_arn  = module.messaging.work_dlq_arn
    work_results_topic_arn = module.messaging.work_results_topic_arn
    data_bucket_arn        = module.storage.data_bucket_arn
    data_bucket_name       = module.storage.data_bucket_name
    prepare_deployment     = "prepare-experiment/${var.deployment_set}"
    environment            = var.analysis_service_environment
  }

  bucket_arns = concat(
    [module.storage.data_bucket_arn, module.storage.analysis_bucket_arn],
    [for name in sort(keys(var.analysis_buckets)) : module.storage.analysis_buckets[name].arn],
  )
  queue_arns  = module.messaging.queue_arns
  topic_arns  = values(module.messaging.topic_arns)
  kms_key_arn = var.kms_key_arn

  flow_run_environment = merge(
    {
      INTERLINKED_DATA_BUCKET      = module.storage.data_bucket_name
      INTERLINKED_ANALYSIS_BUCKET  = module.storage.analysis_bucket_name
      WORKER_QUEUE                 = module.messaging.work_queue_name
      WORK_RESULTS_TOPIC_ARN       = module.messaging.work_results_topic_arn
      JOB_EVENTS_TOPIC_ARN         = module.messaging.job_events_topic_arn
      INTERLINKED_ANALYSIS_BUCKETS = local.analysis_buckets_json
    },
    # R jobs reach the seed's API through the interlinker package (interlinker_options("lambda_uri")).
    var.enable_script_api ? { INTERLINKED_SCRIPT_API_URL = module.script_api[0].url } : {},
    local.database_environment,
    local.tasks_environment,
  )

  enable_batch                = var.enable_batch
  batch_compute_type          = var.batch_compute_type
  batch_max_vcpus             = var.batch_max_vcpus
  create_batch_service_role   = var.create_batch_service_role
  attach_aws_managed_policies = var.attach_aws_managed_policies
  log_retention_days          = var.log_retention_days

  tags = local.tags
}

module "bridge" {
  source = "./modules/bridge"
  count  = var.enable_bridge ? 1 : 0

  name_prefix                  = local.name_prefix
  package_path                 = var.bridge_package_path
  handler                      = var.bridge_handler
  events_queue_arn             = module.messaging.events_queue_arn
  event_source_mapping_enabled = var.bridge_event_source_mapping_enabled
  prefect_api_url              = var.prefect_api_url
  prefect_api_key_secret_arn   = local.prefect_api_key_secret_arn
  kms_key_arn                  = var.kms_key_arn
  log_retention_days           = var.log_retention_days
  attach_aws_managed_policies  = var.attach_aws_managed_policies
  deny_insecure_transport      = var.deny_insecure_transport
  alarm_actions                = var.bridge_alarm_actions

  environment = local.bridge_environment

  tags = local.tags
}

module "script_api" {
  source = "./modules/script_api"
  count  = var.enable_script_api ? 1 : 0

  name_prefix                 = local.name_prefix
  package_path                = var.script_api_package_path
  data_bucket_name            = module.storage.data_bucket_name
  data_bucket_arn             = module.storage.data_bucket_arn
  deployment_set              = var.deployment_set
  prefect_api_url             = var.prefect_api_url
  prefect_api_key_secret_arn  = local.prefect_api_key_secret_arn
  authorization_type          = var.script_api_authorization_type
  kms_key_arn                 = var.kms_key_arn
  log_retention_days          = var.log_retention_days
  attach_aws_managed_policies = var.attach_aws_managed_policies

  tags = local.tags
}

module "database" {
  source = "./modules/database"
  count  = var.enable_database ? 1 : 0

  name_prefix = local.name_prefix
  vpc_id      = var.database_vpc_id != null ? var.database_vpc_id : var.vpc_id
  subnet_ids  = length(var.database_subnet_ids) > 0 ? var.database_subnet_ids : var.subnet_ids
  allowed_security_group_ids = concat(
    try(module.compute[0].security_group_ids, []),
    var.enable_jobs_api ? [module.jobs_api[0].security_group_id] : [],
    var.database_allowed_security_group_ids,
  )

  db_name               = var.database_name
  engine_version        = var.database_engine_version
  instance_class        = var.database_instance_class
  multi_az              = var.database_multi_az
  backup_retention_days = var.database_backup_retention_days
  deletion_protection   = var.database_deletion_protection
  skip_final_snapshot   = var.database_skip_final_snapshot
  kms_key_arn           = var.kms_key_arn
  log_retention_days    = var.log_retention_days

  attach_aws_managed_policies = var.attach_aws_managed_policies

  tags = local.tags
}

################################################################################
# Database secret readers
################################################################################

data "aws_iam_policy_document" "database_secret" {
  count = var.enable_database ? 1 : 0

  statement {
    sid       = "ReadDatabaseSecret"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [module.database[0].master_user_secret_arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "DecryptDatabaseSecret"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "database_secret" {
  for_each = local.database_secret_readers

  name   = "read-database-secret"
  role   = each.value
  policy = data.aws_iam_policy_document.database_secret[0].json
}

################################################################################
# The script API's callers: R scripts in flow runs call it (interlinker signs with SigV4)
################################################################################

data "aws_iam_policy_document" "script_api_invoke" {
  count = var.enable_script_api && var.enable_compute ? 1 : 0

  statement {
    sid       = "InvokeScriptApi"
    effect    = "Allow"
    actions   = ["execute-api:Invoke"]
    resources = ["${module.script_api[0].execution_arn}/*/POST/*"]
  }
}

resource "aws_iam_role_policy" "script_api_invoke" {
  count = var.enable_script_api && var.enable_compute ? 1 : 0

  name   = "invoke-script-api"
  role   = reverse(split("/", module.compute[0].flow_run_task_role_arn))[0]
  policy = data.aws_iam_policy_document.script_api_invoke[0].json
}

################################################################################
# Task collections table (DynamoDB) and its users
################################################################################

module "tasks_table" {
  source = "./modules/tasks_table"
  count  = var.enable_tasks_table ? 1 : 0

  name                = coalesce(var.tasks_table_name, "${local.name_prefix}-tasks")
  kms_key_arn         = var.kms_key_arn
  deletion_protection = var.tasks_table_deletion_protection

  tags = local.tags
}

# What flows/collections/dynamodb.py calls, on the table and its indexes only: items (conditional
# claims, transactions of puts and counter updates, batch reads and deletes), index queries, and
# DescribeTable (the store checks that the table exists). No CreateTable: Terraform owns it.
data "aws_iam_policy_document" "tasks_table" {
  count = var.enable_tasks_table ? 1 : 0

  statement {
    sid    = "UseTasksTable"
    effect = "Allow"
    actions = [
      "dynamodb:BatchGetItem",
      "dynamodb:BatchWriteItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:DeleteItem",
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = concat([module.tasks_table[0].arn], module.tasks_table[0].index_arns)
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "UseTasksTableKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["dynamodb.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "tasks_table" {
  for_each = local.tasks_table_users

  name   = "use-tasks-table"
  role   = each.value
  policy = data.aws_iam_policy_document.tasks_table[0].json
}

################################################################################
# The jobs SDK as a Lambda (aws lambda invoke from any language), on the job store in the database
################################################################################

data "aws_vpc" "jobs_api" {
  count = var.enable_jobs_api ? 1 : 0

  id = var.database_vpc_id != null ? var.database_vpc_id : var.vpc_id

  lifecycle {
    precondition {
      condition     = var.enable_database
      error_message = "enable_jobs_api needs enable_database: the job store is PostgreSQL (modules/database)."
    }
  }
}

module "jobs_api" {
  source = "./modules/jobs_api"
  count  = var.enable_jobs_api ? 1 : 0

  name_prefix                 = local.name_prefix
  package_path                = var.jobs_api_package_path
  vpc_id                      = data.aws_vpc.jobs_api[0].id
  subnet_ids                  = length(var.database_subnet_ids) > 0 ? var.database_subnet_ids : var.subnet_ids
  database_cidr_blocks        = [data.aws_vpc.jobs_api[0].cidr_block]
  database_url_template       = try(module.database[0].connection_url_template, "")
  database_secret_arn         = try(module.database[0].master_user_secret_arn, "")
  data_bucket_name            = module.storage.data_bucket_name
  data_bucket_arn             = module.storage.data_bucket_arn
  deployment_set              = var.deployment_set
  prefect_api_url             = var.prefect_api_url
  prefect_api_port            = try(tonumber(regex("^https?://[^/:]+:([0-9]+)", var.prefect_api_url)[0]), 443)
  prefect_api_key_secret_arn  = local.prefect_api_key_secret_arn
  kms_key_arn                 = var.kms_key_arn
  log_retention_days          = var.log_retention_days
  attach_aws_managed_policies = var.attach_aws_managed_policies

  tags = local.tags
}
