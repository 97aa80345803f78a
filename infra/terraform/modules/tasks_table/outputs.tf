output "name" {
  description = "Name of the task collections table."
  value       = aws_dynamodb_table.this.name
}

output "arn" {
  description = "ARN of the task collections table."
  value       = aws_dynamodb_table.this.arn
}

output "index_arns" {
  description = "ARNs of the table's indexes (\"<table arn>/index/*\"), for IAM policies that query them."
  value       = ["${aws_dynamodb_table.this.arn}/index/*"]
}

output "index_names" {
  description = "Names of the table's global secondary indexes."
  value       = sort(keys(local.indexes))
}
