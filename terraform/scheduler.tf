################################################################################
# The executor tick: the safety net that makes lost kicks harmless
################################################################################

resource "aws_scheduler_schedule" "tick" {
  name                = "${var.name}-tick"
  description         = "pgqueue executor tick: cron, lease rescue, delayed work, queue drain"
  schedule_expression = var.schedule_expression

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_alias.executor.arn
    role_arn = aws_iam_role.scheduler.arn
    input    = jsonencode({ action = "tick" })

    # A missed tick is replaced by the next one: no retries, no stale ticks.
    retry_policy {
      maximum_retry_attempts       = 0
      maximum_event_age_in_seconds = 60
    }
  }
}
