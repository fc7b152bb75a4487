################################################################################
# Log groups (created before the functions so retention applies from the first line)
################################################################################

resource "aws_cloudwatch_log_group" "api" {
  name              = "/aws/lambda/${local.api_function_name}"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "executor" {
  name              = "/aws/lambda/${local.executor_function_name}"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

################################################################################
# Network: the functions' security group (only inside a VPC)
################################################################################

resource "aws_security_group" "lambda" {
  count = local.in_vpc ? 1 : 0

  name_prefix = "${var.name}-lambda-"
  description = "pgqueue functions: out to PostgreSQL and to the SDK apps"
  vpc_id      = var.vpc_id

  egress {
    description = "PostgreSQL (RDS or RDS Proxy) and HTTPS to the SDK apps"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.vpc_id != null
      error_message = "subnet_ids puts the functions in a VPC: set vpc_id to the subnets' VPC."
    }
  }
}

################################################################################
# API function: Event API, SDK registration, REST API, health
################################################################################

resource "aws_lambda_function" "api" {
  function_name    = local.api_function_name
  description      = "pgqueue HTTP API (Mangum)"
  role             = aws_iam_role.api.arn
  handler          = "api_handler.handler"
  runtime          = var.runtime
  architectures    = [var.architecture]
  filename         = var.lambda_package_path
  source_code_hash = filebase64sha256(var.lambda_package_path)
  memory_size      = var.api_memory_size
  timeout          = var.api_timeout
  # null: unreserved. Each instance holds at most 2 database connections.
  reserved_concurrent_executions = var.api_reserved_concurrency
  # Every change publishes a version; callers reach it through the alias once it is migrated.
  publish = true

  environment {
    variables = local.api_environment
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = concat(aws_security_group.lambda[*].id, var.security_group_ids)
    }
  }

  tags       = local.tags
  depends_on = [aws_cloudwatch_log_group.api, aws_iam_role_policy.api]
}

################################################################################
# Executor function: cron, rescue, queue; run by the schedule, kicked by the API
################################################################################

resource "aws_lambda_function" "executor" {
  function_name                  = local.executor_function_name
  description                    = "pgqueue executor: one bounded tick per invocation"
  role                           = aws_iam_role.executor.arn
  handler                        = "executor_handler.handler"
  runtime                        = var.runtime
  architectures                  = [var.architecture]
  filename                       = var.lambda_package_path
  source_code_hash               = filebase64sha256(var.lambda_package_path)
  memory_size                    = var.executor_memory_size
  timeout                        = var.executor_timeout
  reserved_concurrent_executions = var.executor_reserved_concurrency
  publish                        = true

  environment {
    variables = local.executor_environment
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = concat(aws_security_group.lambda[*].id, var.security_group_ids)
    }
  }

  tags       = local.tags
  depends_on = [aws_cloudwatch_log_group.executor, aws_iam_role_policy.executor]
}

# Kicks and wake-ups are asynchronous invokes of the alias; the schedule is their retry, so Lambda
# must not retry them (an invoke config applies to the qualifier it names).
resource "aws_lambda_function_event_invoke_config" "executor" {
  function_name                = aws_lambda_function.executor.function_name
  qualifier                    = aws_lambda_alias.executor.name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 60
}

################################################################################
# Deploy order: publish a version, migrate with that version, then move the aliases
################################################################################

# Migrations are explicit: the executor's migrate action, invoked on the version just published
# (not on the alias, which still runs the previous code), and again for every new version.
resource "aws_lambda_invocation" "migrate" {
  count = var.run_migrations ? 1 : 0

  function_name = aws_lambda_function.executor.function_name
  qualifier     = aws_lambda_function.executor.version
  input         = jsonencode({ action = "migrate" })

  triggers = {
    version = aws_lambda_function.executor.version
  }

  depends_on = [
    aws_db_proxy_target.this,
    aws_db_instance.this,
    aws_secretsmanager_secret_version.settings,
    aws_iam_role_policy.executor,
  ]
}

# The aliases every caller uses follow the new versions only after the migration succeeded (with
# run_migrations = false, migrate before applying). Until then the previous versions keep serving
# against the migrated schema, which the versioned SQL functions (claim_v1, ...) allow.
resource "aws_lambda_alias" "executor" {
  name             = local.alias_name
  description      = "What the schedules, kicks and the executor's own wake-ups invoke"
  function_name    = aws_lambda_function.executor.function_name
  function_version = aws_lambda_function.executor.version

  depends_on = [aws_lambda_invocation.migrate]
}

resource "aws_lambda_alias" "api" {
  name             = local.alias_name
  description      = "What the HTTP API or the Function URL invokes"
  function_name    = aws_lambda_function.api.function_name
  function_version = aws_lambda_function.api.version

  depends_on = [aws_lambda_invocation.migrate]
}
