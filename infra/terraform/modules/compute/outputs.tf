output "cluster_arn" {
  description = "ARN of the ECS cluster (ECS work pool \"cluster\")."
  value       = aws_ecs_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "worker_service_name" {
  description = "Name of the Prefect ECS worker service (null when enable_worker_service is false)."
  value       = try(aws_ecs_service.worker[0].name, null)
}

output "worker_task_definition_arn" {
  description = "ARN of the Prefect worker task definition (null when enable_worker_service is false)."
  value       = try(aws_ecs_task_definition.worker[0].arn, null)
}

output "worker_pool_name" {
  description = "Prefect ECS work pool the worker polls."
  value       = var.worker_pool_name
}

output "execution_role_arn" {
  description = "ARN of the execution role (ECS work pool \"execution_role_arn\"; Batch executionRoleArn)."
  value       = aws_iam_role.execution.arn
}

output "flow_run_task_role_arn" {
  description = "ARN of the flow-run task role (ECS work pool \"task_role_arn\"; Batch jobRoleArn)."
  value       = aws_iam_role.flow_run.arn
}

output "worker_task_role_arn" {
  description = "ARN of the Prefect worker's task role."
  value       = aws_iam_role.worker.arn
}

output "security_group_ids" {
  description = "Security groups used by the worker, flow-run tasks and Batch compute."
  value       = local.security_group_ids
}

output "subnet_ids" {
  description = "Subnets used by the worker, flow-run tasks and Batch compute."
  value       = var.subnet_ids
}

output "log_group_names" {
  description = "CloudWatch log groups keyed \"worker\", \"flow_runs\" (ECS flow-run tasks), \"batch\" (Batch jobs), and \"batch_worker\", \"bridge_service\", \"analysis_service\" for the services that are enabled."
  value       = { for key, group in aws_cloudwatch_log_group.this : key => group.name }
}

output "flow_run_log_group_name" {
  description = "Log group for ECS flow-run tasks (work pool cloudwatch_logs_options awslogs-group)."
  value       = aws_cloudwatch_log_group.this["flow_runs"].name
}

output "batch_compute_environment_arn" {
  description = "ARN of the Batch compute environment (null when enable_batch is false)."
  value       = try(aws_batch_compute_environment.this[0].arn, null)
}

output "batch_job_queue_arn" {
  description = "ARN of the Batch job queue for flow runs (null when enable_batch is false)."
  value       = try(aws_batch_job_queue.this[0].arn, null)
}

output "batch_job_queue_name" {
  description = "Name of the Batch job queue (null when enable_batch is false)."
  value       = try(aws_batch_job_queue.this[0].name, null)
}

output "batch_job_definition_arn" {
  description = "ARN (with revision) of the flow-run Batch job definition (null when enable_batch is false)."
  value       = try(aws_batch_job_definition.flow_run[0].arn, null)
}

output "batch_job_definition_name" {
  description = "Name of the flow-run Batch job definition (null when enable_batch is false)."
  value       = try(aws_batch_job_definition.flow_run[0].name, null)
}

output "ecs_work_pool_job_variables" {
  description = "Defaults for the ECS work pool's base job template (prefect work-pool create --type ecs): cluster, roles, image, network, CloudWatch logs, and the Prefect API key secret (prefect_api_key_secret_arn or prefect_api_auth_string_secret_arn, after prefect_api_key_env_name)."
  value = merge(local.ecs_secret_job_variables, {
    cluster            = aws_ecs_cluster.this.arn
    execution_role_arn = aws_iam_role.execution.arn
    task_role_arn      = aws_iam_role.flow_run.arn
    vpc_id             = var.vpc_id
    image              = var.image
    network_configuration = {
      subnets        = var.subnet_ids
      securityGroups = local.security_group_ids
      assignPublicIp = var.assign_public_ip ? "ENABLED" : "DISABLED"
    }
    env                       = local.session_role_environment
    configure_cloudwatch_logs = true
    cloudwatch_logs_options = {
      awslogs-group         = aws_cloudwatch_log_group.this["flow_runs"].name
      awslogs-region        = local.region
      awslogs-stream-prefix = "flow-run"
    }
  })
}

output "batch_worker_pool_name" {
  description = "Prefect aws-batch work pool the Batch worker service polls."
  value       = var.batch_worker_pool_name
}

output "batch_work_pool_job_variables" {
  description = "Defaults for the aws-batch work pool's base job template (prefect work-pool create --type aws-batch): job_queue (ARN) and job_definition (name: the latest revision). vCPU, memory, retry strategy and timeout stay the job definition's unless a deployment sets them. null when enable_batch is false."
  value = !var.enable_batch ? null : {
    job_queue      = aws_batch_job_queue.this[0].arn
    job_definition = aws_batch_job_definition.flow_run[0].name
  }
}

output "service_names" {
  description = "ECS service names of the optional long-running services that are enabled, keyed \"batch_worker\", \"bridge_service\", \"analysis_service\"."
  value       = { for key, service in aws_ecs_service.service : key => service.name }
}

output "service_task_role_arns" {
  description = "Task role ARNs of the optional long-running services that are enabled, keyed \"batch_worker\", \"bridge_service\", \"analysis_service\"."
  value       = { for key, role in aws_iam_role.service : key => role.arn }
}

output "submission_role_arn" {
  description = "Role a submission's analysis reads and writes with (INTERLINKED_SUBMISSION_ROLE_ARN in the flow runs' environment), narrowed per submission by a session policy; null without create_submission_role."
  value       = try(aws_iam_role.session["submission"].arn, null)
}

output "script_job_role_arn" {
  description = "Role a script job's code runs as (INTERLINKED_SCRIPT_JOB_ROLE_ARN in the flow runs' environment), narrowed per job by a session policy; null without create_script_job_role."
  value       = try(aws_iam_role.session["script_job"].arn, null)
}
