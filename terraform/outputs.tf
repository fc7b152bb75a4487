output "api_url" {
  description = "Origin the SDKs use (INNGEST_BASE_URL / INNGEST_EVENT_API_BASE_URL): the API at the root"
  value       = var.api_frontend == "http_api" ? aws_apigatewayv2_api.this[0].api_endpoint : trimsuffix(aws_lambda_function_url.api[0].function_url, "/")
}

output "api_function_name" {
  description = "Name of the API function"
  value       = aws_lambda_function.api.function_name
}

output "api_function_arn" {
  description = "ARN of the API function"
  value       = aws_lambda_function.api.arn
}

output "executor_function_name" {
  description = "Name of the executor function (invoke it with {\"action\": \"migrate\"} to migrate by hand)"
  value       = aws_lambda_function.executor.function_name
}

output "executor_function_arn" {
  description = "ARN of the executor function"
  value       = aws_lambda_function.executor.arn
}

output "executor_alias_arn" {
  description = "ARN of the executor's alias, which every caller invokes (it follows new versions after their migrations)"
  value       = aws_lambda_alias.executor.arn
}

output "api_alias_arn" {
  description = "ARN of the API function's alias, behind the HTTP API or the Function URL"
  value       = aws_lambda_alias.api.arn
}

output "executor_version" {
  description = "Version of the executor the aliases point at"
  value       = aws_lambda_alias.executor.function_version
}

output "schedule_arn" {
  description = "ARN of the EventBridge schedule that ticks the executor"
  value       = aws_scheduler_schedule.tick.arn
}

output "settings_secret_arn" {
  description = "ARN of the module's settings secret: the signing and event keys for the SDK apps (unless secret_arn / ssm_parameter_arn override them)"
  value       = aws_secretsmanager_secret.settings.arn
}

output "db_instance_address" {
  description = "Address of the created database instance (null when none was created)"
  value       = one(aws_db_instance.this[*].address)
}

output "db_proxy_endpoint" {
  description = "Endpoint of the RDS Proxy (null when none was created)"
  value       = one(aws_db_proxy.this[*].endpoint)
}

output "migration_result" {
  description = "What the migrate action returned on the last apply ({\"version\": N, \"applied\": [...]})"
  value       = one(aws_lambda_invocation.migrate[*].result)
}

output "realtime_url" {
  description = "Origin of the `pgqueue realtime` service (null unless realtime_enabled): the apiBaseUrl of the subscription tokens your server hands to browsers; the API redirects SSE subscribers there (PGQUEUE_REALTIME_URL)"
  value       = local.realtime_url
}

output "realtime_load_balancer_dns_name" {
  description = "DNS name of the realtime load balancer, for your realtime_domain_name record (null unless realtime_enabled)"
  value       = one(aws_lb.realtime[*].dns_name)
}
