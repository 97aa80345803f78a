output "cluster_arn" {
  description = "ARN of the ECS cluster (ECS work pool \"cluster\")."
  value       = aws_ecs_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "worker_service_name" {
  description = "Name of the Prefect worker ECS service (null when enable_worker_service is false)."
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
  description = "CloudWatch log groups keyed \"worker\", \"flow_runs\" (ECS flow-run tasks), \"batch\"."
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
  description = "Values for the ECS work pool base job template / prefect.yaml job_variables of ECS deployments."
  value = {
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
    configure_cloudwatch_logs = true
    cloudwatch_logs_options = {
      awslogs-group         = aws_cloudwatch_log_group.this["flow_runs"].name
      awslogs-region        = local.region
      awslogs-stream-prefix = "flow-run"
    }
  }
}
