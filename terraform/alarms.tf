################################################################################
# Alarms on what every tick publishes (CloudWatch EMF, namespace "pgqueue",
# dimension FunctionName = the executor) and on the functions' errors
################################################################################

locals {
  alarm_actions = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "queue_depth" {
  alarm_name          = "${var.name}-queue-depth"
  alarm_description   = "More pgqueue work is due than the executor drains (QueueDepth at the end of ticks)"
  namespace           = "pgqueue"
  metric_name         = "QueueDepth"
  dimensions          = { FunctionName = aws_lambda_function.executor.function_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.queue_depth_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_due_age" {
  alarm_name          = "${var.name}-oldest-due-age"
  alarm_description   = "Due pgqueue work is waiting too long, or ticks stopped reporting (missing data breaches)"
  namespace           = "pgqueue"
  metric_name         = "OldestDueAgeSeconds"
  dimensions          = { FunctionName = aws_lambda_function.executor.function_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.oldest_due_age_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "executor_errors" {
  alarm_name          = "${var.name}-executor-errors"
  alarm_description   = "The pgqueue executor function failed"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.executor.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "api_errors" {
  alarm_name          = "${var.name}-api-errors"
  alarm_description   = "The pgqueue API function failed (unhandled errors, not 4xx answers)"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.api.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "throttles" {
  for_each = {
    api      = aws_lambda_function.api.function_name
    executor = aws_lambda_function.executor.function_name
  }

  alarm_name          = "${var.name}-${each.key}-throttles"
  alarm_description   = "The pgqueue ${each.key} function was throttled: the account's (or its reserved) concurrency is exhausted"
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# A tick stops short of the timeout by a safety margin (5 s) to hand back its leases; running into
# the last 1% means that margin was not enough, or the invocation was cut off (leases then wait
# for the rescuer).
resource "aws_cloudwatch_metric_alarm" "executor_duration" {
  alarm_name          = "${var.name}-executor-duration"
  alarm_description   = "A pgqueue executor invocation ran into the last 1% of its timeout"
  namespace           = "AWS/Lambda"
  metric_name         = "Duration"
  dimensions          = { FunctionName = aws_lambda_function.executor.function_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.executor_timeout * 1000 * 0.99
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# Server errors as the SDKs see them: the HTTP API's 5xx (including integration failures and
# timeouts) or the Function URL's.
resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name        = "${var.name}-api-5xx"
  alarm_description = "The pgqueue API answered 5xx (database unreachable, schema not migrated, timeouts, crashes)"
  namespace         = var.api_frontend == "http_api" ? "AWS/ApiGateway" : "AWS/Lambda"
  metric_name       = var.api_frontend == "http_api" ? "5xx" : "Url5xxCount"
  dimensions = var.api_frontend == "http_api" ? {
    ApiId = aws_apigatewayv2_api.this[0].id
    } : {
    FunctionName = aws_lambda_function.api.function_name
  }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.api_5xx_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}
