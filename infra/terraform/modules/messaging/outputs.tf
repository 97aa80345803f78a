output "work_queue_url" {
  description = "URL of the work (analysis request) FIFO queue."
  value       = aws_sqs_queue.work.url
}

output "work_queue_arn" {
  description = "ARN of the work FIFO queue."
  value       = aws_sqs_queue.work.arn
}

output "work_queue_name" {
  description = "Name of the work FIFO queue (the analysis service's WORKER_QUEUE)."
  value       = aws_sqs_queue.work.name
}

output "work_dlq_url" {
  description = "URL of the work queue's dead-letter queue."
  value       = aws_sqs_queue.work_dlq.url
}

output "work_dlq_arn" {
  description = "ARN of the work queue's dead-letter queue."
  value       = aws_sqs_queue.work_dlq.arn
}

output "events_queue_url" {
  description = "URL of the events queue (S3 drops and submissions; consumed by the event bridge)."
  value       = aws_sqs_queue.events.url
}

output "events_queue_arn" {
  description = "ARN of the events queue."
  value       = aws_sqs_queue.events.arn
}

output "events_queue_name" {
  description = "Name of the events queue."
  value       = aws_sqs_queue.events.name
}

output "events_dlq_url" {
  description = "URL of the events queue's dead-letter queue."
  value       = aws_sqs_queue.events_dlq.url
}

output "events_dlq_arn" {
  description = "ARN of the events queue's dead-letter queue."
  value       = aws_sqs_queue.events_dlq.arn
}

output "work_results_topic_arn" {
  description = "ARN of the work_results SNS topic."
  value       = aws_sns_topic.this["work_results"].arn
}

output "job_events_topic_arn" {
  description = "ARN of the job_events SNS topic."
  value       = aws_sns_topic.this["job_events"].arn
}

output "topic_arns" {
  description = "Topic ARNs keyed \"work_results\", \"job_events\"."
  value       = { for key, topic in aws_sns_topic.this : key => topic.arn }
}

output "topic_subscriber_queue_urls" {
  description = "URLs of the topic subscriber queues, keyed by topic key (empty when none)."
  value       = { for key, queue in aws_sqs_queue.subscriber : key => queue.url }
}

output "topic_subscriber_queue_arns" {
  description = "ARNs of the topic subscriber queues, keyed by topic key (empty when none)."
  value       = { for key, queue in aws_sqs_queue.subscriber : key => queue.arn }
}

output "queue_arns" {
  description = "Every queue ARN of this module (work, events, DLQs, subscriber queues): for IAM policies of consumers."
  value = concat(
    [aws_sqs_queue.work.arn, aws_sqs_queue.work_dlq.arn, aws_sqs_queue.events.arn, aws_sqs_queue.events_dlq.arn],
    [for queue in aws_sqs_queue.subscriber : queue.arn],
  )
}

output "s3_notification_routes" {
  description = "The S3 routes in force, with their notification ids."
  value       = local.routes
}
