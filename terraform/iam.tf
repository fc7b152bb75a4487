################################################################################
# Trust policies
################################################################################

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "rds_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["rds.amazonaws.com"]
    }
  }
}

################################################################################
# Shared statement: read the settings (secret or SSM parameter, and its key)
################################################################################

data "aws_iam_policy_document" "read_settings" {
  statement {
    sid       = "ReadSettingsSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.settings_secret_arns
  }

  dynamic "statement" {
    for_each = var.ssm_parameter_arn != null ? [1] : []
    content {
      sid       = "ReadSettingsParameter"
      actions   = ["ssm:GetParameter"]
      resources = [var.ssm_parameter_arn]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn != null ? [1] : []
    content {
      sid       = "DecryptSettings"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]
    }
  }
}

################################################################################
# API function: its logs, the settings, and invoking the executor (nothing else)
################################################################################

resource "aws_iam_role" "api" {
  name_prefix        = "${local.iam_prefix}-api-"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "api" {
  source_policy_documents = [data.aws_iam_policy_document.read_settings.json]

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.api.arn}:*"]
  }

  statement {
    sid       = "KickTheExecutor"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_alias.executor.arn]
  }
}

resource "aws_iam_role_policy" "api" {
  name   = "pgqueue-api"
  role   = aws_iam_role.api.id
  policy = data.aws_iam_policy_document.api.json
}

################################################################################
# Executor function: its logs and the settings; then (once its alias exists) waking itself up
################################################################################

resource "aws_iam_role" "executor" {
  name_prefix        = "${local.iam_prefix}-executor-"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "executor" {
  source_policy_documents = [data.aws_iam_policy_document.read_settings.json]

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.executor.arn}:*"]
  }
}

resource "aws_iam_role_policy" "executor" {
  name   = "pgqueue-executor"
  role   = aws_iam_role.executor.id
  policy = data.aws_iam_policy_document.executor.json
}

# A separate policy, so the function does not wait for its own alias: re-invoking itself through
# the alias (PGQUEUE_KICK_FUNCTION) when its budget ends with work due (pgqueue/serverless/tick.py).
data "aws_iam_policy_document" "executor_wakeups" {
  statement {
    sid       = "InvokeItself"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_alias.executor.arn]
  }
}

resource "aws_iam_role_policy" "executor_wakeups" {
  name   = "pgqueue-executor-wakeups"
  role   = aws_iam_role.executor.id
  policy = data.aws_iam_policy_document.executor_wakeups.json
}

# Inside a VPC, Lambda manages network interfaces for the functions (an AWS-managed policy whose
# EC2 actions cannot be scoped to resources).
resource "aws_iam_role_policy_attachment" "api_vpc" {
  count = local.in_vpc ? 1 : 0

  role       = aws_iam_role.api.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy_attachment" "executor_vpc" {
  count = local.in_vpc ? 1 : 0

  role       = aws_iam_role.executor.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

################################################################################
# EventBridge Scheduler: invoke the executor's alias (the tick, and the executor's one-time
# schedules, which pass this role)
################################################################################

resource "aws_iam_role" "scheduler" {
  name_prefix        = "${local.iam_prefix}-tick-"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "InvokeTheExecutor"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_alias.executor.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "pgqueue-tick"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

################################################################################
# RDS Proxy: read the database credentials
################################################################################

resource "aws_iam_role" "rds_proxy" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  name_prefix        = "${local.iam_prefix}-proxy-"
  assume_role_policy = data.aws_iam_policy_document.rds_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "rds_proxy" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  statement {
    sid       = "ReadDatabaseCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.db_credentials[0].arn]
  }

  # the credentials secret is encrypted with kms_key_arn when one is given
  dynamic "statement" {
    for_each = var.kms_key_arn != null ? [1] : []
    content {
      sid       = "DecryptDatabaseCredentials"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]

      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values   = ["secretsmanager.*.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "rds_proxy" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  name   = "pgqueue-proxy"
  role   = aws_iam_role.rds_proxy[0].id
  policy = data.aws_iam_policy_document.rds_proxy[0].json
}

################################################################################
# Realtime tasks (realtime_enabled): ECS pulls the image, writes the logs and injects the settings
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "realtime_execution" {
  count = var.realtime_enabled ? 1 : 0

  name_prefix        = "${local.iam_prefix}-realtime-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

# ECR pulls and log writes: the AWS-managed task execution policy (ECR's authorization token
# cannot be scoped to a resource).
resource "aws_iam_role_policy_attachment" "realtime_execution" {
  count = var.realtime_enabled ? 1 : 0

  role       = aws_iam_role.realtime_execution[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# The settings the functions read, injected into the tasks' environment (PGQUEUE_SECRET_VALUE_<n>).
data "aws_iam_policy_document" "realtime_execution" {
  statement {
    sid       = "ReadSettingsSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.settings_secret_arns
  }

  dynamic "statement" {
    for_each = var.ssm_parameter_arn != null ? [1] : []
    content {
      sid       = "ReadSettingsParameter"
      actions   = ["ssm:GetParameters"]
      resources = [var.ssm_parameter_arn]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn != null ? [1] : []
    content {
      sid       = "DecryptSettings"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]
    }
  }
}

resource "aws_iam_role_policy" "realtime_execution" {
  count = var.realtime_enabled ? 1 : 0

  name   = "pgqueue-realtime-settings"
  role   = aws_iam_role.realtime_execution[0].id
  policy = data.aws_iam_policy_document.realtime_execution.json
}
