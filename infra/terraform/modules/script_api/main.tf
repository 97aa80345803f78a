# The seed's HTTP API on AWS (erikor/interlinked-lambda): an API Gateway HTTP API whose routes
# POST /submitjob, /upload, /bulk, /fetch, /exists and /log invoke one Lambda
# (interlinked.script_api_lambda.handler, the same request handling as the local stack's
# script-api server: interlinked/script_api_core.py).
#
# The function reads and writes the data bucket (the seed's "interlinked" bucket), reads the
# Prefect API key, and creates flow runs of script-job/<deployment_set> through the Prefect API.
# The package is a prebuilt zip (scripts/package_lambda.py --installed pydantic).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  function_name  = coalesce(var.function_name, "${var.name_prefix}-script-api")
  log_group      = "/aws/lambda/${local.function_name}"
  access_log     = "/aws/apigateway/${local.function_name}"
  in_vpc         = length(var.subnet_ids) > 0
  data_objects   = "${var.data_bucket_arn}/*"
  endpoint_names = ["submitjob", "upload", "bulk", "fetch", "exists", "log"]
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

resource "aws_cloudwatch_log_group" "access" {
  #checkov:skip=CKV_AWS_338:Retention is a cost decision of the deployer (var.log_retention_days, default 30 days).
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (var.kms_key_arn, used by examples/aws).
  name              = local.access_log
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = merge(var.tags, { Name = local.access_log })
}

################################################################################
# IAM: only what the handlers call
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
  description          = "Role of the interlinked script API Lambda: data bucket objects, Prefect API key, logs"
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

  # upload, bulk, log, submitjob (jobs/<id>.json) write; fetch, exists, log, submitjob (the
  # script under scripts/) read. HeadObject is authorized by s3:GetObject.
  statement {
    sid       = "ReadWriteDataObjects"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.data_objects]
  }

  # Without it S3 answers 403 instead of 404 for a missing key: exists and fetch need the 404.
  statement {
    sid       = "ListDataBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.data_bucket_arn]
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

  # With a customer managed key: decrypt (objects, the secret, the function's environment, as the
  # bridge's role does) and encrypt new objects through S3 only.
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
      sid       = "EncryptObjectsWithKey"
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
  name   = "script-api"
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
  #checkov:skip=CKV_AWS_117:The API only talks to S3, Secrets Manager and the Prefect API (often Prefect Cloud); VPC attachment is optional via var.subnet_ids.
  #checkov:skip=CKV_AWS_115:Concurrency is bounded by the API stage's throttling (var.throttling_rate_limit/burst_limit); reserved concurrency fails on accounts at the minimum unreserved limit.
  #checkov:skip=CKV_AWS_116:API Gateway invokes the function synchronously: a failed request is answered to its client, there is no asynchronous event to dead-letter.
  #checkov:skip=CKV_AWS_173:The environment holds no secrets (the API key is read from Secrets Manager at run time) and is encrypted with the AWS managed key; a CMK is optional via var.kms_key_arn.
  function_name    = local.function_name
  description      = "interlinked script API (seed HTTP API): submitjob, upload, bulk, fetch, exists, log"
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
        INTERLINKED_DATA_BUCKET    = var.data_bucket_name
        INTERLINKED_DEPLOYMENT_SET = var.deployment_set
        PREFECT_API_URL            = var.prefect_api_url
        PREFECT_API_KEY_SECRET_ARN = coalesce(var.prefect_api_key_secret_arn, "")
      },
      var.environment,
    )
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
    aws_cloudwatch_log_group.function,
    aws_iam_role_policy.this,
    aws_iam_role_policy_attachment.vpc,
  ]
}

################################################################################
# API Gateway (HTTP API): the seed's paths, POST only
################################################################################

resource "aws_apigatewayv2_api" "this" {
  name          = local.function_name
  description   = "interlinked script API (the seed's interlinked-lambda endpoints)"
  protocol_type = "HTTP"

  tags = merge(var.tags, { Name = local.function_name })
}

resource "aws_apigatewayv2_integration" "this" {
  api_id                 = aws_apigatewayv2_api.this.id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.this.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(var.timeout * 1000, 30000)
}

resource "aws_apigatewayv2_route" "this" {
  for_each = toset(local.endpoint_names)

  api_id             = aws_apigatewayv2_api.this.id
  route_key          = "POST /${each.key}"
  target             = "integrations/${aws_apigatewayv2_integration.this.id}"
  authorization_type = var.authorization_type
}

resource "aws_apigatewayv2_stage" "this" {
  api_id      = aws_apigatewayv2_api.this.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.throttling_rate_limit
    throttling_burst_limit = var.throttling_burst_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.access.arn
    format = jsonencode({
      requestId      = "$context.requestId"
      sourceIp       = "$context.identity.sourceIp"
      caller         = "$context.identity.caller"
      requestTime    = "$context.requestTime"
      routeKey       = "$context.routeKey"
      status         = "$context.status"
      responseLength = "$context.responseLength"
      integrationErr = "$context.integrationErrorMessage"
    })
  }

  tags = merge(var.tags, { Name = "${local.function_name}-default" })
}

resource "aws_lambda_permission" "api" {
  statement_id  = "AllowApiGatewayInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this.execution_arn}/*/*"
}
