################################################################################
# The module's settings secret, always created, read by both functions (with your secret_arn or
# ssm_parameter_arn after it, whose values win; see main.tf):
# {"PGQUEUE_SIGNING_KEY": ..., "PGQUEUE_EVENT_KEYS": ..., "DATABASE_URL": ... when known here,
#  "PGQUEUE_REALTIME_LISTEN_URL": the created instance's address, with realtime_enabled}
################################################################################

# Generated keys: Secrets Manager's random password generator (no random provider), restricted
# to hex, which the SDKs need. A data source answers anew on every plan, so the first answer is
# kept in a terraform_data whose input changes are ignored: its planned `input` stays the value
# it was created with (known at plan time, unlike `output` on the first plan).
data "aws_secretsmanager_random_password" "signing_key" {
  count = var.signing_key == null ? 1 : 0

  password_length     = 64
  exclude_uppercase   = true
  exclude_punctuation = true
  exclude_characters  = "ghijklmnopqrstuvwxyz"
  include_space       = false
}

data "aws_secretsmanager_random_password" "event_key" {
  count = length(var.event_keys) == 0 ? 1 : 0

  password_length     = 32
  exclude_uppercase   = true
  exclude_punctuation = true
  exclude_characters  = "ghijklmnopqrstuvwxyz"
  include_space       = false
}

resource "terraform_data" "generated_signing_key" {
  count = var.signing_key == null ? 1 : 0

  input = sensitive(data.aws_secretsmanager_random_password.signing_key[0].random_password)

  lifecycle {
    ignore_changes = [input]
  }
}

resource "terraform_data" "generated_event_key" {
  count = length(var.event_keys) == 0 ? 1 : 0

  input = sensitive(data.aws_secretsmanager_random_password.event_key[0].random_password)

  lifecycle {
    ignore_changes = [input]
  }
}

locals {
  # the created database is reached through the proxy when there is one
  created_database_host = var.create_database ? (
    var.create_rds_proxy ? aws_db_proxy.this[0].endpoint : aws_db_instance.this[0].address
  ) : null

  database_url = var.create_database ? format(
    "postgresql://%s:%s@%s:5432/%s?sslmode=require",
    var.db_username, local.db_password, local.created_database_host, var.db_name,
  ) : var.database_url

  realtime_listen_url = var.create_database && var.realtime_enabled ? format(
    "postgresql://%s:%s@%s:5432/%s?sslmode=require",
    var.db_username, local.db_password, aws_db_instance.this[0].address, var.db_name,
  ) : null

  signing_key = var.signing_key != null ? var.signing_key : "signkey-prod-${terraform_data.generated_signing_key[0].input}"
  event_keys  = length(var.event_keys) > 0 ? var.event_keys : terraform_data.generated_event_key[*].input
}

resource "aws_secretsmanager_secret" "settings" {
  name_prefix = "${var.name}-settings-"
  description = "pgqueue settings: PGQUEUE_SIGNING_KEY, PGQUEUE_EVENT_KEYS (and DATABASE_URL unless it comes from secret_arn / ssm_parameter_arn)"
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "settings" {
  secret_id = aws_secretsmanager_secret.settings.id
  secret_string = jsonencode(merge(
    {
      PGQUEUE_SIGNING_KEY = local.signing_key
      PGQUEUE_EVENT_KEYS  = join(",", local.event_keys)
    },
    local.database_url == null ? {} : { DATABASE_URL = local.database_url },
    # realtime LISTENs on the created instance itself: RDS Proxy would pin a session for it
    local.realtime_listen_url == null ? {} : { PGQUEUE_REALTIME_LISTEN_URL = local.realtime_listen_url },
  ))

  lifecycle {
    precondition {
      condition     = var.create_database || var.database_url != null || var.secret_arn != null || var.ssm_parameter_arn != null
      error_message = "Set database_url, or create_database = true, or pass secret_arn / ssm_parameter_arn holding DATABASE_URL."
    }
    precondition {
      condition     = var.secret_arn == null || var.ssm_parameter_arn == null
      error_message = "Pass secret_arn or ssm_parameter_arn, not both."
    }
  }
}

# Earlier versions created the settings secret only without secret_arn / ssm_parameter_arn.
moved {
  from = aws_secretsmanager_secret.settings[0]
  to   = aws_secretsmanager_secret.settings
}

moved {
  from = aws_secretsmanager_secret_version.settings[0]
  to   = aws_secretsmanager_secret_version.settings
}
