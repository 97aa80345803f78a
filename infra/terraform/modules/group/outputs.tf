output "role_arn" {
  description = "ARN of the group's role (e.g. `role_arn` of an AWS CLI profile, with the member's own profile as `source_profile`)."
  value       = aws_iam_role.this.arn
}

output "policy_arn" {
  description = "ARN of the group's policy."
  value       = aws_iam_policy.this.arn
}

output "prefix" {
  description = "The group's prefix in the bucket (uploads go to s3://{bucket}/{prefix}inputs/, configs/ and submissions/)."
  value       = "s3://${var.bucket_name}/${local.prefix}"
}
