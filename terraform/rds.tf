################################################################################
# Optional RDS for PostgreSQL, reached through RDS Proxy. pgqueue keeps no session state
# (no prepared statements, no LISTEN, transaction-scoped advisory locks only), so the proxy
# multiplexes its connections without pinning.
################################################################################

# The master password: generated once (see secrets.tf for why a terraform_data keeps it), letters
# and digits only, so it needs no escaping in DATABASE_URL.
data "aws_secretsmanager_random_password" "db" {
  count = var.create_database ? 1 : 0

  password_length     = 40
  exclude_punctuation = true
  include_space       = false
}

resource "terraform_data" "db_password" {
  count = var.create_database ? 1 : 0

  input = sensitive(data.aws_secretsmanager_random_password.db[0].random_password)

  lifecycle {
    ignore_changes = [input]
  }
}

locals {
  db_password = var.create_database ? terraform_data.db_password[0].input : null
}

resource "aws_db_subnet_group" "this" {
  count = var.create_database ? 1 : 0

  name_prefix = "${var.name}-"
  description = "pgqueue database"
  subnet_ids  = var.subnet_ids
  tags        = local.tags
}

resource "aws_security_group" "database" {
  count = var.create_database ? 1 : 0

  name_prefix = "${var.name}-db-"
  description = "pgqueue database and proxy: PostgreSQL from the functions and the proxy"
  vpc_id      = var.vpc_id

  ingress {
    description     = "PostgreSQL from the pgqueue functions and realtime tasks"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = concat(aws_security_group.lambda[*].id, aws_security_group.realtime_task[*].id)
  }

  ingress {
    description = "PostgreSQL from the proxy to the instance"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    self        = true
  }

  egress {
    description = "Proxy to the instance"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    self        = true
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = local.in_vpc && var.vpc_id != null
      error_message = "create_database needs vpc_id and subnet_ids (private subnets in at least two availability zones)."
    }
  }
}

resource "aws_db_instance" "this" {
  count = var.create_database ? 1 : 0

  identifier                 = "${var.name}-db"
  engine                     = "postgres"
  engine_version             = var.db_engine_version
  instance_class             = var.db_instance_class
  allocated_storage          = var.db_allocated_storage
  max_allocated_storage      = var.db_max_allocated_storage
  storage_type               = "gp3"
  storage_encrypted          = true
  db_name                    = var.db_name
  username                   = var.db_username
  password                   = local.db_password
  db_subnet_group_name       = aws_db_subnet_group.this[0].name
  vpc_security_group_ids     = [aws_security_group.database[0].id]
  publicly_accessible        = false
  multi_az                   = var.db_multi_az
  backup_retention_period    = var.db_backup_retention_period
  deletion_protection        = var.db_deletion_protection
  auto_minor_version_upgrade = true
  copy_tags_to_snapshot      = true
  skip_final_snapshot        = false
  # Unique per instance: a fixed name would collide with the snapshot of an earlier instance of
  # the same stack. Set when the instance is created and kept (ignore_changes) until it is deleted.
  final_snapshot_identifier = "${var.name}-db-final-${formatdate("YYYYMMDDhhmmss", plantimestamp())}"
  tags                      = local.tags

  lifecycle {
    ignore_changes = [final_snapshot_identifier]
  }
}

# The proxy authenticates to the instance with these credentials.
resource "aws_secretsmanager_secret" "db_credentials" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  name_prefix = "${var.name}-db-credentials-"
  description = "pgqueue database credentials for RDS Proxy"
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "db_credentials" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  secret_id = aws_secretsmanager_secret.db_credentials[0].id
  secret_string = jsonencode({
    username = var.db_username
    password = local.db_password
  })
}

resource "aws_db_proxy" "this" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  name                   = "${var.name}-proxy"
  engine_family          = "POSTGRESQL"
  require_tls            = true
  idle_client_timeout    = 1800
  debug_logging          = false
  role_arn               = aws_iam_role.rds_proxy[0].arn
  vpc_subnet_ids         = var.subnet_ids
  vpc_security_group_ids = [aws_security_group.database[0].id]

  auth {
    auth_scheme               = "SECRETS"
    client_password_auth_type = "POSTGRES_SCRAM_SHA_256"
    iam_auth                  = "DISABLED"
    secret_arn                = aws_secretsmanager_secret.db_credentials[0].arn
  }

  tags = local.tags
}

resource "aws_db_proxy_default_target_group" "this" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  db_proxy_name = aws_db_proxy.this[0].name

  connection_pool_config {
    connection_borrow_timeout    = 120
    max_connections_percent      = 90
    max_idle_connections_percent = 50
  }
}

resource "aws_db_proxy_target" "this" {
  count = var.create_database && var.create_rds_proxy ? 1 : 0

  db_instance_identifier = aws_db_instance.this[0].identifier
  db_proxy_name          = aws_db_proxy.this[0].name
  target_group_name      = aws_db_proxy_default_target_group.this[0].name
}
