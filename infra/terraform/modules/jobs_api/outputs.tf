output "function_name" {
  description = "Name of the jobs Lambda: `aws lambda invoke --function-name <this>` (Archimedes' require(\"archimedes\")(<this>))."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the jobs Lambda (lambda:InvokeFunction on it lets a role drive jobs)."
  value       = aws_lambda_function.this.arn
}

output "role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.this.arn
}

output "log_group_name" {
  description = "Log group of the function."
  value       = aws_cloudwatch_log_group.function.name
}

output "security_group_id" {
  description = "Security group of the function: the database must admit it on its port."
  value       = aws_security_group.this.id
}
