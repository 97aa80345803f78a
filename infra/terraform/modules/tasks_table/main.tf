# The DynamoDB table of task collections (flows/collections/dynamodb.py): one table, key pk + sk,
# holding the collection registry, counter shards, tasks, dependency edges and downstream sets, with
# three sparse global secondary indexes, none keyed on the bare task state (a claim queries a
# random one of 16 "open" shards of its collection, so no partition is hot):
#
#   open    open_pk   = "<collection>#<shard>", due (N)   todo and locked tasks: what a claim reads
#   leased  lease_pk  = "<collection>#<shard>", lease_expires (N)   locked tasks: oldest lease, reset
#   failed  failed_pk = "<collection>", finished_at (N)   failed tasks: failures, retry-failed
#
# On-demand billing (a drain's bursts and idle weeks cost only what they use), server-side
# encryption with KMS (kms_key_arn, else the AWS managed key aws/dynamodb), point-in-time recovery
# and deletion protection on.
# The store never creates the table where it exists: DynamoTaskStore.ensure() only describes it.

locals {
  # The indexes flows/collections/dynamodb.py queries (INDEXES there; tests/terraform compares the
  # two): hash key a string, range key a number, every attribute projected.
  indexes = {
    open   = { hash_key = "open_pk", range_key = "due" }
    leased = { hash_key = "lease_pk", range_key = "lease_expires" }
    failed = { hash_key = "failed_pk", range_key = "finished_at" }
  }

  # Attribute types of every key the table and its indexes use (DynamoDB wants exactly these).
  key_attributes = merge(
    { pk = "S", sk = "S" },
    { for name, index in local.indexes : index.hash_key => "S" },
    { for name, index in local.indexes : index.range_key => "N" },
  )
}

resource "aws_dynamodb_table" "this" {
  name         = var.name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  dynamic "attribute" {
    for_each = local.key_attributes

    content {
      name = attribute.key
      type = attribute.value
    }
  }

  dynamic "global_secondary_index" {
    for_each = local.indexes

    content {
      name            = global_secondary_index.key
      hash_key        = global_secondary_index.value.hash_key
      range_key       = global_secondary_index.value.range_key
      projection_type = "ALL"
    }
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  point_in_time_recovery {
    enabled = true
  }

  # Per-minute counts of finished tasks (throughput and ETA) carry expires_at: DynamoDB deletes them
  # after a week, at no cost.
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  deletion_protection_enabled = var.deletion_protection

  tags = merge(var.tags, { Name = var.name })
}
