variable "name_prefix" {
  description = "Prefix for every name this module creates (cluster, service, roles, log groups, Batch resources)."
  type        = string
}

################################################################################
# Network
################################################################################

variable "vpc_id" {
  description = "VPC of the subnets. Required when security_group_ids is empty (a security group is created in it)."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets for the worker service, ECS flow-run tasks and Batch compute (private subnets with a NAT or VPC endpoints, or public ones with assign_public_ip)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups for the worker, flow-run tasks and Batch compute. Empty = create one with egress only (security_group_egress_ports)."
  type        = list(string)
  default     = []
}

variable "security_group_egress_ports" {
  description = "TCP ports the created security group allows out (443: AWS APIs, ECR, Prefect Cloud; add 4200 for a self-hosted Prefect server on its default port)."
  type        = list(number)
  default     = [443]
}

variable "security_group_egress_cidr_blocks" {
  description = "IPv4 destinations the created security group allows out."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "assign_public_ip" {
  description = "Give the worker, ECS flow-run tasks and Fargate Batch jobs a public IP (only for public subnets without NAT)."
  type        = bool
  default     = false
}

################################################################################
# Prefect
################################################################################

variable "image" {
  description = "Container image with the project installed (prefect, prefect-aws, flows): runs flow runs on Batch and is suggested for ECS flow runs."
  type        = string

  validation {
    condition     = can(regex("\\S", var.image))
    error_message = "image is required (the project image, for example <account>.dkr.ecr.<region>.amazonaws.com/interlinked:<tag>)."
  }
}

variable "worker_image" {
  description = "Image of the Prefect worker (needs prefect and prefect-aws). null = var.image."
  type        = string
  default     = null
}

variable "prefect_api_url" {
  description = "PREFECT_API_URL for the worker and flow runs (self-hosted server, e.g. https://prefect.example.org/api, or Prefect Cloud https://api.prefect.cloud/api/accounts/<id>/workspaces/<id>)."
  type        = string
}

variable "prefect_api_key_secret_arn" {
  description = "Secrets Manager secret holding the Prefect API key (Prefect Cloud) or basic-auth string (self-hosted), injected as prefect_api_key_env_name. null = no authentication."
  type        = string
  default     = null
}

variable "prefect_api_key_env_name" {
  description = "Environment variable the secret is injected as: PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted server with basic auth)."
  type        = string
  default     = "PREFECT_API_KEY"

  validation {
    condition     = contains(["PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"], var.prefect_api_key_env_name)
    error_message = "prefect_api_key_env_name must be PREFECT_API_KEY or PREFECT_API_AUTH_STRING."
  }
}

variable "worker_pool_name" {
  description = "Name of the Prefect ECS work pool the worker polls (prefect worker start --pool <name> --type ecs)."
  type        = string
  default     = "interlinked-ecs"
}

variable "enable_worker_service" {
  description = "Run the Prefect ECS worker as an ECS service (the roles, cluster and log groups exist either way)."
  type        = bool
  default     = true
}

variable "worker_desired_count" {
  description = "Number of worker tasks."
  type        = number
  default     = 1
}

variable "worker_cpu" {
  description = "Fargate CPU units of the worker task."
  type        = number
  default     = 512
}

variable "worker_memory" {
  description = "Fargate memory (MiB) of the worker task."
  type        = number
  default     = 1024
}

variable "worker_environment" {
  description = "Extra environment variables of the worker container (for example PREFECT_LOGGING_LEVEL)."
  type        = map(string)
  default     = {}
}

variable "flow_run_environment" {
  description = "Extra environment variables of Batch flow-run containers (for example AWS_DEFAULT_REGION or WORKER_QUEUE)."
  type        = map(string)
  default     = {}
}

variable "cpu_architecture" {
  description = "CPU architecture of the worker task (X86_64 or ARM64); must match the image."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "container_insights" {
  description = "Enable CloudWatch Container Insights on the ECS cluster."
  type        = bool
  default     = true
}

################################################################################
# Resources the flow runs may use (least privilege)
################################################################################

variable "bucket_arns" {
  description = "Buckets flow runs may read and write (objects and listing)."
  type        = list(string)
  default     = []
}

variable "create_script_job_role" {
  description = "Create the script-job role: what a script job's code runs as (each job's session narrows it to its own keys). Without it, script jobs' code gets no AWS credentials."
  type        = bool
  default     = false
}

variable "script_job_bucket_arn" {
  description = "ARN of the bucket holding script jobs (the data bucket): the script-job role may get and put its jobs/, scripts/, results/ and logs/ keys. Required with create_script_job_role."
  type        = string
  default     = null

  validation {
    condition     = var.script_job_bucket_arn == null || can(regex("^arn:aws[a-z-]*:s3:::[^/]+$", var.script_job_bucket_arn))
    error_message = "script_job_bucket_arn must be a bucket ARN (arn:aws:s3:::NAME), not an object or prefix ARN."
  }
}

variable "group_registry_bucket_arn" {
  description = "ARN of the bucket holding the group registry (the data bucket; groups/{group}.json, written by modules/group): the flow-run role may read it and is denied writing it. null = no such deny."
  type        = string
  default     = null

  validation {
    condition     = var.group_registry_bucket_arn == null || can(regex("^arn:aws[a-z-]*:s3:::[^/]+$", var.group_registry_bucket_arn))
    error_message = "group_registry_bucket_arn must be a bucket ARN (arn:aws:s3:::NAME)."
  }
}

variable "create_submission_role" {
  description = "Create the submission role: what a submission's analysis reads its inputs and writes its results with (each submission's session narrows it to its group and job). Without it, submissions run with the flow-run role."
  type        = bool
  default     = false
}

variable "submission_bucket_arns" {
  description = "Analysis buckets (bucket ARNs) the submission role may read {group}/inputs/ and {group}/configs/ of (and list under inputs/) and write {group}/results/ of. Required with create_submission_role."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.submission_bucket_arns : can(regex("^arn:aws[a-z-]*:s3:::[^/*?]+$", arn))])
    error_message = "submission_bucket_arns must be bucket ARNs (arn:aws:s3:::NAME), not object or prefix ARNs."
  }
}

variable "submission_result_arns" {
  description = "Object ARN patterns the submission role may also write (storage bypass: the locations of INTERLINKED_SUBMISSION_RESULTPATH_ALLOWED, e.g. arn:aws:s3:::out/lab-out/*)."
  type        = list(string)
  default     = []
}

variable "queue_arns" {
  description = "SQS queues flow runs may send to and consume from."
  type        = list(string)
  default     = []
}

variable "topic_arns" {
  description = "SNS topics flow runs may publish to."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the buckets/topics/log groups, if any: granted to the roles and used for the log groups. null = AWS owned/managed keys."
  type        = string
  default     = null
}

variable "ecr_repository_arns" {
  description = "ECR repositories the execution role may pull from. Empty = every repository of this account and region."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Retention of the worker, flow-run and Batch log groups (days; a CloudWatch-supported value)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs supports (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

################################################################################
# AWS Batch
################################################################################

variable "enable_batch" {
  description = "Create the Batch compute environment, job queue and flow-run job definition."
  type        = bool
  default     = true
}

variable "batch_compute_type" {
  description = "Batch compute: FARGATE, FARGATE_SPOT, SPOT (EC2 Spot) or EC2 (on demand)."
  type        = string
  default     = "FARGATE"

  validation {
    condition     = contains(["FARGATE", "FARGATE_SPOT", "SPOT", "EC2"], var.batch_compute_type)
    error_message = "batch_compute_type must be FARGATE, FARGATE_SPOT, SPOT or EC2."
  }
}

variable "batch_max_vcpus" {
  description = "Maximum vCPUs of the Batch compute environment."
  type        = number
  default     = 16
}

variable "batch_instance_types" {
  description = "EC2 instance types for SPOT/EC2 compute (ignored on Fargate)."
  type        = list(string)
  default     = ["optimal"]
}

variable "batch_spot_bid_percentage" {
  description = "Maximum Spot price as a percentage of the On-Demand price (SPOT only)."
  type        = number
  default     = 100
}

variable "create_batch_service_role" {
  description = "Create an IAM service role for the compute environment. false = use batch_service_role_arn, or AWS Batch's service-linked role when that is null (recommended on AWS)."
  type        = bool
  default     = false
}

variable "attach_aws_managed_policies" {
  description = "Attach the AWS managed policies the Batch service/instance roles need (AWSBatchServiceRole, AmazonEC2ContainerServiceforEC2Role). false only on emulators that do not ship AWS managed policies."
  type        = bool
  default     = true
}

variable "batch_service_role_arn" {
  description = "Existing Batch service role (used when create_batch_service_role is false). null = service-linked role."
  type        = string
  default     = null
}

variable "batch_job_vcpu" {
  description = "vCPUs of a flow-run Batch job (Fargate: 0.25, 0.5, 1, 2, 4, 8, 16)."
  type        = string
  default     = "1"
}

variable "batch_job_memory" {
  description = "Memory (MiB) of a flow-run Batch job (must fit the vCPU on Fargate)."
  type        = number
  default     = 2048
}

variable "batch_job_attempts" {
  description = "Batch attempts per flow-run job (Spot reclaims are retried; application failures are not)."
  type        = number
  default     = 2
}

variable "batch_job_timeout_seconds" {
  description = "Batch attempt timeout (seconds)."
  type        = number
  default     = 86400
}

################################################################################
# Optional long-running services (services.tf)
################################################################################

variable "enable_batch_worker_service" {
  description = "Run the Prefect aws-batch worker (prefect worker start --pool <batch_worker_pool_name> --type aws-batch) as an ECS service. Needs enable_batch."
  type        = bool
  default     = false
}

variable "batch_worker_pool_name" {
  description = "Name of the Prefect aws-batch work pool the Batch worker polls."
  type        = string
  default     = "interlinked-batch"
}

variable "batch_worker_desired_count" {
  description = "Number of aws-batch worker tasks."
  type        = number
  default     = 1
}

variable "batch_worker_cpu" {
  description = "Fargate CPU units of the aws-batch worker task."
  type        = number
  default     = 512
}

variable "batch_worker_memory" {
  description = "Fargate memory (MiB) of the aws-batch worker task."
  type        = number
  default     = 1024
}

variable "batch_worker_environment" {
  description = "Extra environment variables of the aws-batch worker container (merged over PREFECT_API_URL, PREFECT_HOME, PREFECT_WORKER_ENABLE_CANCELLATION=true, ...)."
  type        = map(string)
  default     = {}
}

variable "bridge_service" {
  description = "Run the event bridge as a long-running ECS service (python -m interlinked.bridge), the alternative to the event-bridge Lambda. null = no service. Its role may consume and re-send to the events queue and send to its DLQ; it reads no bucket."
  type = object({
    events_queue_arn      = string
    events_queue_url      = string
    dead_letter_queue_arn = string
    environment           = optional(map(string), {})
    desired_count         = optional(number, 1)
    cpu                   = optional(number, 256)
    memory                = optional(number, 512)
  })
  default = null
}

variable "analysis_service" {
  description = "Run the analysis service (python -m flows.analysis.service) as a long-running ECS service. null = no service. Its role may consume the work queue, send to its DLQ, publish to work_results, list the data bucket, read experiments/ analysis-cache/ analysis-responses/ and write the latter two."
  type = object({
    work_queue_arn         = string
    work_queue_url         = string
    dead_letter_queue_arn  = string
    work_results_topic_arn = string
    data_bucket_arn        = string
    data_bucket_name       = string
    prepare_deployment     = optional(string, "prepare-experiment/ecs")
    workers                = optional(number, 4)
    environment            = optional(map(string), {})
    desired_count          = optional(number, 1)
    cpu                    = optional(number, 2048)
    memory                 = optional(number, 8192)
  })
  default = null
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
