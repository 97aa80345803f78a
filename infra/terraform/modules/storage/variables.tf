variable "name_prefix" {
  description = "Prefix for every name this module creates (for example \"interlinked-dev\"). Lower case, digits and dashes: it becomes part of S3 bucket names."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,40}$", var.name_prefix))
    error_message = "name_prefix must be 2-41 characters of a-z, 0-9 and '-', starting with a letter or digit."
  }
}

variable "data_bucket_name" {
  description = "Name of the data bucket (scripts/, jobs/, results/{job_id}/, logs/, experiments/{id}/processed.h5ad, cache/). null = \"<name_prefix>-data-<account id>\"."
  type        = string
  default     = null
}

variable "analysis_bucket_name" {
  description = "Name of the analysis bucket ({group}/inputs|configs|submissions|results/). null = \"<name_prefix>-analysis-<account id>\"."
  type        = string
  default     = null
}

variable "analysis_buckets" {
  description = "Analyses with a bucket of their own (analysis name -> bucket name, as INTERLINKED_ANALYSIS_BUCKETS): each is configured as the analysis bucket (encryption, versioning, public access block, TLS-only policy, lifecycle, access logging)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for bucket in values(var.analysis_buckets) : can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket))])
    error_message = "Every analysis bucket name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }

  validation {
    condition     = length(distinct(values(var.analysis_buckets))) == length(var.analysis_buckets)
    error_message = "Two analyses cannot own the same bucket."
  }
}

variable "create_access_logs_bucket" {
  description = "Create a bucket that receives the S3 server access logs of the data and analysis buckets. Ignored when access_logs_bucket_name is set."
  type        = bool
  default     = true
}

variable "access_logs_bucket_name" {
  description = "Existing bucket for S3 server access logs (takes precedence over create_access_logs_bucket). Its policy must allow logging.s3.amazonaws.com to write."
  type        = string
  default     = null
}

variable "access_logs_retention_days" {
  description = "Days after which S3 server access log objects in the created access-logs bucket expire."
  type        = number
  default     = 90

  validation {
    condition     = var.access_logs_retention_days >= 1
    error_message = "access_logs_retention_days must be at least 1."
  }
}

variable "kms_key_arn" {
  description = "KMS key ARN for SSE-KMS (with S3 Bucket Keys) on the data and analysis buckets. null = SSE-S3 (AES256). The access-logs bucket always uses AES256 (S3 log delivery requires it)."
  type        = string
  default     = null
}

variable "versioning_enabled" {
  description = "Enable object versioning on the data and analysis buckets (Suspended when false)."
  type        = bool
  default     = true
}

variable "logs_expiration_days" {
  description = "Days after which objects under logs/ in the data bucket expire."
  type        = number
  default     = 90

  validation {
    condition     = var.logs_expiration_days >= 1
    error_message = "logs_expiration_days must be at least 1."
  }
}

variable "cache_expiration_days" {
  description = "Days after which the analysis service's cached results (analysis-cache/ in the data bucket) expire."
  type        = number
  default     = 14

  validation {
    condition     = var.cache_expiration_days >= 1
    error_message = "cache_expiration_days must be at least 1."
  }
}

variable "response_records_expiration_days" {
  description = "Days after which the analysis service's records of answered requests (analysis-responses/ in the data bucket) expire. They must outlive any redelivery of the request: SQS keeps a message at most 14 days."
  type        = number
  default     = 30

  validation {
    condition     = var.response_records_expiration_days > 14
    error_message = "response_records_expiration_days must be over 14 (SQS's longest message retention), or a late redelivery is answered twice."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which non-current object versions expire (all prefixes)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which incomplete multipart uploads are aborted (all prefixes)."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_upload_days >= 1
    error_message = "abort_incomplete_multipart_upload_days must be at least 1."
  }
}

variable "deny_insecure_transport" {
  description = "Add a policy statement denying requests made without TLS (aws:SecureTransport = false). Turn off only for plain-HTTP emulators: moto evaluates bucket policies but not the Bool condition, so the statement would deny every request."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete non-empty buckets (all objects and versions are lost). Keep false outside throw-away stacks."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
