output "interlinked_env" {
  description = "The `interlinked env --json` document of this stack."
  value       = module.interlinked.interlinked_env
}

output "stack" {
  description = "Every output of the root stack (names, URLs, ARNs) for prefect.yaml and the blocks."
  value       = module.interlinked
}

output "kms_key_arn" {
  description = "ARN of the stack's customer managed KMS key."
  value       = aws_kms_key.this.arn
}
