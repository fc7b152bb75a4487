# pgqueue on AWS Lambda: an API function behind an HTTP API (or a Function URL) at the origin
# root, an executor function run by an EventBridge schedule and kicked by the API, settings in
# Secrets Manager (or SSM), optionally an RDS for PostgreSQL instance behind RDS Proxy.
# Each AWS concern has its own file; this one holds the shared names and values.

data "aws_partition" "current" {}

locals {
  api_function_name      = "${var.name}-api"
  executor_function_name = "${var.name}-executor"

  # Every caller (HTTP API, Function URL, schedules, kicks, the executor's own wake-ups) invokes
  # this alias, never $LATEST: it moves to a newly published version only after that version's
  # migrations ran (lambda.tf), so new code never runs against an old schema.
  alias_name = "live"
  # `name:alias` is what Lambda's Invoke takes as FunctionName for the alias.
  executor_alias_qualified_name = "${local.executor_function_name}:${local.alias_name}"

  # IAM name_prefix allows 38 characters (64 minus a 26-character suffix): long stack names are
  # shortened to 24 with a hash, so "<prefix>-executor-" always fits.
  iam_prefix = length(var.name) <= 24 ? var.name : "${substr(var.name, 0, 17)}-${substr(sha256(var.name), 0, 6)}"

  # Decided by the subnets alone: their number is known at plan time even when the VPC is
  # created in the same apply (a vpc_id of a new VPC is not, and count could not use it).
  in_vpc = length(var.subnet_ids) > 0

  # Settings sources, later ones win (pgqueue/serverless/aws.py): the secret this module always creates (the
  # keys, and DATABASE_URL when the module knows it), then your secret, then your SSM parameter.
  settings_secret_arns = compact([aws_secretsmanager_secret.settings.arn, var.secret_arn])

  settings_environment = merge(
    { PGQUEUE_SECRET_ARN = join(",", local.settings_secret_arns) },
    var.ssm_parameter_arn == null ? {} : { PGQUEUE_SSM_PARAMETER = var.ssm_parameter_arn },
  )

  common_environment = merge(local.settings_environment, {
    PGQUEUE_LOG_LEVEL  = var.log_level
    PGQUEUE_LOG_FORMAT = "json"
    PGQUEUE_POOLER     = "1"
    # the executor's alias: the API kicks it, the executor re-invokes itself through it
    PGQUEUE_KICK_FUNCTION = local.executor_alias_qualified_name
  })

  api_environment = merge(local.common_environment, {
    PGQUEUE_KICK_DEBOUNCE_MS = tostring(var.kick_debounce_ms)
    # the API cannot hold realtime subscriptions: it redirects SSE subscribers to the realtime service
  }, var.realtime_enabled ? { PGQUEUE_REALTIME_URL = local.realtime_url } : {})

  executor_environment = merge(local.common_environment, {
    PGQUEUE_POOL_SIZE          = tostring(var.executor_pool_size)
    PGQUEUE_WORKER_CONCURRENCY = tostring(var.worker_concurrency)
    # the egress policy refuses private and special-purpose addresses unless listed here
    PGQUEUE_ALLOWED_APP_NETWORKS = join(",", var.allowed_app_networks)
    PGQUEUE_ALLOWED_APP_HOSTS    = join(",", var.allowed_app_hosts)
  }, var.extra_environment)

  tags = merge(var.tags, { "pgqueue:stack" = var.name })
}
