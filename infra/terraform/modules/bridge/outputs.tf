output "function_name" {
  description = "Name of the event-bridge Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the event-bridge Lambda function."
  value       = aws_lambda_function.this.arn
}

output "role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.this.arn
}

output "dlq_url" {
  description = "URL of the function's own dead-letter queue (BRIDGE_DLQ_URL)."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the function's own dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "log_group_name" {
  description = "Log group of the function."
  value       = aws_cloudwatch_log_group.this.name
}

output "event_source_mapping_uuid" {
  description = "UUID of the events-queue event source mapping."
  value       = aws_lambda_event_source_mapping.events.uuid
}

output "source_code_hash" {
  description = "Base64 SHA-256 of the deployed package (as filebase64sha256 computes it)."
  value       = aws_lambda_function.this.source_code_hash
}

output "prefect_unavailable_alarm_name" {
  description = "CloudWatch alarm raised while the bridge cannot reach the Prefect API (events are kept meanwhile)."
  value       = aws_cloudwatch_metric_alarm.prefect_unavailable.alarm_name
}
