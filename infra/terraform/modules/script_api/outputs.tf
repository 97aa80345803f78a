output "api_id" {
  description = "ID of the HTTP API."
  value       = aws_apigatewayv2_api.this.id
}

output "url" {
  description = "Base URL of the API (stage $default), ending in \"/\": interlinker_options(lambda_uri = ...) and INTERLINKED_SCRIPT_API_URL take it."
  value       = "${trimsuffix(aws_apigatewayv2_stage.this.invoke_url, "/")}/"
}

output "route_keys" {
  description = "The API's routes (\"POST /submitjob\", ...)."
  value       = sort([for route in aws_apigatewayv2_route.this : route.route_key])
}

output "function_name" {
  description = "Name of the script API Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the script API Lambda function."
  value       = aws_lambda_function.this.arn
}

output "role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.this.arn
}

output "log_group_name" {
  description = "Log group of the function."
  value       = aws_cloudwatch_log_group.function.name
}

output "access_log_group_name" {
  description = "Log group of the API's access logs."
  value       = aws_cloudwatch_log_group.access.name
}

output "execution_arn" {
  description = "Execution ARN of the API: execute-api:Invoke on \"<this>/*/POST/*\" lets a role call every route."
  value       = aws_apigatewayv2_api.this.execution_arn
}
