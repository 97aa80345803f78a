variable "name_prefix" {
  description = "Prefix for the names this module derives (events queue, topics, DLQs, subscriber queues)."
  type        = string
}

################################################################################
# Queues
################################################################################

variable "work_queue_name" {
  description = "Name of the work (analysis request) FIFO queue; the analysis service reads it as WORKER_QUEUE. Must end in .fifo."
  type        = string
  default     = "development-queue.fifo"

  validation {
    condition     = endswith(var.work_queue_name, ".fifo") && length(var.work_queue_name) <= 80
    error_message = "work_queue_name must end with \".fifo\" and be at most 80 characters."
  }
}

variable "work_dlq_name" {
  description = "Name of the work queue's dead-letter queue (FIFO). null = work queue name with \"-dlq.fifo\" in place of \".fifo\"."
  type        = string
  default     = null
}

variable "events_queue_name" {
  description = "Name of the standard events queue (S3 notifications, submissions; consumed by the event bridge). null = \"<name_prefix>-events\"."
  type        = string
  default     = null
}

variable "events_dlq_name" {
  description = "Name of the events queue's dead-letter queue. null = \"<events queue name>-dlq\"."
  type        = string
  default     = null
}

variable "max_receive_count" {
  description = "Receives after which a message moves from the work/events queue to its DLQ (redrive policy maxReceiveCount)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "restrict_dlq_redrive_sources" {
  description = "Set a redrive allow policy on each DLQ so only its own source queue may use it as dead-letter target."
  type        = bool
  default     = true
}

variable "work_visibility_timeout_seconds" {
  description = "Visibility timeout of the work queue: longer than the slowest analysis task handled in-line by the service."
  type        = number
  default     = 300
}

variable "events_visibility_timeout_seconds" {
  description = "Visibility timeout of the events queue. Must be at least the event-bridge Lambda timeout (AWS recommends 6x)."
  type        = number
  default     = 360
}

variable "message_retention_seconds" {
  description = "Message retention of the work and events queues (seconds)."
  type        = number
  default     = 345600
}

variable "dlq_message_retention_seconds" {
  description = "Message retention of the dead-letter queues (seconds; 14 days is the SQS maximum)."
  type        = number
  default     = 1209600
}

variable "receive_wait_time_seconds" {
  description = "Long-polling wait of the work and events queues (seconds, 0-20)."
  type        = number
  default     = 20
}

################################################################################
# Topics
################################################################################

variable "work_results_topic_name" {
  description = "Name of the SNS topic receiving one WorkResponse per analysis request. null = \"<name_prefix>-work-results\"."
  type        = string
  default     = null
}

variable "job_events_topic_name" {
  description = "Name of the SNS topic receiving job lifecycle events (final state of every job). null = \"<name_prefix>-job-events\"."
  type        = string
  default     = null
}

variable "topic_kms_master_key_id" {
  description = "KMS key (id, ARN or alias) for SNS server-side encryption. The AWS managed alias/aws/sns cannot be used by S3 notifications: route S3 events to a topic only with a customer managed key whose policy allows s3.amazonaws.com."
  type        = string
  default     = "alias/aws/sns"
}

variable "topic_subscriber_queues" {
  description = "Topic keys (\"work_results\", \"job_events\") that get a standard SQS queue subscribed with raw message delivery, so pollers (CLI --wait, tests, dashboards) can read what was published."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for t in var.topic_subscriber_queues : contains(["work_results", "job_events"], t)])
    error_message = "topic_subscriber_queues entries must be \"work_results\" or \"job_events\"."
  }
}

variable "subscriber_queue_message_retention_seconds" {
  description = "Message retention of the topic subscriber queues (seconds)."
  type        = number
  default     = 86400
}

################################################################################
# S3 notifications
################################################################################

variable "buckets" {
  description = "Buckets that may send notifications, keyed by role (for example the storage module's buckets output: { data = { id, arn }, analysis = { id, arn } })."
  type = map(object({
    id  = string
    arn = string
  }))
  default = {}
}

variable "s3_notifications" {
  description = <<-EOT
    S3 event routes. bucket: a key of var.buckets; destination: "events" (the events queue), "work_results" or
    "job_events" (topics; needs a customer managed topic KMS key); filter_prefix / filter_suffix: S3 key filters
    (S3 has no wildcards inside a key: "*/submissions/*.json" is expressed either as one route per group prefix
    "<group>/submissions/" or as suffix ".json" with the consumer filtering keys); events: S3 event types.
    Routes of one bucket must not overlap for the same event type.
  EOT
  type = list(object({
    bucket        = string
    destination   = string
    filter_prefix = optional(string)
    filter_suffix = optional(string)
    events        = optional(list(string), ["s3:ObjectCreated:*"])
  }))
  default = []

  validation {
    condition     = alltrue([for r in var.s3_notifications : contains(["events", "work_results", "job_events"], r.destination)])
    error_message = "s3_notifications[*].destination must be \"events\", \"work_results\" or \"job_events\"."
  }
}

variable "deny_insecure_transport" {
  description = "Add a policy statement denying requests made without TLS (aws:SecureTransport = false). Turn off only for plain-HTTP emulators: moto evaluates bucket policies but not the Bool condition, so the statement would deny every request."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
