# Queues, topics and S3 event routing.
#
#   work    FIFO  (analysis requests, content-based dedup)  --redrive-->  work DLQ (FIFO)
#   events  std   (S3 drops, submissions -> event bridge)    --redrive-->  events DLQ
#   topics  work_results (one WorkResponse per request), job_events (job lifecycle)
#   optional subscriber queues on topics (raw delivery) for pollers
#
# Queue policies are inline and name their own queue by a constructed ARN, so no queue waits for
# a second policy round trip (the AWS provider already waits ~25 s per queue creation).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  sqs_arn    = "arn:${local.partition}:sqs:${local.region}:${local.account_id}"

  work_queue_name   = var.work_queue_name
  work_dlq_name     = coalesce(var.work_dlq_name, "${trimsuffix(var.work_queue_name, ".fifo")}-dlq.fifo")
  events_queue_name = coalesce(var.events_queue_name, "${var.name_prefix}-events")
  events_dlq_name   = coalesce(var.events_dlq_name, "${local.events_queue_name}-dlq")

  topic_names = {
    work_results = coalesce(var.work_results_topic_name, "${var.name_prefix}-work-results")
    job_events   = coalesce(var.job_events_topic_name, "${var.name_prefix}-job-events")
  }

  subscriber_queue_names = {
    for t in toset(var.topic_subscriber_queues) : t => "${var.name_prefix}-${replace(t, "_", "-")}-subscriber"
  }

  # S3 routes grouped by bucket (one aws_s3_bucket_notification per bucket) and by destination.
  routes           = [for i, r in var.s3_notifications : merge(r, { id = "${r.bucket}-to-${r.destination}-${i}" })]
  notified_buckets = toset([for r in local.routes : r.bucket])
  route_source_arns = {
    for dest in ["events", "work_results", "job_events"] : dest => distinct([
      for r in local.routes : "arn:${local.partition}:s3:::${try(var.buckets[r.bucket].id, r.bucket)}" if r.destination == dest
    ])
  }

  # Queue policy statements, keyed by queue name; a queue without statements gets no policy.
  deny_insecure_transport_sqs = {
    for name in concat(
      [local.work_queue_name, local.work_dlq_name, local.events_queue_name, local.events_dlq_name],
      values(local.subscriber_queue_names),
    ) :
    name => var.deny_insecure_transport ? [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "sqs:*"
      Resource  = "${local.sqs_arn}:${name}"
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }] : []
  }
}

################################################################################
# Dead-letter queues
################################################################################

resource "aws_sqs_queue" "work_dlq" {
  name                        = local.work_dlq_name
  fifo_queue                  = true
  content_based_deduplication = true
  message_retention_seconds   = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled     = true

  redrive_allow_policy = var.restrict_dlq_redrive_sources ? jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = ["${local.sqs_arn}:${local.work_queue_name}"]
  }) : null

  policy = var.deny_insecure_transport ? jsonencode({
    Version   = "2012-10-17"
    Statement = local.deny_insecure_transport_sqs[local.work_dlq_name]
  }) : null

  tags = merge(var.tags, { Name = local.work_dlq_name })
}

resource "aws_sqs_queue" "events_dlq" {
  name                      = local.events_dlq_name
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = true

  redrive_allow_policy = var.restrict_dlq_redrive_sources ? jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = ["${local.sqs_arn}:${local.events_queue_name}"]
  }) : null

  policy = var.deny_insecure_transport ? jsonencode({
    Version   = "2012-10-17"
    Statement = local.deny_insecure_transport_sqs[local.events_dlq_name]
  }) : null

  tags = merge(var.tags, { Name = local.events_dlq_name })
}

################################################################################
# Work queue (FIFO) and events queue
################################################################################

resource "aws_sqs_queue" "work" {
  name                        = local.work_queue_name
  fifo_queue                  = true
  content_based_deduplication = true
  visibility_timeout_seconds  = var.work_visibility_timeout_seconds
  message_retention_seconds   = var.message_retention_seconds
  receive_wait_time_seconds   = var.receive_wait_time_seconds
  sqs_managed_sse_enabled     = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.work_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  policy = var.deny_insecure_transport ? jsonencode({
    Version   = "2012-10-17"
    Statement = local.deny_insecure_transport_sqs[local.work_queue_name]
  }) : null

  tags = merge(var.tags, { Name = local.work_queue_name })
}

resource "aws_sqs_queue" "events" {
  name                       = local.events_queue_name
  visibility_timeout_seconds = var.events_visibility_timeout_seconds
  message_retention_seconds  = var.message_retention_seconds
  receive_wait_time_seconds  = var.receive_wait_time_seconds
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.events_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  policy = length(local.route_source_arns["events"]) == 0 && !var.deny_insecure_transport ? null : jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      length(local.route_source_arns["events"]) == 0 ? [] : [{
        Sid       = "AllowS3EventNotifications"
        Effect    = "Allow"
        Principal = { Service = "s3.amazonaws.com" }
        Action    = "sqs:SendMessage"
        Resource  = "${local.sqs_arn}:${local.events_queue_name}"
        Condition = {
          ArnLike      = { "aws:SourceArn" = local.route_source_arns["events"] }
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      }],
      local.deny_insecure_transport_sqs[local.events_queue_name],
    )
  })

  tags = merge(var.tags, { Name = local.events_queue_name })
}

################################################################################
# Topics
################################################################################

resource "aws_sns_topic" "this" {
  for_each = local.topic_names

  name              = each.value
  kms_master_key_id = var.topic_kms_master_key_id

  tags = merge(var.tags, { Name = each.value })
}

data "aws_iam_policy_document" "topic" {
  for_each = aws_sns_topic.this

  statement {
    sid    = "AllowAccountPrincipals"
    effect = "Allow"
    actions = [
      "SNS:GetTopicAttributes",
      "SNS:ListSubscriptionsByTopic",
      "SNS:Publish",
      "SNS:Subscribe",
    ]
    resources = [each.value.arn]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  dynamic "statement" {
    for_each = length(local.route_source_arns[each.key]) == 0 ? [] : [1]

    content {
      sid       = "AllowS3EventNotifications"
      effect    = "Allow"
      actions   = ["SNS:Publish"]
      resources = [each.value.arn]

      principals {
        type        = "Service"
        identifiers = ["s3.amazonaws.com"]
      }

      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = local.route_source_arns[each.key]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }

  dynamic "statement" {
    for_each = var.deny_insecure_transport ? [1] : []

    content {
      sid       = "DenyInsecureTransport"
      effect    = "Deny"
      actions   = ["SNS:Publish", "SNS:Subscribe"]
      resources = [each.value.arn]

      principals {
        type        = "*"
        identifiers = ["*"]
      }

      condition {
        test     = "Bool"
        variable = "aws:SecureTransport"
        values   = ["false"]
      }
    }
  }
}

resource "aws_sns_topic_policy" "this" {
  for_each = aws_sns_topic.this

  arn    = each.value.arn
  policy = data.aws_iam_policy_document.topic[each.key].json
}

################################################################################
# Topic subscriber queues (optional)
################################################################################

resource "aws_sqs_queue" "subscriber" {
  for_each = local.subscriber_queue_names

  name                      = each.value
  message_retention_seconds = var.subscriber_queue_message_retention_seconds
  receive_wait_time_seconds = var.receive_wait_time_seconds
  sqs_managed_sse_enabled   = true

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Sid       = "AllowTopicDelivery"
        Effect    = "Allow"
        Principal = { Service = "sns.amazonaws.com" }
        Action    = "sqs:SendMessage"
        Resource  = "${local.sqs_arn}:${each.value}"
        Condition = { ArnEquals = { "aws:SourceArn" = aws_sns_topic.this[each.key].arn } }
      }],
      local.deny_insecure_transport_sqs[each.value],
    )
  })

  tags = merge(var.tags, { Name = each.value, "interlinked:topic" = each.key })
}

resource "aws_sns_topic_subscription" "subscriber" {
  for_each = aws_sqs_queue.subscriber

  topic_arn            = aws_sns_topic.this[each.key].arn
  protocol             = "sqs"
  endpoint             = each.value.arn
  raw_message_delivery = true
}

################################################################################
# S3 event notifications
################################################################################

resource "aws_s3_bucket_notification" "this" {
  for_each = local.notified_buckets

  bucket = try(var.buckets[each.key].id, each.key)

  dynamic "queue" {
    for_each = [for r in local.routes : r if r.bucket == each.key && r.destination == "events"]

    content {
      id            = queue.value.id
      queue_arn     = aws_sqs_queue.events.arn
      events        = queue.value.events
      filter_prefix = queue.value.filter_prefix
      filter_suffix = queue.value.filter_suffix
    }
  }

  dynamic "topic" {
    for_each = [for r in local.routes : r if r.bucket == each.key && r.destination != "events"]

    content {
      id            = topic.value.id
      topic_arn     = aws_sns_topic.this[topic.value.destination].arn
      events        = topic.value.events
      filter_prefix = topic.value.filter_prefix
      filter_suffix = topic.value.filter_suffix
    }
  }

  lifecycle {
    precondition {
      condition     = contains(keys(var.buckets), each.key)
      error_message = "An s3_notifications route names bucket \"${each.key}\", which is not a key of var.buckets."
    }
  }

  # S3 validates the destination policies (and sends a test event) when the configuration is set.
  depends_on = [aws_sqs_queue.events, aws_sns_topic_policy.this]
}
