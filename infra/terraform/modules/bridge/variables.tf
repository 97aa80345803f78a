variable "name_prefix" {
  description = "Prefix for the names this module derives (function, role, DLQ)."
  type        = string
}

variable "function_name" {
  description = "Name of the event-bridge Lambda function. null = \"<name_prefix>-event-bridge\"."
  type        = string
  default     = null
}

variable "package_path" {
  description = "Path of the prebuilt deployment zip (build it with infra/terraform/scripts/package_lambda.py before plan/apply)."
  type        = string

  validation {
    condition     = can(regex("\\.zip$", var.package_path))
    error_message = "package_path must point at a .zip file (build it with infra/terraform/scripts/package_lambda.py)."
  }
}

variable "handler" {
  description = "Lambda handler (module.function) inside the package."
  type        = string
  default     = "interlinked.bridge.lambda_handler.handler"
}

variable "runtime" {
  description = "Lambda runtime."
  type        = string
  default     = "python3.11"
}

variable "architectures" {
  description = "Lambda instruction set architecture: [\"x86_64\"] or [\"arm64\"]."
  type        = list(string)
  default     = ["x86_64"]
}

variable "timeout" {
  description = "Function timeout (seconds). The events queue's visibility timeout must be at least this (AWS recommends 6x)."
  type        = number
  default     = 60
}

variable "memory_size" {
  description = "Function memory (MiB)."
  type        = number
  default     = 256
}

variable "events_queue_arn" {
  description = "ARN of the events queue the function consumes (SQS event source mapping)."
  type        = string
}

variable "prefect_api_url" {
  description = "PREFECT_API_URL the bridge creates flow runs through."
  type        = string
}

variable "prefect_api_key_secret_arn" {
  description = "Secrets Manager secret with the Prefect API key (or basic-auth string); its ARN is passed as PREFECT_API_KEY_SECRET_ARN and readable by the function. null = no authentication (variable set to \"\")."
  type        = string
  default     = null
}

variable "environment" {
  description = "Extra environment variables of the function (for example bucket names and deployment names)."
  type        = map(string)
  default     = {}
}

variable "event_source_mapping_enabled" {
  description = "Whether the SQS event source mapping is enabled (it is created either way)."
  type        = bool
  default     = true
}

variable "batch_size" {
  description = "Messages per invocation (SQS event source mapping)."
  type        = number
  default     = 10
}

variable "maximum_batching_window_in_seconds" {
  description = "Seconds the event source mapping may wait to fill a batch (0 = invoke at once)."
  type        = number
  default     = 0
}

variable "maximum_concurrency" {
  description = "Maximum concurrent invocations by the SQS event source mapping (2-1000); caps Prefect API load without throttling-induced DLQ moves."
  type        = number
  default     = 5

  validation {
    condition     = var.maximum_concurrency >= 2 && var.maximum_concurrency <= 1000
    error_message = "maximum_concurrency must be between 2 and 1000."
  }
}

variable "dlq_name" {
  description = "Name of the function's own dead-letter queue (failed asynchronous invocations, and rejects the code writes with a reason). null = \"<function name>-dlq\"."
  type        = string
  default     = null
}

variable "dlq_message_retention_seconds" {
  description = "Message retention of the function's DLQ (seconds)."
  type        = number
  default     = 1209600
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
  description = "Subnets to attach the function to (needed only when the Prefect API is private to a VPC). Empty = no VPC."
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
  description = "Customer managed KMS key for the environment variables and the log group. null = AWS managed keys."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the function's log group (days; a CloudWatch-supported value)."
  type        = number
  default     = 30
}

variable "deny_insecure_transport" {
  description = "Add a policy statement denying requests made without TLS (aws:SecureTransport = false). Turn off only for plain-HTTP emulators: moto evaluates bucket policies but not the Bool condition, so the statement would deny every request."
  type        = bool
  default     = true
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified when the bridge reports the Prefect API unavailable (alarm <function>-prefect-unavailable) and when it recovers. Empty = the alarm only shows in CloudWatch."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
