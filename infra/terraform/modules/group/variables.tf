variable "group" {
  description = "The group's name: the first segment of its keys in the submissions bucket ({group}/inputs/, configs/, submissions/, results/)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{0,40}$", var.group))
    error_message = "group must be 1-41 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit (as `interlinked groups add`)."
  }
}

variable "bucket_name" {
  description = "The submissions bucket (the storage module's analysis bucket, or an analysis's own bucket)."
  type        = string
}

variable "registry_bucket" {
  description = "The data bucket (the storage module's data bucket): the group's role is recorded at s3://{registry_bucket}/groups/{group}.json, the group registry the submissions' writer check reads (only admins and Terraform may write it)."
  type        = string

  validation {
    condition     = length(var.registry_bucket) > 0
    error_message = "registry_bucket must name the data bucket."
  }
}

variable "trusted_principal_arns" {
  description = "IAM principals (the group's users, an SSO permission set's role, an account root) allowed to assume the group's role."
  type        = list(string)

  validation {
    condition     = length(var.trusted_principal_arns) > 0 && alltrue([for arn in var.trusted_principal_arns : can(regex("^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:", arn))])
    error_message = "trusted_principal_arns needs at least one IAM principal ARN (arn:aws:iam::<account>:...)."
  }
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the bucket, if it has one (the role may then encrypt and decrypt with it); null = none."
  type        = string
  default     = null
}

variable "max_session_duration" {
  description = "Longest session (seconds) of the group's role."
  type        = number
  default     = 3600
}

variable "name_prefix" {
  description = "Prefix of the role's name (the role is {name_prefix}-group-{group})."
  type        = string
  default     = "interlinked"
}

variable "tags" {
  description = "Tags for the role and its policy."
  type        = map(string)
  default     = {}
}
