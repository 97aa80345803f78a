variable "region" {
  description = "AWS region of the stack."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Environment part of the resource names (dev, staging, prod)."
  type        = string
  default     = "dev"
}

variable "prefect_api_url" {
  description = "PREFECT_API_URL: a self-hosted server (https://prefect.example.org/api) or a Prefect Cloud workspace URL."
  type        = string
}

variable "prefect_api_key_secret_arn" {
  description = "Existing Secrets Manager secret with the Prefect API key. null = the stack creates \"<name>-<env>/prefect-api-key\" (put its value with aws secretsmanager put-secret-value)."
  type        = string
  default     = null
}

variable "prefect_api_key_env_name" {
  description = "PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted server with basic auth)."
  type        = string
  default     = "PREFECT_API_KEY"
}

variable "container_image" {
  description = "Project image in ECR (for example 123456789012.dkr.ecr.us-east-1.amazonaws.com/interlinked:1.0.0)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the worker, flow-run tasks and Batch compute."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (with NAT or VPC endpoints) of the worker, flow-run tasks and Batch compute."
  type        = list(string)
}

variable "security_group_egress_ports" {
  description = "TCP ports the created security group allows out (443; add the Prefect server port if it differs)."
  type        = list(number)
  default     = [443]
}

variable "batch_compute_type" {
  description = "Batch compute: FARGATE, FARGATE_SPOT, SPOT or EC2."
  type        = string
  default     = "FARGATE_SPOT"
}

variable "analysis_submission_groups" {
  description = "Groups whose {group}/submissions/*.json uploads trigger the event bridge (empty = every *.json of the analysis bucket, filtered by the bridge)."
  type        = list(string)
  default     = []
}

variable "bridge_runs_on" {
  description = "Where the event bridge runs: \"lambda\" (the event-bridge Lambda with its SQS event source mapping) or \"ecs\" (python -m interlinked.bridge as an ECS service). They are alternatives."
  type        = string
  default     = "lambda"

  validation {
    condition     = contains(["lambda", "ecs"], var.bridge_runs_on)
    error_message = "bridge_runs_on must be \"lambda\" or \"ecs\"."
  }
}

variable "enable_analysis_service" {
  description = "Run the analysis service as a long-running ECS service (instead of starting the analysis-service/ecs deployment as a flow run)."
  type        = bool
  default     = true
}

variable "deployment_set" {
  description = "Deployments (prefect.yaml names) the event bridge and the analysis service start runs of: \"ecs\" or \"batch\"."
  type        = string
  default     = "ecs"
}

variable "bridge_package_path" {
  description = "Event-bridge zip (bridge_runs_on = \"lambda\"). null = infra/terraform/build/bridge.zip (the default output of scripts/package_lambda.py)."
  type        = string
  default     = null
}

variable "enable_script_api" {
  description = "Create the seed's HTTP API (API Gateway + Lambda; build its zip first)."
  type        = bool
  default     = true
}

variable "script_api_package_path" {
  description = "Script API zip. null = infra/terraform/build/script_api.zip."
  type        = string
  default     = null
}

variable "script_api_authorization_type" {
  description = "AWS_IAM (callers sign requests with SigV4) or NONE (the seed's open API: anyone with the URL may write the data bucket and start jobs)."
  type        = string
  default     = "AWS_IAM"
}

variable "analysis_buckets" {
  description = "Analyses with a bucket of their own (analysis name -> bucket name, globally unique), as INTERLINKED_ANALYSIS_BUCKETS of the flows."
  type        = map(string)
  default     = {}
}

variable "enable_database" {
  description = "Create the PostgreSQL instance (RDS, Multi-AZ) for the task store and, if wanted, a self-hosted Prefect server."
  type        = bool
  default     = true
}

variable "database_subnet_ids" {
  description = "Private subnets (two availability zones at least, no route to an internet gateway) of the database. Empty = subnet_ids."
  type        = list(string)
  default     = []
}

variable "database_allowed_security_group_ids" {
  description = "Security groups admitted on port 5432 besides the stack's compute security group (e.g. a self-hosted Prefect server's)."
  type        = list(string)
  default     = []
}

variable "database_secret_reader_role_names" {
  description = "IAM roles (names) besides the flow-run role that may read the database's master user secret (e.g. a self-hosted Prefect server's task role)."
  type        = list(string)
  default     = []
}

variable "database_instance_class" {
  description = "DB instance class of the database."
  type        = string
  default     = "db.t4g.small"
}

variable "enable_tasks_table" {
  description = "Create the DynamoDB table of task collections (on-demand, encrypted with the stack's key, point-in-time recovery)."
  type        = bool
  default     = true
}

variable "tasks_backend" {
  description = "Task store of the flow runs: \"postgres\", \"dynamodb\" or null (postgres when enable_database, else dynamodb)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Extra tags for every taggable resource."
  type        = map(string)
  default     = {}
}
