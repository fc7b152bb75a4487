################################################################################
# General
################################################################################

variable "name" {
  description = "Name prefix for every resource (functions are <name>-api and <name>-executor); at most 40 characters"
  type        = string
  default     = "pgqueue"

  # The longest names built from it ("<name>-executor", "<name>-db-final-<timestamp>") stay
  # within AWS limits up to 40 characters; IAM role prefixes are shortened with a hash (main.tf).
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,39}$", var.name))
    error_message = "name must start with a letter and use only lower-case letters, digits and hyphens (at most 40 characters)."
  }
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}

################################################################################
# Lambda functions
################################################################################

variable "lambda_package_path" {
  description = "Path of the zip built by `python scripts/build_lambda.py --arch <architecture>` (both functions use it)"
  type        = string
}

variable "architecture" {
  description = "Instruction set of both functions; must match the zip (`x86_64` or `arm64`)"
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "runtime" {
  description = "Lambda runtime; must match the --python-version the zip was built for (python3.12 or python3.13: the locked wheels need Amazon Linux 2023's glibc)"
  type        = string
  default     = "python3.12"

  validation {
    condition     = contains(["python3.12", "python3.13"], var.runtime)
    error_message = "runtime must be python3.12 or python3.13 (scripts/build_lambda.py builds for those; python3.11 runs on Amazon Linux 2, whose glibc cannot load the locked psycopg-binary and google-re2 wheels)."
  }
}

variable "api_frontend" {
  description = "How the API is reached at the origin root: `http_api` (API Gateway HTTP API, 30 s limit) or `function_url`"
  type        = string
  default     = "http_api"

  validation {
    condition     = contains(["http_api", "function_url"], var.api_frontend)
    error_message = "api_frontend must be http_api or function_url."
  }
}

variable "api_memory_size" {
  description = "Memory (MB) of the API function"
  type        = number
  default     = 512
}

variable "api_reserved_concurrency" {
  description = "Reserved concurrency of the API function, capping its database connections at this x 2. null (default): unreserved (same account-quota caveat as executor_reserved_concurrency)"
  type        = number
  default     = null

  validation {
    condition     = var.api_reserved_concurrency == null || try(var.api_reserved_concurrency >= 1, false)
    error_message = "api_reserved_concurrency must be null (unreserved) or at least 1 (0 would refuse every request)."
  }
}

variable "function_url_invoke_permission" {
  description = "With api_frontend = function_url: also grant lambda:InvokeFunction to everyone, which Function URLs created since October 2025 need besides lambda:InvokeFunctionUrl (without it they answer 403). AWS provider 5.x cannot scope that grant to Function URL calls; with provider >= 6.28 set false and add the scoped grant (invoked_via_function_url = true) yourself (terraform/README.md)"
  type        = bool
  default     = true
}

variable "api_timeout" {
  description = "Timeout (seconds) of the API function"
  type        = number
  default     = 29
}

variable "executor_memory_size" {
  description = "Memory (MB) of the executor function"
  type        = number
  default     = 1024
}

variable "executor_timeout" {
  description = "Timeout (seconds) of the executor function: one tick runs for this long at most, so keep it above your longest step"
  type        = number
  default     = 300
}

variable "executor_reserved_concurrency" {
  description = "Reserved concurrency of the executor, capping parallel ticks and their database connections (this x executor_pool_size). null (default): unreserved, sharing the account's pool. Lambda refuses a reservation that leaves fewer than 10 unreserved, so on a new account (quota 10) any value fails: raise the quota first"
  type        = number
  default     = null

  validation {
    condition     = var.executor_reserved_concurrency == null || try(var.executor_reserved_concurrency >= 1, false)
    error_message = "executor_reserved_concurrency must be null (unreserved) or at least 1 (0 would stop the executor)."
  }
}

variable "executor_pool_size" {
  description = "Database connections per executor instance (PGQUEUE_POOL_SIZE)"
  type        = number
  default     = 10
}

variable "worker_concurrency" {
  description = "Calls to SDK apps one executor instance makes at once (PGQUEUE_WORKER_CONCURRENCY)"
  type        = number
  default     = 32
}

variable "schedule_expression" {
  description = "EventBridge Scheduler expression of the executor tick; bounds the latency of work whose kick was lost"
  type        = string
  default     = "rate(1 minute)"
}

variable "kick_debounce_ms" {
  description = "At most one executor kick per this many milliseconds, across all API instances"
  type        = number
  default     = 1000
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of both functions"
  type        = number
  default     = 14
}

variable "log_level" {
  description = "PGQUEUE_LOG_LEVEL of both functions"
  type        = string
  default     = "info"
}

variable "run_migrations" {
  description = "Invoke the executor's migrate action on apply (and whenever the package changes)"
  type        = bool
  default     = true
}

################################################################################
# Settings and secrets
################################################################################

variable "secret_arn" {
  description = "Existing Secrets Manager secret with settings: a bare PostgreSQL URL, RDS-style credentials (username, password, host, port, dbname) or a JSON object of DATABASE_URL / PGQUEUE_* keys. Its values win over the module's own settings secret, which always holds the signing and event keys (signing_key, event_keys or generated)"
  type        = string
  default     = null
}

variable "ssm_parameter_arn" {
  description = "Instead of secret_arn: an SSM SecureString parameter with the same kinds of content"
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key that encrypts the secrets (the module's and yours) or the parameter; the functions and RDS Proxy may decrypt with it (null: the AWS-managed key)"
  type        = string
  default     = null
}

variable "database_url" {
  description = "PostgreSQL URL of an existing database, stored in the module's settings secret (ignored with create_database; a DATABASE_URL in secret_arn / ssm_parameter_arn wins)"
  type        = string
  default     = null
  sensitive   = true
}

variable "signing_key" {
  description = "Signing key shared with the SDK apps (signkey-prod-<hex>), stored in the module's settings secret; generated once when null. A PGQUEUE_SIGNING_KEY in secret_arn / ssm_parameter_arn wins"
  type        = string
  default     = null
  sensitive   = true
}

variable "event_keys" {
  description = "Event keys accepted by POST /e/{key}, stored in the module's settings secret; one is generated once when empty. PGQUEUE_EVENT_KEYS in secret_arn / ssm_parameter_arn wins"
  type        = list(string)
  default     = []
  sensitive   = true
}

################################################################################
# Network
################################################################################

variable "vpc_id" {
  description = "VPC of subnet_ids (the functions' security group and the created database live in it)"
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Private subnets of the functions (and the database); none (the default) runs the functions outside a VPC. They need a NAT route to reach SDK apps on the internet, and a NAT route or interface endpoints (Secrets Manager, Lambda, Scheduler) for the AWS APIs; see examples/vpc"
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Extra security groups for the functions"
  type        = list(string)
  default     = []
}

################################################################################
# Database (optional)
################################################################################

variable "create_database" {
  description = "Create an RDS for PostgreSQL instance (needs vpc_id and subnet_ids)"
  type        = bool
  default     = false
}

variable "create_rds_proxy" {
  description = "Put an RDS Proxy in front of the created database (recommended: Lambda concurrency x pool size connections)"
  type        = bool
  default     = true
}

variable "db_engine_version" {
  description = "PostgreSQL major version of the created database"
  type        = string
  default     = "16"
}

variable "db_instance_class" {
  description = "Instance class of the created database"
  type        = string
  default     = "db.t4g.micro"
}

variable "db_allocated_storage" {
  description = "Initial storage (GiB) of the created database"
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling limit (GiB) of the created database"
  type        = number
  default     = 100
}

variable "db_name" {
  description = "Database name"
  type        = string
  default     = "pgqueue"
}

variable "db_username" {
  description = "Master user name"
  type        = string
  default     = "pgqueue"
}

variable "db_multi_az" {
  description = "Multi-AZ deployment of the created database"
  type        = bool
  default     = false
}

variable "db_deletion_protection" {
  description = "Deletion protection of the created database"
  type        = bool
  default     = true
}

variable "db_backup_retention_period" {
  description = "Days of automated backups of the created database"
  type        = number
  default     = 7
}

################################################################################
# Alarms
################################################################################

variable "alarm_sns_topic_arn" {
  description = "SNS topic notified by the alarms (null: alarms without actions)"
  type        = string
  default     = null
}

variable "queue_depth_alarm_threshold" {
  description = "Alarm when more queue items than this are due at the end of ticks for 5 minutes"
  type        = number
  default     = 1000
}

variable "api_5xx_alarm_threshold" {
  description = "Alarm when the API answers more than this many 5xx responses in 5 minutes (HTTP API 5xx or Function URL Url5xxCount)"
  type        = number
  default     = 0
}

variable "oldest_due_age_alarm_threshold" {
  description = "Alarm when the oldest due queue item has waited longer than this many seconds (also when ticks stop reporting)"
  type        = number
  default     = 300
}

variable "allowed_app_networks" {
  description = "CIDRs of apps the executor may call although they are private or special-purpose addresses (e.g. your VPC's 10.0.0.0/16); PGQUEUE_ALLOWED_APP_NETWORKS"
  type        = list(string)
  default     = []
}

variable "allowed_app_hosts" {
  description = "Host names (exact or *.suffix) the executor may call whatever they resolve to; PGQUEUE_ALLOWED_APP_HOSTS"
  type        = list(string)
  default     = []
}

variable "extra_environment" {
  description = "More PGQUEUE_* settings for the executor (see the README's settings table)"
  type        = map(string)
  default     = {}
}

################################################################################
# Realtime (optional): `pgqueue realtime` on ECS Fargate behind an Application Load Balancer
################################################################################

variable "realtime_enabled" {
  description = "Run `pgqueue realtime` (realtime subscribers' WebSocket and SSE, which the API Lambda cannot hold) on ECS Fargate behind an Application Load Balancer; needs vpc_id, subnet_ids (with a route to ECR, Secrets Manager and CloudWatch Logs), realtime_lb_subnet_ids and realtime_image"
  type        = bool
  default     = false
}

variable "realtime_image" {
  description = "Container image with pgqueue (the repository's Dockerfile), e.g. <account>.dkr.ecr.<region>.amazonaws.com/pgqueue:<tag>; it runs `pgqueue realtime`"
  type        = string
  default     = null
}

variable "realtime_lb_subnet_ids" {
  description = "Subnets of the load balancer (public ones for subscribers on the internet, at least two availability zones)"
  type        = list(string)
  default     = []
}

variable "realtime_internal" {
  description = "Make the load balancer internal (subscribers inside the VPC only)"
  type        = bool
  default     = false
}

variable "realtime_certificate_arn" {
  description = "ACM certificate for an HTTPS listener on 443 (browsers on an https:// page need wss://); null: plain HTTP on 80"
  type        = string
  default     = null
}

variable "realtime_domain_name" {
  description = "Name that points at the load balancer (your DNS record, matching realtime_certificate_arn): realtime_url uses it instead of the load balancer's own name"
  type        = string
  default     = null
}

variable "realtime_allowed_cidrs" {
  description = "Networks that may reach the load balancer"
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "realtime_desired_count" {
  description = "Number of `pgqueue realtime` tasks (every task serves any subscriber: each reads the messages from PostgreSQL itself)"
  type        = number
  default     = 1
}

variable "realtime_cpu" {
  description = "CPU units of a task (256 = a quarter vCPU)"
  type        = number
  default     = 256
}

variable "realtime_memory" {
  description = "Memory (MiB) of a task"
  type        = number
  default     = 512
}

variable "realtime_extra_environment" {
  description = "More PGQUEUE_* settings for the realtime tasks, e.g. PGQUEUE_REALTIME_LISTEN_URL (a direct connection for LISTEN when DATABASE_URL goes through a pooler)"
  type        = map(string)
  default     = {}
}
