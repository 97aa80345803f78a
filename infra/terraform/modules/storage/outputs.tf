output "data_bucket_name" {
  description = "Name (id) of the data bucket."
  value       = aws_s3_bucket.this["data"].id
}

output "data_bucket_arn" {
  description = "ARN of the data bucket."
  value       = aws_s3_bucket.this["data"].arn
}

output "analysis_bucket_name" {
  description = "Name (id) of the analysis bucket."
  value       = aws_s3_bucket.this["analysis"].id
}

output "analysis_bucket_arn" {
  description = "ARN of the analysis bucket."
  value       = aws_s3_bucket.this["analysis"].arn
}

output "analysis_buckets" {
  description = "The analyses' own buckets, by analysis name: { id, arn }."
  value = {
    for name in keys(var.analysis_buckets) : name => {
      id  = aws_s3_bucket.this["analysis:${name}"].id
      arn = aws_s3_bucket.this["analysis:${name}"].arn
    }
  }
}

output "buckets" {
  description = "Every bucket keyed by role (\"data\", \"analysis\", \"analysis:<name>\" for an analysis's own): { id, arn }. Feed this to the messaging module's buckets input."
  value = {
    for key, bucket in aws_s3_bucket.this : key => {
      id  = bucket.id
      arn = bucket.arn
    }
  }
}

output "access_logs_bucket_name" {
  description = "Bucket receiving S3 server access logs (null when access logging is off)."
  value       = local.access_logs_bucket
}

output "kms_key_arn" {
  description = "KMS key used for SSE-KMS on the buckets (null = SSE-S3/AES256)."
  value       = var.kms_key_arn
}
