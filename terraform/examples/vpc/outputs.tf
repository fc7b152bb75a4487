output "api_url" {
  description = "Point the SDKs here (INNGEST_BASE_URL)"
  value       = module.pgqueue.api_url
}

output "settings_secret_arn" {
  description = "The secret with the generated signing key and event key"
  value       = module.pgqueue.settings_secret_arn
}

output "db_proxy_endpoint" {
  description = "RDS Proxy endpoint the functions connect to"
  value       = module.pgqueue.db_proxy_endpoint
}

output "migration_result" {
  description = "Schema version after apply"
  value       = module.pgqueue.migration_result
}
