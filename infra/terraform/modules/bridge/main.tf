# The event bridge: a Lambda consuming the events queue (S3 drops, submissions) and creating Prefect
# flow runs. Failed records are reported individually (ReportBatchItemFailures); an invalid or
# unroutable one is written to the function's own DLQ with its reason (BRIDGE_DLQ_URL) on its last
# allowed receive, before the events queue's redrive (maxReceiveCount) would move it. While the
# Prefect API is down nothing is dead-lettered: records come back with a back-off visibility
# (30 s doubling, at most 900 s) and, on their last allowed receive, start over as new messages in
# the events queue (hence sqs:SendMessage on it), however long the outage; each such invocation
# logs PREFECT_UNAVAILABLE, counted by a metric filter and alarmed on below. The function's DLQ also
# receives failed asynchronous invocations.
#
# The package is a prebuilt zip (no archive provider): scripts/package_lambda.py builds it
# deterministically, so source_code_hash only changes when the code does.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  function_name = coalesce(var.function_name, "${var.name_prefix}-event-bridge")
  dlq_name      = coalesce(var.dlq_name, "${local.function_name}-dlq")
  log_group     = "/aws/lambda/${local.function_name}"
  in_vpc        = length(var.subnet_ids) > 0
}

################################################################################
# Dead-letter queue
################################################################################

resource "aws_sqs_queue" "dlq" {
  name                      = local.dlq_name
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = true

  policy = !var.deny_insecure_transport ? null : jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "sqs:*"
      Resource  = "arn:${data.aws_partition.current.partition}:sqs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:${local.dlq_name}"
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  tags = merge(var.tags, { Name = local.dlq_name })
}

################################################################################
# Logs
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:Retention is a cost decision of the deployer (var.log_retention_days, default 30 days); rejects are kept in the DLQ.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (var.kms_key_arn, used by examples/aws).
  name              = local.log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = merge(var.tags, { Name = local.log_group })
}

################################################################################
# IAM
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
  description          = "Role of the interlinked event-bridge Lambda: events queue, its DLQ, Prefect API key, logs"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = local.function_name })
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "WriteLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  statement {
    sid    = "ConsumeEventsQueue"
    effect = "Allow"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
      # A record kept while Prefect is down starts over as a new message before its last receive.
      "sqs:SendMessage",
    ]
    resources = [var.events_queue_arn]
  }

  statement {
    sid       = "WriteOwnDlq"
    effect    = "Allow"
    actions   = ["sqs:GetQueueUrl", "sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq.arn]
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
  name   = "event-bridge"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_iam_role_policy_attachment" "vpc" {
  count = local.in_vpc && var.attach_aws_managed_policies ? 1 : 0

  role       = aws_iam_role.this.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

################################################################################
# Function
################################################################################

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_272:The package is built reproducibly from this repository by scripts/package_lambda.py; there is no AWS Signer profile in this stack.
  #checkov:skip=CKV_AWS_117:The bridge only talks to SQS, Secrets Manager and the Prefect API (often Prefect Cloud); VPC attachment is optional via var.subnet_ids.
  #checkov:skip=CKV_AWS_115:Concurrency is capped by the event source mapping (scaling_config.maximum_concurrency), which AWS recommends over reserved concurrency for SQS triggers (no throttling-driven DLQ moves).
  #checkov:skip=CKV_AWS_173:The environment holds no secrets (the API key is read from Secrets Manager at run time) and is encrypted with the AWS managed key; a CMK is optional via var.kms_key_arn.
  function_name    = local.function_name
  description      = "interlinked event bridge: events queue -> Prefect flow runs"
  role             = aws_iam_role.this.arn
  handler          = var.handler
  runtime          = var.runtime
  architectures    = var.architectures
  filename         = var.package_path
  source_code_hash = filebase64sha256(var.package_path)
  timeout          = var.timeout
  memory_size      = var.memory_size
  kms_key_arn      = var.kms_key_arn

  environment {
    variables = merge(
      {
        PREFECT_API_URL            = var.prefect_api_url
        PREFECT_API_KEY_SECRET_ARN = coalesce(var.prefect_api_key_secret_arn, "")
        BRIDGE_DLQ_URL             = aws_sqs_queue.dlq.url
      },
      var.environment,
    )
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.dlq.arn
  }

  tracing_config {
    mode = var.tracing_mode
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []

    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  tags = merge(var.tags, { Name = local.function_name })

  depends_on = [
    aws_cloudwatch_log_group.this,
    aws_iam_role_policy.this,
    aws_iam_role_policy_attachment.vpc,
  ]
}

resource "aws_lambda_event_source_mapping" "events" {
  event_source_arn                   = var.events_queue_arn
  function_name                      = aws_lambda_function.this.arn
  enabled                            = var.event_source_mapping_enabled
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.maximum_batching_window_in_seconds
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.maximum_concurrency
  }

  tags = merge(var.tags, { Name = "${local.function_name}-events" })
}

################################################################################
# Alert: the Prefect API does not answer (events are being kept, not lost)
################################################################################

resource "aws_cloudwatch_log_metric_filter" "prefect_unavailable" {
  name           = "${local.function_name}-prefect-unavailable"
  log_group_name = aws_cloudwatch_log_group.this.name
  pattern        = "\"PREFECT_UNAVAILABLE\""

  metric_transformation {
    name      = "PrefectUnavailable"
    namespace = "interlinked/bridge"
    value     = "1"
  }
}

resource "aws_cloudwatch_metric_alarm" "prefect_unavailable" {
  alarm_name          = "${local.function_name}-prefect-unavailable"
  alarm_description   = "The event bridge cannot reach the Prefect API at ${var.prefect_api_url}: events are kept in the events queue (not dead-lettered) until it answers."
  namespace           = "interlinked/bridge"
  metric_name         = "PrefectUnavailable"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = merge(var.tags, { Name = "${local.function_name}-prefect-unavailable" })
}
