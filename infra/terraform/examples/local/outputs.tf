output "interlinked_env" {
  description = "The `interlinked env --json` document of the local stack."
  value       = module.interlinked.interlinked_env
}

output "stack" {
  description = "Every output of the root stack (names, URLs, ARNs), for tests and tooling."
  value       = module.interlinked
}
