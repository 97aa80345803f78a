# Data and analysis buckets (plus an optional access-logs bucket).
#
# data bucket layout:     scripts/  jobs/  results/{job_id}/  logs/  experiments/{id}/processed.h5ad
#                         analysis-cache/  analysis-responses/
# analysis bucket layout: {group}/inputs/  {group}/configs/  {group}/submissions/  {group}/results/
#
# analyses' own buckets (var.analysis_buckets; NeuroCAAS: "the bucket is the analysis") have the
# analysis bucket's layout.
#
# Every bucket shares one configuration (for_each over local.buckets: keys "data", "analysis" and
# "analysis:<name>"); only the data bucket carries the expiry rules of logs/, analysis-cache/ and
# analysis-responses/.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id

  buckets = merge(
    {
      data     = coalesce(var.data_bucket_name, "${var.name_prefix}-data-${local.account_id}")
      analysis = coalesce(var.analysis_bucket_name, "${var.name_prefix}-analysis-${local.account_id}")
    },
    { for name, bucket in var.analysis_buckets : "analysis:${name}" => bucket },
  )

  create_access_logs_bucket = var.access_logs_bucket_name == null && var.create_access_logs_bucket
  enable_access_logging     = var.access_logs_bucket_name != null || var.create_access_logs_bucket
  access_logs_bucket = (
    var.access_logs_bucket_name != null ? var.access_logs_bucket_name :
    local.create_access_logs_bucket ? aws_s3_bucket.access_logs[0].id : null
  )
  access_logs_bucket_name_planned = coalesce(var.access_logs_bucket_name, "${var.name_prefix}-access-logs-${local.account_id}")

  # Expiring prefixes per bucket key. The data bucket's must match what the code writes:
  # flows/expiry.py (DATA_BUCKET_EXPIRY) is that list, and tests/unit/test_lifecycle_prefixes.py
  # fails when the two differ.
  expiring_prefixes = {
    data = {
      logs                 = { prefix = "logs/", days = var.logs_expiration_days }
      "analysis-cache"     = { prefix = "analysis-cache/", days = var.cache_expiration_days }
      "analysis-responses" = { prefix = "analysis-responses/", days = var.response_records_expiration_days }
    }
    analysis = {}
  }
}

################################################################################
# Data + analysis buckets (and the analyses' own)
################################################################################

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice (second region, double storage cost) left to the deployer; versioning is on so it can be added without data changes.
  #checkov:skip=CKV2_AWS_62:Event notifications are configured by the messaging module (aws_s3_bucket_notification), which checkov cannot link across modules.
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) is the documented default; SSE-KMS is one variable away (kms_key_arn) and is used by examples/aws.
  for_each = local.buckets

  bucket        = each.value
  force_destroy = var.force_destroy

  tags = merge(var.tags, { Name = each.value, "interlinked:bucket" = each.key })
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = aws_s3_bucket.this

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id

  versioning_configuration {
    status = var.versioning_enabled ? "Enabled" : "Suspended"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  dynamic "rule" {
    for_each = lookup(local.expiring_prefixes, each.key, {})

    content {
      id     = "expire-${rule.key}"
      status = "Enabled"

      filter {
        prefix = rule.value.prefix
      }

      expiration {
        days = rule.value.days
      }

      abort_incomplete_multipart_upload {
        days_after_initiation = var.abort_incomplete_multipart_upload_days
      }
    }
  }

  # Versioning must be configured before lifecycle rules that act on non-current versions.
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  for_each = { for key, bucket in aws_s3_bucket.this : key => bucket if var.deny_insecure_transport }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]

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

resource "aws_s3_bucket_policy" "this" {
  for_each = data.aws_iam_policy_document.bucket

  bucket = each.value.id
  policy = each.value.json

  # S3 rejects bucket policies while the public access block is being applied.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_logging" "this" {
  for_each = { for key, bucket in aws_s3_bucket.this : key => bucket if local.enable_access_logging }

  bucket        = each.value.id
  target_bucket = local.access_logs_bucket
  target_prefix = "${each.value.id}/"

  depends_on = [aws_s3_bucket_policy.access_logs]
}

################################################################################
# Access-logs bucket (optional)
################################################################################

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log destination itself; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Access logs are audit data with a short retention; cross-region replication is not worth double storage.
  #checkov:skip=CKV2_AWS_62:Nobody consumes events for access-log objects.
  #checkov:skip=CKV_AWS_145:S3 server access log delivery only supports SSE-S3 (AES256) destination buckets.
  count = local.create_access_logs_bucket ? 1 : 0

  bucket        = local.access_logs_bucket_name_planned
  force_destroy = var.force_destroy

  tags = merge(var.tags, { Name = local.access_logs_bucket_name_planned, "interlinked:bucket" = "access-logs" })
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  count = local.create_access_logs_bucket ? 1 : 0

  bucket = aws_s3_bucket.access_logs[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  count = local.create_access_logs_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.access_logs[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "access_logs" {
  count = local.create_access_logs_bucket ? 1 : 0

  bucket = aws_s3_bucket.access_logs[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  count = local.create_access_logs_bucket ? 1 : 0

  bucket = aws_s3_bucket.access_logs[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  count = local.create_access_logs_bucket ? 1 : 0

  bucket = aws_s3_bucket.access_logs[0].id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.access_logs_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

data "aws_iam_policy_document" "access_logs" {
  count = local.create_access_logs_bucket ? 1 : 0

  statement {
    sid       = "AllowS3ServerAccessLogDelivery"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs[0].arn}/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [for name in values(local.buckets) : "arn:${data.aws_partition.current.partition}:s3:::${name}"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  dynamic "statement" {
    for_each = var.deny_insecure_transport ? [1] : []

    content {
      sid     = "DenyInsecureTransport"
      effect  = "Deny"
      actions = ["s3:*"]
      resources = [
        aws_s3_bucket.access_logs[0].arn,
        "${aws_s3_bucket.access_logs[0].arn}/*",
      ]

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

resource "aws_s3_bucket_policy" "access_logs" {
  count = local.create_access_logs_bucket ? 1 : 0

  bucket = aws_s3_bucket.access_logs[0].id
  policy = data.aws_iam_policy_document.access_logs[0].json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}
