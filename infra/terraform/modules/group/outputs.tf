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

output "registry_record" {
  description = "The group's record in the group registry (s3://{registry_bucket}/groups/{group}.json): the role's unique id, which S3 notifications name as the writer of the group's uploads."
  value       = "s3://${var.registry_bucket}/${aws_s3_object.registry.key}"
}
