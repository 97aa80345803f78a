variable "name_prefix" {
  description = "Prefix for the names this module derives (function, role, security group, log group)."
  type        = string
}

variable "function_name" {
  description = "Name of the jobs Lambda function (also the role's and the security group's). null = \"<name_prefix>-jobs-api\"."
  type        = string
  default     = null
}

variable "package_path" {
  description = "Path of the prebuilt deployment zip (infra/terraform/scripts/package_lambda.py --installed pydantic-settings --installed psycopg --installed psycopg-binary -o build/jobs_api.zip)."
  type        = string

  validation {
    condition     = can(regex("\\.zip$", var.package_path))
    error_message = "package_path must point at a .zip file (build it with infra/terraform/scripts/package_lambda.py)."
  }
}

variable "handler" {
  description = "Lambda handler (module.function) inside the package."
  type        = string
  default     = "interlinked.jobs_lambda.handler"
}

variable "runtime" {
  description = "Lambda runtime. The package's compiled dependencies (pydantic-core, psycopg-binary) must match it and architectures."
  type        = string
  default     = "python3.11"
}

variable "architectures" {
  description = "Lambda instruction set architecture: [\"x86_64\"] or [\"arm64\"]."
  type        = list(string)
  default     = ["x86_64"]
}

variable "timeout" {
  description = "Function timeout (seconds): a few database round trips, an S3 copy and at most one Prefect call per action."
  type        = number
  default     = 30
}

variable "memory_size" {
  description = "Function memory (MiB)."
  type        = number
  default     = 256
}

variable "reserved_concurrent_executions" {
  description = "Concurrent executions reserved for (and capping) the function: each holds one database connection, so this bounds the connections it opens. -1 = unreserved (no cap)."
  type        = number
  default     = 20
}

variable "vpc_id" {
  description = "VPC of the database: the function's security group is created in it."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets the function runs in (they must reach the database, and Secrets Manager, S3 and the Prefect API through NAT or VPC endpoints)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "subnet_ids needs at least one subnet: the function reaches the database inside its VPC."
  }
}

variable "database_port" {
  description = "TCP port of the database (egress of the function's security group)."
  type        = number
  default     = 5432
}

variable "database_cidr_blocks" {
  description = "Where the database may be (egress on database_port): the VPC's CIDR, or the database subnets'."
  type        = list(string)
}

variable "https_egress_cidr_blocks" {
  description = "Destinations of HTTPS egress (Secrets Manager, S3, the Prefect API). The default allows any; narrow it to VPC endpoint prefix lists' CIDRs where there is no NAT."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "prefect_api_port" {
  description = "TCP port of the Prefect API when it is not 443 (a self-hosted server on 4200): egress gains it."
  type        = number
  default     = 443
}

variable "database_url_template" {
  description = "libpq URL of the job store with {password} in place of the password (modules/database output connection_url_template)."
  type        = string
}

variable "database_secret_arn" {
  description = "Secrets Manager secret {\"username\", \"password\"} of the database (modules/database output master_user_secret_arn); the function may read it and nothing else there."
  type        = string
}

variable "data_bucket_name" {
  description = "The data bucket: each job change's JSON copy goes to results/{job_id}/job.json."
  type        = string
}

variable "data_bucket_arn" {
  description = "ARN of the data bucket: the function may get and put results/* and list that prefix (nothing else)."
  type        = string
}

variable "deployment_set" {
  description = "Job types name deployments <flow>/<deployment_set> (INTERLINKED_DEPLOYMENT_SET)."
  type        = string
  default     = "ecs"
}

variable "prefect_api_url" {
  description = "PREFECT_API_URL the function creates and cancels flow runs through (DISPATCH, retry, cancel)."
  type        = string
}

variable "prefect_api_key_secret_arn" {
  description = "Secrets Manager secret with the Prefect API key (or basic-auth string), readable by the function. null = no authentication."
  type        = string
  default     = null
}

variable "environment" {
  description = "Extra environment variables of the function (INTERLINKED_JOBS_* policy settings, INTERLINKED_JOB_TYPES_FILE)."
  type        = map(string)
  default     = {}
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

variable "attach_aws_managed_policies" {
  description = "Attach AWSLambdaVPCAccessExecutionRole (the function's network interfaces). false only on emulators that do not ship AWS managed policies."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the bucket, the secrets, the environment variables and the log group. null = AWS managed keys."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the function's log group (days; a CloudWatch-supported value)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
