################################################################################
# Naming and tagging
################################################################################

variable "name" {
  description = "Project name, first part of every resource name."
  type        = string
  default     = "interlinked"
}

variable "environment" {
  description = "Environment name (dev, staging, prod, local, ...), second part of every resource name."
  type        = string
  default     = "dev"
}

variable "tags" {
  description = "Tags added to every taggable resource (merged with Project/Environment/ManagedBy)."
  type        = map(string)
  default     = {}
}

variable "deny_insecure_transport" {
  description = "Bucket, queue and topic policies deny requests without TLS. false only for plain-HTTP emulators (moto evaluates bucket policies but not their Bool conditions, so the deny would block every S3 request)."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for buckets, topics, log groups, the Prefect API key secret and the Lambda environment. null = AWS owned/managed keys (AES256 buckets, alias/aws/sns topics)."
  type        = string
  default     = null
}

################################################################################
# Prefect and endpoints
################################################################################

variable "prefect_api_url" {
  description = "PREFECT_API_URL of the worker, flow runs and the event bridge (self-hosted server or Prefect Cloud workspace URL)."
  type        = string
}

variable "aws_endpoint_url" {
  description = "AWS endpoint the clients use (moto/LocalStack), reported in the interlinked_env output. null on real AWS."
  type        = string
  default     = null
}

variable "prefect_api_key_secret_arn" {
  description = "Existing Secrets Manager secret holding the Prefect API key / basic-auth string. Takes precedence over create_prefect_api_key_secret. null with create_prefect_api_key_secret = false means no authentication."
  type        = string
  default     = null
}

variable "create_prefect_api_key_secret" {
  description = "Create a Secrets Manager secret for the Prefect API key (value from prefect_api_key, or put later with aws secretsmanager put-secret-value)."
  type        = bool
  default     = false
}

variable "prefect_api_key" {
  description = "Value stored in the created secret (it is also kept in Terraform state; prefer put-secret-value outside Terraform on shared stacks). null = create the secret without a value."
  type        = string
  default     = null
  sensitive   = true
}

variable "prefect_api_key_env_name" {
  description = "Environment variable the secret is injected as in ECS/Batch containers: PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted with basic auth)."
  type        = string
  default     = "PREFECT_API_KEY"
}

################################################################################
# Storage
################################################################################

variable "data_bucket_name" {
  description = "Data bucket name. null = \"<name>-<environment>-data-<account id>\"."
  type        = string
  default     = null
}

variable "analysis_bucket_name" {
  description = "Analysis bucket name. null = \"<name>-<environment>-analysis-<account id>\"."
  type        = string
  default     = null
}

variable "analysis_buckets" {
  description = "Analyses with a bucket of their own (analysis name -> bucket name; the registry's INTERLINKED_ANALYSIS_BUCKETS): each bucket is configured as the analysis bucket, its submissions notify the events queue like the analysis bucket's, and the bridge and flow runs get the map."
  type        = map(string)
  default     = {}
}

variable "submission_result_arns" {
  description = "Storage bypass: object ARN patterns (e.g. arn:aws:s3:::out/lab-out/*) submissions may write their results to, the locations of INTERLINKED_SUBMISSION_RESULTPATH_ALLOWED. The submission role may write there; the flow-run role needs the bucket in its own access too."
  type        = list(string)
  default     = []
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete non-empty buckets (throw-away stacks only)."
  type        = bool
  default     = false
}

variable "enable_access_logging" {
  description = "Create an access-logs bucket and send the buckets' S3 server access logs to it."
  type        = bool
  default     = true
}

variable "logs_expiration_days" {
  description = "Expiry (days) of objects under logs/ in the data bucket."
  type        = number
  default     = 90
}

variable "cache_expiration_days" {
  description = "Expiry (days) of the analysis service's cached results (analysis-cache/ in the data bucket)."
  type        = number
  default     = 14
}

variable "response_records_expiration_days" {
  description = "Expiry (days) of the analysis service's records of answered requests (analysis-responses/ in the data bucket); over 14, SQS's longest retention."
  type        = number
  default     = 30
}

################################################################################
# Messaging
################################################################################

variable "work_queue_name" {
  description = "Name of the work FIFO queue (WORKER_QUEUE of the analysis service)."
  type        = string
  default     = "development-queue.fifo"
}

variable "max_receive_count" {
  description = "Receives before a message moves to its queue's DLQ."
  type        = number
  default     = 5
}

variable "analysis_submission_groups" {
  description = "Groups of the analysis bucket whose {group}/submissions/*.json uploads notify the events queue. Empty = every *.json upload of the analysis bucket notifies and the consumer keeps keys matching ^[^/]+/submissions/[^/]+\\.json$ (S3 filters have no inner wildcard). Ignored when s3_event_routes is set."
  type        = list(string)
  default     = []
}

variable "s3_event_routes" {
  description = "Full override of the S3 event routing (see the messaging module's s3_notifications). null = analysis submissions and data jobs/incoming/*.json to the events queue."
  type = list(object({
    bucket        = string
    destination   = string
    filter_prefix = optional(string)
    filter_suffix = optional(string)
    events        = optional(list(string), ["s3:ObjectCreated:*"])
  }))
  default = null
}

variable "restrict_dlq_redrive_sources" {
  description = "Give each DLQ a redrive allow policy naming only its source queue."
  type        = bool
  default     = true
}

variable "topic_subscriber_queues" {
  description = "Topics (\"work_results\", \"job_events\") that get a subscribed SQS queue with raw delivery, for pollers such as `interlinked submit --wait`."
  type        = list(string)
  default     = ["job_events"]
}

################################################################################
# Compute
################################################################################

variable "enable_compute" {
  description = "Create the ECS cluster, roles, log groups, the Prefect worker service and (with enable_batch) AWS Batch."
  type        = bool
  default     = true
}

variable "enable_worker_service" {
  description = "Run the Prefect ECS worker as an ECS service (with enable_compute)."
  type        = bool
  default     = true
}

variable "enable_batch" {
  description = "Create the Batch compute environment, job queue and flow-run job definition (with enable_compute)."
  type        = bool
  default     = true
}

variable "enable_batch_worker_service" {
  description = "Run the Prefect aws-batch worker (polling batch_worker_pool_name) as an ECS service (with enable_compute and enable_batch)."
  type        = bool
  default     = true
}

variable "batch_worker_pool_name" {
  description = "Prefect aws-batch work pool the Batch worker service polls."
  type        = string
  default     = "interlinked-batch"
}

variable "enable_analysis_service" {
  description = "Run the analysis service (python -m flows.analysis.service) as a long-running ECS service (with enable_compute)."
  type        = bool
  default     = false
}

variable "analysis_service_environment" {
  description = "Extra environment variables of the analysis service container (INTERLINKED_ANALYSIS_* tuning, e.g. INTERLINKED_ANALYSIS_MAX_EXPERIMENTS)."
  type        = map(string)
  default     = {}
}

variable "deployment_set" {
  description = "Deployment set of prefect.yaml the event bridge and the analysis service create runs in (\"ecs\" or \"batch\" on AWS, \"local\" for the local stack): INTERLINKED_DEPLOYMENT_SET and prepare-experiment/<set>."
  type        = string
  default     = "ecs"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]+$", var.deployment_set))
    error_message = "deployment_set must be a deployment name such as ecs, batch or local."
  }
}

variable "container_image" {
  description = "Image with the project installed (Dockerfile); runs the Prefect workers, the services and the flow runs. Required with enable_compute."
  type        = string
  default     = null
}

variable "worker_pool_name" {
  description = "Prefect ECS work pool the ECS worker service polls."
  type        = string
  default     = "interlinked-ecs"
}

variable "worker_desired_count" {
  description = "Number of Prefect worker tasks."
  type        = number
  default     = 1
}

variable "vpc_id" {
  description = "VPC of the compute resources (required with enable_compute unless security_group_ids is given)."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets of the worker, flow-run tasks and Batch compute (required with enable_compute)."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups of the compute resources. Empty = an egress-only group is created."
  type        = list(string)
  default     = []
}

variable "security_group_egress_ports" {
  description = "TCP ports the created security group allows out (add the Prefect server port when it is not 443)."
  type        = list(number)
  default     = [443]
}

variable "assign_public_ip" {
  description = "Public IPs for tasks and Fargate jobs (public subnets without NAT only)."
  type        = bool
  default     = false
}

variable "batch_compute_type" {
  description = "Batch compute: FARGATE, FARGATE_SPOT, SPOT (EC2 Spot) or EC2."
  type        = string
  default     = "FARGATE"
}

variable "batch_max_vcpus" {
  description = "Maximum vCPUs of the Batch compute environment."
  type        = number
  default     = 16
}

variable "create_batch_service_role" {
  description = "Create an explicit Batch service role instead of using the AWS Batch service-linked role."
  type        = bool
  default     = false
}

variable "attach_aws_managed_policies" {
  description = "Attach AWS managed policies where a role needs one (Batch service/instance roles, Lambda VPC access). false only on emulators without them (moto unless MOTO_IAM_LOAD_MANAGED_POLICIES=true)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention (days) of every CloudWatch log group of the stack."
  type        = number
  default     = 30
}

################################################################################
# Event bridge
################################################################################

variable "enable_bridge" {
  description = "Create the event-bridge Lambda (needs bridge_package_path). The alternative is enable_bridge_service; enable only one front end with a live consumer."
  type        = bool
  default     = true
}

variable "bridge_package_path" {
  description = "Prebuilt zip of the event bridge (python infra/terraform/scripts/package_lambda.py --output PATH). Required with enable_bridge."
  type        = string
  default     = null
}

variable "bridge_handler" {
  description = "Handler of the event-bridge Lambda."
  type        = string
  default     = "interlinked.bridge.lambda_handler.handler"
}

variable "bridge_alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified while the event bridge cannot reach the Prefect API (events are kept in the queue meanwhile) and when it recovers."
  type        = list(string)
  default     = []
}

variable "bridge_event_source_mapping_enabled" {
  description = "Enable the events-queue -> Lambda event source mapping."
  type        = bool
  default     = true
}

variable "enable_bridge_service" {
  description = "Run the event bridge as a long-running ECS service (python -m interlinked.bridge, with enable_compute) instead of the Lambda: it consumes the same events queue, so keep it off while the Lambda's event source mapping is enabled."
  type        = bool
  default     = false
}

variable "bridge_environment" {
  description = "Extra environment variables of the event bridge, Lambda and ECS service (merged over the stack's bucket names, deployment set and job_events topic)."
  type        = map(string)
  default     = {}
}

################################################################################
# Script API (the seed's HTTP API: API Gateway + Lambda)
################################################################################

variable "enable_script_api" {
  description = "Create the seed's HTTP API (POST /submitjob, /upload, /bulk, /fetch, /exists, /log) as an API Gateway HTTP API and a Lambda (needs script_api_package_path)."
  type        = bool
  default     = false
}

variable "enable_jobs_api" {
  description = "Create the jobs SDK as a Lambda (aws lambda invoke with {\"action\", \"payload\"}: create, signal, get, updateExecution, update, signalExecution, list, cancel) on the job store in the database. Needs enable_database and jobs_api_package_path."
  type        = bool
  default     = false
}

variable "jobs_api_package_path" {
  description = "Prebuilt zip of the jobs Lambda (python infra/terraform/scripts/package_lambda.py --installed pydantic-settings --installed psycopg --installed psycopg-binary --output PATH). Required with enable_jobs_api."
  type        = string
  default     = null
}

variable "script_api_package_path" {
  description = "Prebuilt zip of the script API (python infra/terraform/scripts/package_lambda.py --installed pydantic --output PATH). Required with enable_script_api."
  type        = string
  default     = null
}

variable "script_api_authorization_type" {
  description = "Authorization of the script API's routes: AWS_IAM (SigV4-signed callers with execute-api:Invoke) or NONE (the seed's open API)."
  type        = string
  default     = "AWS_IAM"
}

################################################################################
# Database (PostgreSQL on RDS for the task store and a self-hosted Prefect server)
################################################################################

variable "enable_database" {
  description = "Create the PostgreSQL instance (modules/database) and let the flow-run role read its master user secret."
  type        = bool
  default     = false
}

variable "database_vpc_id" {
  description = "VPC of the database. null = vpc_id."
  type        = string
  default     = null
}

variable "database_subnet_ids" {
  description = "Private subnets (two availability zones at least) of the database. Empty = subnet_ids."
  type        = list(string)
  default     = []
}

variable "database_allowed_security_group_ids" {
  description = "Security groups admitted on the database port besides the compute security groups (e.g. a self-hosted Prefect server's)."
  type        = list(string)
  default     = []
}

variable "database_secret_reader_role_names" {
  description = "IAM roles (names) besides the flow-run role that may read the database's master user secret, e.g. the task role of a self-hosted Prefect server."
  type        = list(string)
  default     = []
}

variable "database_name" {
  description = "Database created with the instance (the task store's)."
  type        = string
  default     = "interlinked"
}

variable "database_engine_version" {
  description = "PostgreSQL major (\"16\") or exact version of the database."
  type        = string
  default     = "16"
}

variable "database_instance_class" {
  description = "DB instance class of the database."
  type        = string
  default     = "db.t4g.small"
}

variable "database_multi_az" {
  description = "Keep a synchronous standby of the database in a second availability zone."
  type        = bool
  default     = true
}

variable "database_backup_retention_days" {
  description = "Days the database's automated backups are kept (1-35)."
  type        = number
  default     = 7
}

variable "database_deletion_protection" {
  description = "Refuse to delete the database instance."
  type        = bool
  default     = true
}

variable "database_skip_final_snapshot" {
  description = "Delete the database without a final snapshot (throw-away stacks only)."
  type        = bool
  default     = false
}

################################################################################
# Task collections table (DynamoDB)
################################################################################

variable "enable_tasks_table" {
  description = "Create the DynamoDB table of task collections (modules/tasks_table: on-demand, encrypted, point-in-time recovery) and let the flow-run role use it."
  type        = bool
  default     = false
}

variable "tasks_table_name" {
  description = "Name of the task collections table. null = \"<name>-<environment>-tasks\"."
  type        = string
  default     = null
}

variable "tasks_table_deletion_protection" {
  description = "Refuse to delete the task collections table."
  type        = bool
  default     = true
}

variable "tasks_table_user_role_names" {
  description = "IAM roles (names) besides the flow-run role that may read and write the task collections table (e.g. a role running `interlinked tasks` from a workstation or CI)."
  type        = list(string)
  default     = []
}

variable "tasks_backend" {
  description = "Task store of the flow runs (INTERLINKED_TASKS_BACKEND): \"postgres\" or \"dynamodb\". null = postgres with enable_database, else dynamodb with enable_tasks_table, else unset."
  type        = string
  default     = null

  validation {
    condition     = var.tasks_backend == null || contains(["postgres", "dynamodb"], coalesce(var.tasks_backend, "none"))
    error_message = "tasks_backend must be \"postgres\", \"dynamodb\" or null."
  }
}
