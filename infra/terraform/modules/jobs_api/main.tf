# The jobs SDK as a Lambda (item 9 of the job lifecycle): any language drives jobs with
# `aws lambda invoke --function-name <function_name> --payload '{"action": "create", "payload": {...}}'`,
# as Archimedes' SDK does (seed 004). The handler is interlinked.jobs_lambda.handler (flows/jobs'
# JobService over the PostgreSQL job store).
#
# The job store is PostgreSQL (flows/jobs/postgres.py; there is no DynamoDB job store): on AWS the
# RDS instance of modules/database. So the function runs in the database's VPC, in a security group
# of its own that the database admits (the root stack adds it to the database's allowed security
# groups), reads the RDS-managed master secret to build its connection URL, writes each job's JSON
# copy to results/*/job.json in the data bucket, reads the Prefect API key and creates/cancels flow
# runs through the Prefect API (DISPATCH, retry, cancel). Nothing else.
# The package is a prebuilt zip (scripts/package_lambda.py --installed pydantic-settings
# --installed psycopg --installed psycopg-binary).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  function_name = coalesce(var.function_name, "${var.name_prefix}-jobs-api")
  log_group     = "/aws/lambda/${local.function_name}"
  copy_objects  = "${var.data_bucket_arn}/results/*"
}

################################################################################
# Logs
################################################################################

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_338:Retention is a cost decision of the deployer (var.log_retention_days, default 30 days).
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (var.kms_key_arn, used by examples/aws).
  name              = local.log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = merge(var.tags, { Name = local.log_group })
}

################################################################################
# Network: egress to PostgreSQL and HTTPS only
################################################################################

resource "aws_security_group" "this" {
  name        = local.function_name
  description = "Egress-only security group of the interlinked jobs Lambda: PostgreSQL and HTTPS"
  vpc_id      = var.vpc_id

  egress {
    description = "PostgreSQL (the job store)"
    from_port   = var.database_port
    to_port     = var.database_port
    protocol    = "tcp"
    cidr_blocks = var.database_cidr_blocks
  }

  egress {
    description = "HTTPS: Secrets Manager, S3, the Prefect API"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.https_egress_cidr_blocks
  }

  dynamic "egress" {
    for_each = var.prefect_api_port == 443 ? [] : [var.prefect_api_port]

    content {
      description = "The Prefect API on its own port"
      from_port   = egress.value
      to_port     = egress.value
      protocol    = "tcp"
      cidr_blocks = var.https_egress_cidr_blocks
    }
  }

  tags = merge(var.tags, { Name = local.function_name })

  lifecycle {
    create_before_destroy = true
  }
}

################################################################################
# IAM: only what the job service calls
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "LambdaAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = local.function_name
  description          = "Role of the interlinked jobs Lambda: the database secret, job copies in the data bucket, Prefect API key, logs"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = local.function_name })
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "WriteLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }

  # The connection URL's password (the RDS-managed secret {"username", "password"}).
  statement {
    sid       = "ReadDatabaseSecret"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.database_secret_arn]
  }

  # Each change's copy at results/{job_id}/job.json: a conditional put over the version seen
  # (HeadObject is authorized by s3:GetObject).
  statement {
    sid       = "ReadWriteJobCopies"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.copy_objects]
  }

  # Without it S3 answers 403 instead of 404 for the first copy of a job; only under results/.
  statement {
    sid       = "ListJobCopies"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.data_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["results/*"]
    }
  }

  dynamic "statement" {
    for_each = var.prefect_api_key_secret_arn == null ? [] : [var.prefect_api_key_secret_arn]

    content {
      sid       = "ReadPrefectApiKey"
      effect    = "Allow"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "DecryptWithKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "EncryptCopiesWithKey"
      effect    = "Allow"
      actions   = ["kms:GenerateDataKey"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.tracing_mode == "Active" ? [1] : []

    content {
      sid       = "WriteTraces"
      effect    = "Allow"
      actions   = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
      resources = ["*"] # X-Ray writes have no resource-level permissions.
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "jobs-api"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

# The function's network interfaces in the VPC (CreateNetworkInterface and friends).
resource "aws_iam_role_policy_attachment" "vpc" {
  count = var.attach_aws_managed_policies ? 1 : 0

  role       = aws_iam_role.this.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

################################################################################
# Function
################################################################################

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_272:The package is built reproducibly from this repository by scripts/package_lambda.py; there is no AWS Signer profile in this stack.
  #checkov:skip=CKV_AWS_116:Callers invoke the function synchronously (aws lambda invoke, the RequestResponse type): each gets its answer, there is no asynchronous event to dead-letter.
  #checkov:skip=CKV_AWS_173:The environment holds no secrets (the database password and the Prefect API key are read from Secrets Manager at run time) and is encrypted with the AWS managed key; a CMK is optional via var.kms_key_arn.
  function_name                  = local.function_name
  description                    = "interlinked jobs SDK as JSON (seed 004): create, signal, get, updateExecution, update, signalExecution, list, cancel"
  role                           = aws_iam_role.this.arn
  handler                        = var.handler
  runtime                        = var.runtime
  architectures                  = var.architectures
  filename                       = var.package_path
  source_code_hash               = filebase64sha256(var.package_path)
  timeout                        = var.timeout
  memory_size                    = var.memory_size
  kms_key_arn                    = var.kms_key_arn
  reserved_concurrent_executions = var.reserved_concurrent_executions

  environment {
    variables = merge(
      {
        INTERLINKED_DATABASE_URL_TEMPLATE = var.database_url_template
        INTERLINKED_DATABASE_SECRET_ARN   = var.database_secret_arn
        INTERLINKED_DATA_BUCKET           = var.data_bucket_name
        INTERLINKED_DEPLOYMENT_SET        = var.deployment_set
        PREFECT_API_URL                   = var.prefect_api_url
        PREFECT_API_KEY_SECRET_ARN        = coalesce(var.prefect_api_key_secret_arn, "")
      },
      var.environment,
    )
  }

  tracing_config {
    mode = var.tracing_mode
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.this.id]
  }

  tags = merge(var.tags, { Name = local.function_name })

  depends_on = [
    aws_cloudwatch_log_group.function,
    aws_iam_role_policy.this,
    aws_iam_role_policy_attachment.vpc,
  ]
}
