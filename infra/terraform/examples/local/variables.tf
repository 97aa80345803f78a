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
