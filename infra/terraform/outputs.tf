################################################################################
# The contract: `interlinked env --json`
################################################################################

output "interlinked_env" {
  description = "The `interlinked env --json` document of this stack: prefect_api_url, aws_endpoint_url (null on real AWS), region, buckets{data,analysis}, queues{work,events} (URLs), topics{work_results,job_events} (ARNs), analysis_buckets (analysis -> bucket), script_api_url (null without enable_script_api)."
  value = {
    prefect_api_url  = var.prefect_api_url
    aws_endpoint_url = var.aws_endpoint_url
    region           = data.aws_region.current.name
    buckets = {
      data     = module.storage.data_bucket_name
      analysis = module.storage.analysis_bucket_name
    }
    queues = {
      work   = module.messaging.work_queue_url
      events = module.messaging.events_queue_url
    }
    topics = {
      work_results = module.messaging.work_results_topic_arn
      job_events   = module.messaging.job_events_topic_arn
    }
    analysis_buckets = { for name, bucket in module.storage.analysis_buckets : name => bucket.id }
    script_api_url   = try(module.script_api[0].url, null)
  }
}

################################################################################
# Storage
################################################################################

output "data_bucket_name" {
  description = "Name of the data bucket."
  value       = module.storage.data_bucket_name
}

output "data_bucket_arn" {
  description = "ARN of the data bucket."
  value       = module.storage.data_bucket_arn
}

output "analysis_bucket_name" {
  description = "Name of the analysis bucket."
  value       = module.storage.analysis_bucket_name
}

output "analysis_bucket_arn" {
  description = "ARN of the analysis bucket."
  value       = module.storage.analysis_bucket_arn
}

output "access_logs_bucket_name" {
  description = "Bucket receiving S3 server access logs (null when access logging is off)."
  value       = module.storage.access_logs_bucket_name
}

################################################################################
# Messaging
################################################################################

output "work_queue_url" {
  description = "URL of the work FIFO queue."
  value       = module.messaging.work_queue_url
}

output "work_queue_arn" {
  description = "ARN of the work FIFO queue."
  value       = module.messaging.work_queue_arn
}

output "work_queue_name" {
  description = "Name of the work FIFO queue (WORKER_QUEUE)."
  value       = module.messaging.work_queue_name
}

output "work_dlq_url" {
  description = "URL of the work queue's DLQ."
  value       = module.messaging.work_dlq_url
}

output "work_dlq_arn" {
  description = "ARN of the work queue's DLQ."
  value       = module.messaging.work_dlq_arn
}

output "events_queue_url" {
  description = "URL of the events queue."
  value       = module.messaging.events_queue_url
}

output "events_queue_arn" {
  description = "ARN of the events queue."
  value       = module.messaging.events_queue_arn
}

output "events_dlq_url" {
  description = "URL of the events queue's DLQ."
  value       = module.messaging.events_dlq_url
}

output "events_dlq_arn" {
  description = "ARN of the events queue's DLQ."
  value       = module.messaging.events_dlq_arn
}

output "work_results_topic_arn" {
  description = "ARN of the work_results topic."
  value       = module.messaging.work_results_topic_arn
}

output "job_events_topic_arn" {
  description = "ARN of the job_events topic."
  value       = module.messaging.job_events_topic_arn
}

output "topic_subscriber_queue_urls" {
  description = "URLs of the queues subscribed to topics (raw delivery), keyed by topic key."
  value       = module.messaging.topic_subscriber_queue_urls
}

output "s3_event_routes" {
  description = "S3 event routes in force (bucket, destination, filters, notification id)."
  value       = module.messaging.s3_notification_routes
}

################################################################################
# Compute (null when enable_compute is false)
################################################################################

output "ecs_cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = try(module.compute[0].cluster_arn, null)
}

output "ecs_cluster_name" {
  description = "Name of the ECS cluster."
  value       = try(module.compute[0].cluster_name, null)
}

output "worker_service_name" {
  description = "Name of the Prefect worker ECS service."
  value       = try(module.compute[0].worker_service_name, null)
}

output "worker_pool_name" {
  description = "Prefect ECS work pool the ECS worker service polls."
  value       = var.worker_pool_name
}

output "batch_worker_pool_name" {
  description = "Prefect aws-batch work pool the Batch worker service polls."
  value       = var.batch_worker_pool_name
}

output "batch_worker_service_name" {
  description = "Name of the Prefect aws-batch worker ECS service (null when not enabled)."
  value       = try(module.compute[0].service_names["batch_worker"], null)
}

output "bridge_service_name" {
  description = "Name of the event-bridge ECS service (null when enable_bridge_service is false)."
  value       = try(module.compute[0].service_names["bridge_service"], null)
}

output "analysis_service_name" {
  description = "Name of the analysis-service ECS service (null when enable_analysis_service is false)."
  value       = try(module.compute[0].service_names["analysis_service"], null)
}

output "service_task_role_arns" {
  description = "Task role ARNs of the enabled long-running services, keyed \"batch_worker\", \"bridge_service\", \"analysis_service\"."
  value       = try(module.compute[0].service_task_role_arns, {})
}

output "execution_role_arn" {
  description = "ARN of the ECS/Batch execution role."
  value       = try(module.compute[0].execution_role_arn, null)
}

output "task_role_arn" {
  description = "ARN of the flow-run task role (ECS flow-run tasks, Batch jobs)."
  value       = try(module.compute[0].flow_run_task_role_arn, null)
}

output "worker_task_role_arn" {
  description = "ARN of the Prefect worker's task role."
  value       = try(module.compute[0].worker_task_role_arn, null)
}

output "security_group_ids" {
  description = "Security groups of the compute resources."
  value       = try(module.compute[0].security_group_ids, null)
}

output "log_group_name" {
  description = "Log group of ECS flow-run tasks (work pool cloudwatch_logs_options)."
  value       = try(module.compute[0].flow_run_log_group_name, null)
}

output "log_group_names" {
  description = "Every log group of the stack keyed \"worker\", \"flow_runs\", \"batch\", \"bridge\" (the Lambda), and \"batch_worker\", \"bridge_service\", \"analysis_service\" for the enabled services."
  value = merge(
    try(module.compute[0].log_group_names, {}),
    var.enable_bridge ? { bridge = module.bridge[0].log_group_name } : {},
  )
}

output "batch_job_queue_arn" {
  description = "ARN of the Batch job queue for flow runs."
  value       = try(module.compute[0].batch_job_queue_arn, null)
}

output "batch_job_definition_arn" {
  description = "ARN (with revision) of the flow-run Batch job definition."
  value       = try(module.compute[0].batch_job_definition_arn, null)
}

output "batch_job_definition_name" {
  description = "Name of the flow-run Batch job definition (submit by name to get the latest revision)."
  value       = try(module.compute[0].batch_job_definition_name, null)
}

output "ecs_work_pool_job_variables" {
  description = "Defaults of the ECS work pool's base job template (prefect work-pool create <worker_pool_name> --type ecs): cluster, roles, image, network, CloudWatch logs, Prefect API key secret."
  value       = try(module.compute[0].ecs_work_pool_job_variables, null)
}

output "batch_work_pool_job_variables" {
  description = "Defaults of the aws-batch work pool's base job template (prefect work-pool create <batch_worker_pool_name> --type aws-batch): job_queue, job_definition."
  value       = try(module.compute[0].batch_work_pool_job_variables, null)
}

################################################################################
# Event bridge and secrets (null when disabled)
################################################################################

output "bridge_function_name" {
  description = "Name of the event-bridge Lambda."
  value       = try(module.bridge[0].function_name, null)
}

output "bridge_function_arn" {
  description = "ARN of the event-bridge Lambda."
  value       = try(module.bridge[0].function_arn, null)
}

output "bridge_dlq_url" {
  description = "URL of the event-bridge Lambda's own DLQ."
  value       = try(module.bridge[0].dlq_url, null)
}

output "prefect_api_key_secret_arn" {
  description = "Secrets Manager ARN of the Prefect API key (null = no authentication)."
  value       = local.prefect_api_key_secret_arn
}

output "dlq_urls" {
  description = "Every dead-letter queue URL keyed \"work\", \"events\", \"bridge\"."
  value = merge(
    { work = module.messaging.work_dlq_url, events = module.messaging.events_dlq_url },
    var.enable_bridge ? { bridge = module.bridge[0].dlq_url } : {},
  )
}

################################################################################
# Database (null when enable_database is false)
################################################################################

output "database_endpoint" {
  description = "Endpoint \"host:port\" of the PostgreSQL instance."
  value       = try(module.database[0].endpoint, null)
}

output "database_address" {
  description = "Host name of the PostgreSQL instance."
  value       = try(module.database[0].address, null)
}

output "database_port" {
  description = "TCP port of the PostgreSQL instance."
  value       = try(module.database[0].port, null)
}

output "database_name" {
  description = "Database created with the instance (the task store's)."
  value       = try(module.database[0].database_name, null)
}

output "database_secret_arn" {
  description = "Secrets Manager ARN of the master user secret RDS manages (JSON username/password, rotated by RDS)."
  value       = try(module.database[0].master_user_secret_arn, null)
}

output "database_security_group_id" {
  description = "Security group of the PostgreSQL instance (the database port from the compute and the allowed security groups only)."
  value       = try(module.database[0].security_group_id, null)
}

output "database_connection_url_template" {
  description = "libpq URL of the database with {password} in place of the password (URL-quote the secret's password); sslmode=require. For a self-hosted Prefect server: postgresql+asyncpg:// with its own database."
  value       = try(module.database[0].connection_url_template, null)
}

output "database_instance_resource_id" {
  description = "Resource id of the PostgreSQL instance (for rds-db:connect policies with IAM authentication)."
  value       = try(module.database[0].instance_resource_id, null)
}

################################################################################
# Task collections table (null when enable_tasks_table is false)
################################################################################

output "tasks_table_name" {
  description = "Name of the DynamoDB table of task collections (INTERLINKED_TASKS_TABLE)."
  value       = try(module.tasks_table[0].name, null)
}

output "tasks_table_arn" {
  description = "ARN of the DynamoDB table of task collections."
  value       = try(module.tasks_table[0].arn, null)
}

output "tasks_backend" {
  description = "Task store the flow runs open (INTERLINKED_TASKS_BACKEND): \"postgres\", \"dynamodb\" or null."
  value       = local.tasks_backend
}

output "analysis_buckets" {
  description = "The analyses' own buckets, by analysis name: { id, arn }."
  value       = module.storage.analysis_buckets
}

################################################################################
# Script API
################################################################################

output "script_api_url" {
  description = "Base URL of the seed's HTTP API (ends in \"/\"; INTERLINKED_SCRIPT_API_URL, interlinker_options(lambda_uri = ...)). null without enable_script_api."
  value       = try(module.script_api[0].url, null)
}

output "script_api_id" {
  description = "ID of the script API (API Gateway HTTP API)."
  value       = try(module.script_api[0].api_id, null)
}

output "script_api_route_keys" {
  description = "Routes of the script API (\"POST /submitjob\", ...)."
  value       = try(module.script_api[0].route_keys, [])
}

output "script_api_execution_arn" {
  description = "Execution ARN of the script API (execute-api:Invoke resources start with it)."
  value       = try(module.script_api[0].execution_arn, null)
}

output "script_api_function_name" {
  description = "Name of the script API Lambda."
  value       = try(module.script_api[0].function_name, null)
}

output "script_api_role_arn" {
  description = "Execution role of the script API Lambda."
  value       = try(module.script_api[0].role_arn, null)
}

output "jobs_api_function_name" {
  description = "Name of the jobs Lambda (aws lambda invoke --function-name ...). null without enable_jobs_api."
  value       = try(module.jobs_api[0].function_name, null)
}

output "jobs_api_function_arn" {
  description = "ARN of the jobs Lambda: lambda:InvokeFunction on it lets a role drive jobs."
  value       = try(module.jobs_api[0].function_arn, null)
}

output "jobs_api_role_arn" {
  description = "Execution role of the jobs Lambda."
  value       = try(module.jobs_api[0].role_arn, null)
}

output "jobs_api_log_group_name" {
  description = "Log group of the jobs Lambda."
  value       = try(module.jobs_api[0].log_group_name, null)
}

output "submission_role_arn" {
  description = "Role submissions' analyses read their inputs and write their results with, narrowed per submission by a session policy (set in the flow runs' environment as INTERLINKED_SUBMISSION_ROLE_ARN); null without compute."
  value       = try(module.compute[0].submission_role_arn, null)
}

output "script_job_role_arn" {
  description = "Role script jobs' code runs as, narrowed per job by a session policy (set in the flow runs' environment as INTERLINKED_SCRIPT_JOB_ROLE_ARN); null without compute."
  value       = try(module.compute[0].script_job_role_arn, null)
}
