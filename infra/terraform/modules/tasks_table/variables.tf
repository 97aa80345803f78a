variable "name" {
  description = "Name of the table (the store's INTERLINKED_TASKS_TABLE)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.name))
    error_message = "name must be 3-255 characters of letters, digits, '_', '-' and '.' (a DynamoDB table name)."
  }
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for server-side encryption. null = the AWS managed key alias/aws/dynamodb (server-side encryption stays on either way)."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse to delete the table (turn off and apply first to destroy it)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for the table."
  type        = map(string)
  default     = {}
}
