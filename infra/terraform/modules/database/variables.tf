variable "name_prefix" {
  description = "Prefix for the names this module derives (DB instance identifier, subnet, parameter and security groups, monitoring role)."
  type        = string
}

variable "identifier" {
  description = "DB instance identifier. null = \"<name_prefix>-postgres\"."
  type        = string
  default     = null
}

################################################################################
# Network
################################################################################

variable "vpc_id" {
  description = "VPC of the instance and its security group."
  type        = string

  validation {
    condition     = var.vpc_id != null && var.vpc_id != ""
    error_message = "vpc_id is required: the VPC of the database's subnets and security group."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the DB subnet group, in at least two availability zones (RDS requires two even for a Single-AZ instance)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs at least two subnets (in two availability zones)."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups whose members may connect on the database port (the clients: flow-run tasks, Batch jobs, a self-hosted Prefect server). Nothing else is admitted."
  type        = list(string)

  validation {
    condition     = length(var.allowed_security_group_ids) >= 1
    error_message = "allowed_security_group_ids needs at least one security group: without one no client can reach the database."
  }
}

variable "port" {
  description = "TCP port of PostgreSQL."
  type        = number
  default     = 5432
}

################################################################################
# Engine and size
################################################################################

variable "engine_version" {
  description = "PostgreSQL version: a major version (\"16\") lets RDS pick the newest minor and auto_minor_version_upgrade keep it current. The parameter group family is postgres<major>."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^(1[3-9]|[2-9][0-9])(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL version >= 13, such as \"16\" or \"16.4\"."
  }
}

variable "instance_class" {
  description = "DB instance class. db.t4g.small (2 GiB) holds a Prefect server's connection pool and the task store; use db.m7g.* for sustained load."
  type        = string
  default     = "db.t4g.small"
}

variable "multi_az" {
  description = "Run a synchronous standby in a second availability zone (automatic failover; doubles the instance cost)."
  type        = bool
  default     = true
}

variable "allocated_storage" {
  description = "Initial storage (GiB)."
  type        = number
  default     = 20
}

variable "max_allocated_storage" {
  description = "Upper bound (GiB) of storage autoscaling; 0 turns autoscaling off."
  type        = number
  default     = 100
}

variable "storage_type" {
  description = "Storage type (gp3, gp2, io1, io2)."
  type        = string
  default     = "gp3"
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for the storage, the master user secret, Performance Insights and the log groups. null = the AWS managed keys (aws/rds, aws/secretsmanager)."
  type        = string
  default     = null
}

################################################################################
# Database and credentials
################################################################################

variable "db_name" {
  description = "Database created with the instance (the task store's). More databases, such as one for a self-hosted Prefect server, are created with CREATE DATABASE by the master user."
  type        = string
  default     = "interlinked"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must start with a letter and hold at most 63 letters, digits or underscores."
  }
}

variable "master_username" {
  description = "Master user name. Its password is generated and rotated by RDS in Secrets Manager (manage_master_user_password); it never enters Terraform state."
  type        = string
  default     = "interlinked"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_]{0,62}$", var.master_username)) && !contains(["postgres", "rdsadmin", "admin"], lower(var.master_username))
    error_message = "master_username must start with a letter, hold at most 63 letters, digits or underscores, and not be a reserved name (postgres, rdsadmin, admin)."
  }
}

################################################################################
# Parameters
################################################################################

variable "log_min_duration_statement_ms" {
  description = "Statements slower than this (milliseconds) are logged (log_min_duration_statement); -1 turns it off."
  type        = number
  default     = 1000
}

variable "log_statement" {
  description = "Which statements are logged: none, ddl, mod or all (log_statement)."
  type        = string
  default     = "ddl"

  validation {
    condition     = contains(["none", "ddl", "mod", "all"], var.log_statement)
    error_message = "log_statement must be none, ddl, mod or all."
  }
}

variable "parameters" {
  description = "Extra parameters of the parameter group (name => value), e.g. { max_connections = \"200\" }. rds.force_ssl is always 1."
  type        = map(string)
  default     = {}

  validation {
    condition     = !contains(keys(var.parameters), "rds.force_ssl")
    error_message = "rds.force_ssl is fixed to 1 by the module (clients must use TLS)."
  }
}

################################################################################
# Operations
################################################################################

variable "backup_retention_days" {
  description = "Days automated backups (and point-in-time recovery) are kept, 1-35."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "backup_window" {
  description = "Daily backup window (UTC, hh24:mi-hh24:mi). null = chosen by RDS."
  type        = string
  default     = null
}

variable "maintenance_window" {
  description = "Weekly maintenance window (UTC, ddd:hh24:mi-ddd:hh24:mi) for minor version upgrades. null = chosen by RDS."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (set false and apply before a destroy)."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Delete without a final snapshot (throw-away stacks only). false = a final snapshot \"<identifier>-final\" is taken."
  type        = bool
  default     = false
}

variable "apply_immediately" {
  description = "Apply modifications at once instead of in the next maintenance window."
  type        = bool
  default     = false
}

variable "ca_cert_identifier" {
  description = "Certificate authority of the server certificate (clients verifying it need the matching RDS CA bundle)."
  type        = string
  default     = "rds-ca-rsa2048-g1"
}

variable "cloudwatch_logs_exports" {
  description = "Logs exported to CloudWatch Logs (postgresql, upgrade, iam-db-auth-error); each gets a log group with log_retention_days."
  type        = list(string)
  default     = ["postgresql", "upgrade"]

  validation {
    condition     = alltrue([for log in var.cloudwatch_logs_exports : contains(["postgresql", "upgrade", "iam-db-auth-error"], log)])
    error_message = "cloudwatch_logs_exports may hold postgresql, upgrade and iam-db-auth-error."
  }
}

variable "log_retention_days" {
  description = "Retention (days) of the exported logs' log groups."
  type        = number
  default     = 30
}

variable "performance_insights_retention_days" {
  description = "Performance Insights retention: 7 (free tier) or a multiple of 31 up to 731."
  type        = number
  default     = 7
}

variable "monitoring_interval" {
  description = "Enhanced Monitoring interval in seconds (1, 5, 10, 15, 30 or 60); 0 turns it off."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.monitoring_interval)
    error_message = "monitoring_interval must be 0, 1, 5, 10, 15, 30 or 60."
  }
}

variable "monitoring_role_arn" {
  description = "Existing Enhanced Monitoring role. null = the module creates one (with monitoring_interval > 0)."
  type        = string
  default     = null
}

variable "attach_aws_managed_policies" {
  description = "Attach AmazonRDSEnhancedMonitoringRole to the created monitoring role. false only on emulators without AWS managed policies (moto)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every taggable resource of the module."
  type        = map(string)
  default     = {}
}
