# interlinked root stack: storage + messaging, and optionally compute (ECS cluster with the Prefect
# ECS and aws-batch workers, Batch, the analysis service, the event bridge as an ECS service) and the
# event-bridge Lambda. The provider is configured by the caller (examples/aws, examples/local).

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

  # Default S3 routing: submissions of the analysis bucket and job drops of the data bucket go to
  # the events queue.
  default_s3_event_routes = concat(
    length(var.analysis_submission_groups) == 0 ? [
      { bucket = "analysis", destination = "events", filter_prefix = tostring(null), filter_suffix = ".json", events = ["s3:ObjectCreated:*"] }
      ] : [
      for group in var.analysis_submission_groups :
      { bucket = "analysis", destination = "events", filter_prefix = "${group}/submissions/", filter_suffix = ".json", events = ["s3:ObjectCreated:*"] }
    ],
    [
      { bucket = "data", destination = "events", filter_prefix = "jobs/incoming/", filter_suffix = ".json", events = ["s3:ObjectCreated:*"] },
    ],
  )
  s3_event_routes = var.s3_event_routes == null ? local.default_s3_event_routes : var.s3_event_routes

  # Both bridge front ends (Lambda, ECS service) route with the same bucket names and create runs of
  # the deployments of one set (interlinked/bridge/routes.json: "<flow>/{deployment_set}").
  bridge_environment = merge(
    {
      INTERLINKED_DATA_BUCKET     = module.storage.data_bucket_name
      INTERLINKED_ANALYSIS_BUCKET = module.storage.analysis_bucket_name
      INTERLINKED_DEPLOYMENT_SET  = var.deployment_set
      JOB_EVENTS_TOPIC_ARN        = module.messaging.job_events_topic_arn
    },
    var.bridge_environment,
  )
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
  create_access_logs_bucket = var.enable_access_logging
  kms_key_arn               = var.kms_key_arn
  logs_expiration_days      = var.logs_expiration_days
  cache_expiration_days     = var.cache_expiration_days
  force_destroy             = var.force_destroy_buckets
  deny_insecure_transport   = var.deny_insecure_transport

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
  security_group_egress_ports = var.security_group_egress_ports
  assign_public_ip            = var.assign_public_ip

  image                      = var.container_image
  prefect_api_url            = var.prefect_api_url
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

  bucket_arns = [module.storage.data_bucket_arn, module.storage.analysis_bucket_arn]
  queue_arns  = module.messaging.queue_arns
  topic_arns  = values(module.messaging.topic_arns)
  kms_key_arn = var.kms_key_arn

  flow_run_environment = {
    INTERLINKED_DATA_BUCKET     = module.storage.data_bucket_name
    INTERLINKED_ANALYSIS_BUCKET = module.storage.analysis_bucket_name
    WORKER_QUEUE                = module.messaging.work_queue_name
    WORK_RESULTS_TOPIC_ARN      = module.messaging.work_results_topic_arn
    JOB_EVENTS_TOPIC_ARN        = module.messaging.job_events_topic_arn
  }

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

  environment = local.bridge_environment

  tags = local.tags
}
