# PostgreSQL on RDS for the task store and a self-hosted Prefect server: one DB instance (Multi-AZ by
# default) in private subnets, encrypted storage, TLS forced by its parameter group, the master
# password generated and rotated by RDS in Secrets Manager (never in Terraform state), IAM
# authentication on, a security group admitting the database port from the given client security
# groups only, Performance Insights, Enhanced Monitoring and the logs exported to CloudWatch.
#
# Why an RDS instance and not Aurora Serverless v2: a Prefect server keeps connections open and its
# services poll every few seconds, so Aurora would never pause and bills its minimum ACUs around the
# clock (0.5 ACU costs about four times a db.t4g.small); an instance has a fixed price, the same
# engine as the local stack's PostgreSQL, and is what moto can emulate.

data "aws_partition" "current" {}

locals {
  identifier    = coalesce(var.identifier, "${var.name_prefix}-postgres")
  major_version = split(".", var.engine_version)[0]

  create_monitoring_role = var.monitoring_interval > 0 && var.monitoring_role_arn == null
  monitoring_role_arn    = var.monitoring_interval == 0 ? null : local.create_monitoring_role ? aws_iam_role.monitoring[0].arn : var.monitoring_role_arn

  # rds.force_ssl turns away every connection without TLS; the logging parameters make slow and
  # schema-changing statements visible in the exported postgresql log.
  parameters = merge(
    {
      "log_min_duration_statement" = tostring(var.log_min_duration_statement_ms)
      "log_statement"              = var.log_statement
    },
    var.parameters,
    { "rds.force_ssl" = "1" },
  )
}

################################################################################
# Network
################################################################################

resource "aws_db_subnet_group" "this" {
  name        = local.identifier
  description = "Private subnets of the interlinked PostgreSQL instance ${local.identifier}"
  subnet_ids  = var.subnet_ids

  tags = merge(var.tags, { Name = local.identifier })
}

resource "aws_security_group" "this" {
  name        = "${local.identifier}-db"
  description = "PostgreSQL ${local.identifier}: port ${var.port} from the client security groups only, no egress"
  vpc_id      = var.vpc_id

  ingress {
    description     = "PostgreSQL from the interlinked clients"
    from_port       = var.port
    to_port         = var.port
    protocol        = "tcp"
    security_groups = var.allowed_security_group_ids
  }

  # No egress at all (an explicit empty list also removes rules added outside Terraform): the
  # instance answers its clients over the connections they opened.
  egress = []

  tags = merge(var.tags, { Name = "${local.identifier}-db" })

  lifecycle {
    create_before_destroy = true
  }
}

################################################################################
# Parameters
################################################################################

resource "aws_db_parameter_group" "this" {
  name_prefix = "${local.identifier}-"
  description = "interlinked PostgreSQL ${local.major_version}: TLS forced, slow and DDL statements logged"
  family      = "postgres${local.major_version}"

  dynamic "parameter" {
    for_each = local.parameters

    content {
      name         = parameter.key
      value        = parameter.value
      apply_method = "immediate"
    }
  }

  tags = merge(var.tags, { Name = local.identifier })

  lifecycle {
    create_before_destroy = true
  }
}

################################################################################
# Logs and monitoring
################################################################################

# Created before the instance so that RDS writes into groups with a retention and a key instead
# of creating never-expiring ones.
resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:Retention is a cost decision of the deployer (var.log_retention_days, default 30 days); the database keeps its own backups.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (var.kms_key_arn, used by examples/aws).
  for_each = toset(var.cloudwatch_logs_exports)

  name              = "/aws/rds/instance/${local.identifier}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = merge(var.tags, { Name = "/aws/rds/instance/${local.identifier}/${each.value}" })
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    sid     = "RdsMonitoringAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  count = local.create_monitoring_role ? 1 : 0

  name                 = "${local.identifier}-monitoring"
  description          = "Enhanced Monitoring of the interlinked PostgreSQL instance ${local.identifier}"
  assume_role_policy   = data.aws_iam_policy_document.monitoring_assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${local.identifier}-monitoring" })
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  count = local.create_monitoring_role && var.attach_aws_managed_policies ? 1 : 0

  role       = aws_iam_role.monitoring[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

################################################################################
# Instance
################################################################################

resource "aws_db_instance" "this" {
  identifier     = local.identifier
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class
  multi_az       = var.multi_az

  db_name  = var.db_name
  username = var.master_username
  port     = var.port

  # The password is generated, stored and rotated by RDS in Secrets Manager.
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = var.kms_key_arn
  iam_database_authentication_enabled = true

  allocated_storage     = var.allocated_storage
  max_allocated_storage = var.max_allocated_storage
  storage_type          = var.storage_type
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.this.id]
  publicly_accessible    = false
  ca_cert_identifier     = var.ca_cert_identifier
  parameter_group_name   = aws_db_parameter_group.this.name

  backup_retention_period  = var.backup_retention_days
  backup_window            = var.backup_window
  maintenance_window       = var.maintenance_window
  copy_tags_to_snapshot    = true
  delete_automated_backups = false
  deletion_protection      = var.deletion_protection
  skip_final_snapshot      = var.skip_final_snapshot

  final_snapshot_identifier = var.skip_final_snapshot ? null : "${local.identifier}-final"

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = var.apply_immediately

  enabled_cloudwatch_logs_exports       = var.cloudwatch_logs_exports
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = var.performance_insights_retention_days
  monitoring_interval                   = var.monitoring_interval
  monitoring_role_arn                   = local.monitoring_role_arn

  tags = merge(var.tags, { Name = local.identifier })

  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy_attachment.monitoring]
}
