# pgqueue on AWS Lambda: an API function behind an HTTP API (or a Function URL) at the origin
# root, an executor function run by an EventBridge schedule and kicked by the API, settings in
# Secrets Manager (or SSM), optionally an RDS for PostgreSQL instance behind RDS Proxy.
# Each AWS concern has its own file; this one holds the shared names and values.

data "aws_partition" "current" {}

locals {
  api_function_name      = "${var.name}-api"
  executor_function_name = "${var.name}-executor"

  in_vpc        = var.vpc_id != null && length(var.subnet_ids) > 0
  create_secret = var.secret_arn == null && var.ssm_parameter_arn == null

  # The settings secret (or parameter) both functions read at cold start.
  settings_secret_arn = local.create_secret ? aws_secretsmanager_secret.settings[0].arn : var.secret_arn

  settings_environment = var.ssm_parameter_arn != null ? {
    PGQUEUE_SSM_PARAMETER = var.ssm_parameter_arn
    } : {
    PGQUEUE_SECRET_ARN = local.settings_secret_arn
  }

  common_environment = merge(local.settings_environment, {
    PGQUEUE_LOG_LEVEL  = var.log_level
    PGQUEUE_LOG_FORMAT = "json"
    PGQUEUE_POOLER     = "1"
  })

  api_environment = merge(local.common_environment, {
    PGQUEUE_KICK_FUNCTION    = local.executor_function_name
    PGQUEUE_KICK_DEBOUNCE_MS = tostring(var.kick_debounce_ms)
  })

  executor_environment = merge(local.common_environment, {
    PGQUEUE_POOL_SIZE          = tostring(var.executor_pool_size)
    PGQUEUE_WORKER_CONCURRENCY = tostring(var.worker_concurrency)
  })

  tags = merge(var.tags, { "pgqueue:stack" = var.name })
}
