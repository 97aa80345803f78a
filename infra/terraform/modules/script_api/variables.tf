variable "name_prefix" {
  description = "Prefix for the names this module derives (function, role, API, log groups)."
  type        = string
}

variable "function_name" {
  description = "Name of the script API Lambda function (also the API's and the role's). null = \"<name_prefix>-script-api\"."
  type        = string
  default     = null
}

variable "package_path" {
  description = "Path of the prebuilt deployment zip (infra/terraform/scripts/package_lambda.py --installed pydantic -o build/script_api.zip)."
  type        = string

  validation {
    condition     = can(regex("\\.zip$", var.package_path))
    error_message = "package_path must point at a .zip file (build it with infra/terraform/scripts/package_lambda.py)."
  }
}

variable "handler" {
  description = "Lambda handler (module.function) inside the package."
  type        = string
  default     = "interlinked.script_api_lambda.handler"
}

variable "runtime" {
  description = "Lambda runtime. The package's compiled dependencies (pydantic-core) must match it and architectures."
  type        = string
  default     = "python3.11"
}

variable "architectures" {
  description = "Lambda instruction set architecture: [\"x86_64\"] or [\"arm64\"]."
  type        = list(string)
  default     = ["x86_64"]
}

variable "timeout" {
  description = "Function timeout (seconds). API Gateway waits at most 30 s for an HTTP API integration."
  type        = number
  default     = 29
}

variable "memory_size" {
  description = "Function memory (MiB)."
  type        = number
  default     = 256
}

variable "data_bucket_name" {
  description = "The data bucket (the seed's \"interlinked\" bucket): INTERLINKED_DATA_BUCKET of the function."
  type        = string
}

variable "data_bucket_arn" {
  description = "ARN of the data bucket: the function may get and put its objects and list it (nothing else)."
  type        = string
}

variable "deployment_set" {
  description = "submitjob creates runs of the deployment script-job/<deployment_set>."
  type        = string
  default     = "ecs"
}

variable "prefect_api_url" {
  description = "PREFECT_API_URL submitjob creates flow runs through."
  type        = string
}

variable "prefect_api_key_secret_arn" {
  description = "Secrets Manager secret with the Prefect API key (or basic-auth string), readable by the function. null = no authentication."
  type        = string
  default     = null
}

variable "environment" {
  description = "Extra environment variables of the function."
  type        = map(string)
  default     = {}
}

variable "authorization_type" {
  description = "Authorization of every route: AWS_IAM (callers sign with SigV4 and need execute-api:Invoke) or NONE (the seed's open API: anyone with the URL can write the data bucket and start jobs)."
  type        = string
  default     = "AWS_IAM"

  validation {
    condition     = contains(["AWS_IAM", "NONE"], var.authorization_type)
    error_message = "authorization_type must be AWS_IAM or NONE."
  }
}

variable "throttling_rate_limit" {
  description = "Steady-state requests per second the API stage accepts (all routes)."
  type        = number
  default     = 50
}

variable "throttling_burst_limit" {
  description = "Burst of requests the API stage accepts."
  type        = number
  default     = 100
}

variable "tracing_mode" {
  description = "X-Ray tracing mode: PassThrough or Active (Active adds X-Ray write permissions)."
  type        = string
  default     = "PassThrough"

  validation {
    condition     = contains(["PassThrough", "Active"], var.tracing_mode)
    error_message = "tracing_mode must be PassThrough or Active."
  }
}

variable "subnet_ids" {
  description = "Subnets to attach the function to (needed only when the Prefect API is private to a VPC; S3 then needs a gateway endpoint). Empty = no VPC."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups of the function's VPC attachment (with subnet_ids)."
  type        = list(string)
  default     = []
}

variable "attach_aws_managed_policies" {
  description = "Attach AWSLambdaVPCAccessExecutionRole when the function is in a VPC. false only on emulators that do not ship AWS managed policies."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the buckets, the secret, the environment variables and the log groups. null = AWS managed keys."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the function's and the API's log groups (days; a CloudWatch-supported value)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
