################################################################################
# The settings secret both functions read at cold start (unless one is passed in):
# {"DATABASE_URL": ..., "PGQUEUE_SIGNING_KEY": ..., "PGQUEUE_EVENT_KEYS": ...}
################################################################################

resource "random_bytes" "signing_key" {
  count  = local.create_secret && var.signing_key == null ? 1 : 0
  length = 32
}

resource "random_bytes" "event_key" {
  count  = local.create_secret && length(var.event_keys) == 0 ? 1 : 0
  length = 16
}

locals {
  # the created database is reached through the proxy when there is one
  created_database_host = var.create_database ? (
    var.create_rds_proxy ? aws_db_proxy.this[0].endpoint : aws_db_instance.this[0].address
  ) : null

  database_url = var.create_database ? format(
    "postgresql://%s:%s@%s:5432/%s?sslmode=require",
    var.db_username, random_password.db[0].result, local.created_database_host, var.db_name,
  ) : var.database_url

  signing_key = var.signing_key != null ? var.signing_key : (
    local.create_secret ? "signkey-prod-${random_bytes.signing_key[0].hex}" : null
  )
  event_keys = length(var.event_keys) > 0 ? var.event_keys : random_bytes.event_key[*].hex
}

resource "aws_secretsmanager_secret" "settings" {
  count = local.create_secret ? 1 : 0

  name_prefix = "${var.name}-settings-"
  description = "pgqueue settings: DATABASE_URL, PGQUEUE_SIGNING_KEY, PGQUEUE_EVENT_KEYS"
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "settings" {
  count = local.create_secret ? 1 : 0

  secret_id = aws_secretsmanager_secret.settings[0].id
  secret_string = jsonencode({
    DATABASE_URL        = local.database_url
    PGQUEUE_SIGNING_KEY = local.signing_key
    PGQUEUE_EVENT_KEYS  = join(",", local.event_keys)
  })

  lifecycle {
    precondition {
      condition     = var.create_database || var.database_url != null
      error_message = "Set database_url, or create_database = true, or pass secret_arn / ssm_parameter_arn."
    }
  }
}
