# A group's own identity (NeuroCAAS's per-group credentials): a role that can list only its own
# prefix of the submissions bucket, read and write its inputs/, configs/ and submissions/ and read
# its results/. Locally, `interlinked groups add` makes the same permissions for an IAM user on the
# emulator (interlinked.local.identities.group_policy); on AWS a role, assumed by the group's people.
#
# The role is also recorded in the group registry, s3://{registry_bucket}/groups/{group}.json, as
# `interlinked groups add` records the local user: the submissions' writer check
# (flows/submissions/writers.py) refuses a submit file that this role writes under another group's
# prefix (S3 notifications name the writer as AWS:<RoleId>:<session>).

data "aws_partition" "current" {}

locals {
  bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
  prefix     = "${var.group}/"
  tags       = merge(var.tags, { "interlinked:group" = var.group })
}

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "GroupMembers"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.trusted_principal_arns
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = "${var.name_prefix}-group-${var.group}"
  description          = "Group ${var.group}: s3://${var.bucket_name}/${local.prefix} only."
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = var.max_session_duration
  tags                 = local.tags
}

data "aws_iam_policy_document" "group" {
  statement {
    sid       = "ListOwnPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.prefix, "${local.prefix}*"]
    }
  }

  statement {
    sid     = "WriteOwnInputs"
    effect  = "Allow"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [
      "${local.bucket_arn}/${local.prefix}inputs/*",
      "${local.bucket_arn}/${local.prefix}configs/*",
      "${local.bucket_arn}/${local.prefix}submissions/*",
    ]
  }

  statement {
    sid       = "ReadOwnResults"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/${local.prefix}results/*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "BucketKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "this" {
  name        = "${var.name_prefix}-group-${var.group}"
  description = "Group ${var.group}: its own prefix of s3://${var.bucket_name} only."
  policy      = data.aws_iam_policy_document.group.json
  tags        = local.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  role       = aws_iam_role.this.name
  policy_arn = aws_iam_policy.this.arn
}

resource "aws_s3_object" "registry" {
  bucket       = var.registry_bucket
  key          = "groups/${var.group}.json"
  content_type = "application/json"
  content = jsonencode({
    group         = var.group
    principal_ids = [aws_iam_role.this.unique_id]
    arn           = aws_iam_role.this.arn
    source        = "terraform modules/group"
  })
  tags = local.tags
}
