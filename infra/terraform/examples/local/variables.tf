variable "aws_endpoint_url" {
  description = "Endpoint of the AWS emulator (moto server) every service is sent to."
  type        = string
  default     = "http://127.0.0.1:5055"
}

variable "prefect_api_url" {
  description = "PREFECT_API_URL of the local Prefect server."
  type        = string
  default     = "http://127.0.0.1:4200/api"
}

variable "environment" {
  description = "Environment part of the resource names."
  type        = string
  default     = "local"
}

variable "script_api_package_path" {
  description = "Script API zip. null = infra/terraform/build/script_api.zip (scripts/package_lambda.py --installed pydantic -o infra/terraform/build/script_api.zip)."
  type        = string
  default     = null
}

variable "analysis_buckets" {
  description = "Analyses with a bucket of their own (analysis name -> bucket name), as INTERLINKED_ANALYSIS_BUCKETS."
  type        = map(string)
  default     = { describe = "interlinked-local-describe" }
}

variable "bridge_package_path" {
  description = "Event-bridge zip. null = infra/terraform/build/bridge.zip (the default output of scripts/package_lambda.py)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Extra tags for every taggable resource."
  type        = map(string)
  default     = {}
}
