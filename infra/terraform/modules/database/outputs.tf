output "instance_identifier" {
  description = "DB instance identifier."
  value       = aws_db_instance.this.identifier
}

output "instance_arn" {
  description = "ARN of the DB instance."
  value       = aws_db_instance.this.arn
}

output "instance_resource_id" {
  description = "Resource id of the DB instance (the dbi-resource-id of rds-db:connect ARNs for IAM authentication)."
  value       = aws_db_instance.this.resource_id
}

output "endpoint" {
  description = "Connection endpoint \"host:port\"."
  value       = aws_db_instance.this.endpoint
}

output "address" {
  description = "Host name of the instance (private DNS name inside the VPC)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "TCP port of PostgreSQL."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Name of the database created with the instance."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "Master user name (the secret holds it too)."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "ARN of the Secrets Manager secret RDS manages for the master user: JSON {\"username\", \"password\"}, rotated by RDS (every 7 days by default)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "security_group_id" {
  description = "Security group of the instance (ingress on the database port from allowed_security_group_ids only)."
  value       = aws_security_group.this.id
}

output "parameter_group_name" {
  description = "Name of the instance's parameter group (rds.force_ssl = 1)."
  value       = aws_db_parameter_group.this.name
}

output "connection_url_template" {
  description = "libpq URL without the password: put the URL-quoted password of the secret in place of {password}. TLS is required (sslmode=require; verify-full with the RDS CA bundle)."
  value       = "postgresql://${aws_db_instance.this.username}:{password}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${aws_db_instance.this.db_name}?sslmode=require"
}

output "log_group_names" {
  description = "Log groups of the exported logs, keyed by log type (postgresql, upgrade, ...)."
  value       = { for key, group in aws_cloudwatch_log_group.this : key => group.name }
}
