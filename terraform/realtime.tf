################################################################################
# Realtime (realtime_enabled): `pgqueue realtime` on ECS Fargate behind an Application Load Balancer.
#
# The API Lambda publishes messages and mints subscription tokens, but cannot hold the subscribers'
# WebSockets and SSE streams; these tasks do. Each reads the messages of its own subscribers from
# PostgreSQL (LISTEN/NOTIFY), so any number of tasks serve any subscriber. The API answers SSE
# subscribers with a redirect here (PGQUEUE_REALTIME_URL); browsers connect their WebSocket here
# directly (the token's apiBaseUrl, see the README). The tasks read the same settings as the
# functions: ECS injects the secrets' values (PGQUEUE_SECRET_VALUE_1, _2, _3, merged by the CLI in the
# functions' order), so a rotated key reaches them when the service is redeployed.
################################################################################

locals {
  realtime_port   = 8288
  realtime_scheme = var.realtime_certificate_arn != null ? "https" : "http"
  realtime_url = var.realtime_enabled ? format(
    "%s://%s", local.realtime_scheme,
    var.realtime_domain_name != null ? var.realtime_domain_name : aws_lb.realtime[0].dns_name,
  ) : null

  realtime_environment = merge({
    PGQUEUE_HOST       = "0.0.0.0"
    PGQUEUE_PORT       = tostring(local.realtime_port)
    PGQUEUE_LOG_LEVEL  = var.log_level
    PGQUEUE_LOG_FORMAT = "json"
    # like the functions: DATABASE_URL may be RDS Proxy or PgBouncer; LISTEN then goes over
    # PGQUEUE_REALTIME_LISTEN_URL (the created database's own address is in the module's secret)
    # and without one the tasks poll
    PGQUEUE_POOLER = "1"
  }, var.realtime_extra_environment)

  # the functions' settings sources, in their order (later ones win)
  realtime_secrets = concat(
    [{ name = "PGQUEUE_SECRET_VALUE_1", valueFrom = aws_secretsmanager_secret.settings.arn }],
    var.secret_arn == null ? [] : [{ name = "PGQUEUE_SECRET_VALUE_2", valueFrom = var.secret_arn }],
    var.ssm_parameter_arn == null ? [] : [{ name = "PGQUEUE_SECRET_VALUE_3", valueFrom = var.ssm_parameter_arn }],
  )

  # ELB names: at most 32 characters
  realtime_lb_name = "${local.iam_prefix}-rt"
}

resource "aws_cloudwatch_log_group" "realtime" {
  count = var.realtime_enabled ? 1 : 0

  name              = "/ecs/${var.name}-realtime"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_ecs_cluster" "realtime" {
  count = var.realtime_enabled ? 1 : 0

  name = "${var.name}-realtime"
  tags = local.tags
}

resource "aws_ecs_task_definition" "realtime" {
  count = var.realtime_enabled ? 1 : 0

  family                   = "${var.name}-realtime"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.realtime_cpu)
  memory                   = tostring(var.realtime_memory)
  execution_role_arn       = aws_iam_role.realtime_execution[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.architecture == "arm64" ? "ARM64" : "X86_64"
  }

  container_definitions = jsonencode([{
    name         = "pgqueue"
    image        = var.realtime_image
    essential    = true
    command      = ["realtime"]
    portMappings = [{ containerPort = local.realtime_port, protocol = "tcp" }]
    environment  = [for key in sort(keys(local.realtime_environment)) : { name = key, value = local.realtime_environment[key] }]
    secrets      = local.realtime_secrets
    # subscribers are told the server is going (a WebSocket close) and reconnect to another task
    stopTimeout = 30
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group = aws_cloudwatch_log_group.realtime[0].name
        # the region of the log group: arn:<partition>:logs:<region>:...
        awslogs-region        = split(":", aws_cloudwatch_log_group.realtime[0].arn)[3]
        awslogs-stream-prefix = "realtime"
      }
    }
  }])

  tags = local.tags
}

################################################################################
# Network: the load balancer takes subscribers' connections, the tasks take the load balancer's
################################################################################

resource "aws_security_group" "realtime_lb" {
  count = var.realtime_enabled ? 1 : 0

  name_prefix = "${var.name}-realtime-lb-"
  description = "pgqueue realtime load balancer: subscribers in, the tasks out"
  vpc_id      = var.vpc_id

  ingress {
    description = "Subscribers (WebSocket and SSE) and publishers"
    from_port   = var.realtime_certificate_arn != null ? 443 : 80
    to_port     = var.realtime_certificate_arn != null ? 443 : 80
    protocol    = "tcp"
    cidr_blocks = var.realtime_allowed_cidrs
  }

  egress {
    description = "The realtime tasks"
    from_port   = local.realtime_port
    to_port     = local.realtime_port
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "realtime_task" {
  count = var.realtime_enabled ? 1 : 0

  name_prefix = "${var.name}-realtime-task-"
  description = "pgqueue realtime tasks: the load balancer in; PostgreSQL, ECR, Secrets Manager and logs out"
  vpc_id      = var.vpc_id

  ingress {
    description     = "The load balancer"
    from_port       = local.realtime_port
    to_port         = local.realtime_port
    protocol        = "tcp"
    security_groups = [aws_security_group.realtime_lb[0].id]
  }

  egress {
    description = "PostgreSQL and the AWS APIs"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb" "realtime" {
  count = var.realtime_enabled ? 1 : 0

  name               = local.realtime_lb_name
  load_balancer_type = "application"
  internal           = var.realtime_internal
  subnets            = var.realtime_lb_subnet_ids
  security_groups    = [aws_security_group.realtime_lb[0].id]
  # subscriptions are long-lived: SSE sends a comment every 15 s and uvicorn pings WebSockets every
  # 20 s, so an idle connection is never cut by the load balancer
  idle_timeout               = 120
  drop_invalid_header_fields = true
  tags                       = local.tags

  lifecycle {
    precondition {
      condition     = length(var.realtime_lb_subnet_ids) >= 2
      error_message = "realtime_enabled needs realtime_lb_subnet_ids: at least two subnets in different availability zones (public ones for subscribers on the internet)."
    }
  }
}

resource "aws_lb_target_group" "realtime" {
  count = var.realtime_enabled ? 1 : 0

  name                 = local.realtime_lb_name
  port                 = local.realtime_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    path                = "/health"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "realtime" {
  count = var.realtime_enabled ? 1 : 0

  load_balancer_arn = aws_lb.realtime[0].arn
  port              = var.realtime_certificate_arn != null ? 443 : 80
  protocol          = var.realtime_certificate_arn != null ? "HTTPS" : "HTTP"
  certificate_arn   = var.realtime_certificate_arn
  ssl_policy        = var.realtime_certificate_arn != null ? "ELBSecurityPolicy-TLS13-1-2-2021-06" : null

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.realtime[0].arn
  }

  tags = local.tags
}

################################################################################
# The service
################################################################################

resource "aws_ecs_service" "realtime" {
  count = var.realtime_enabled ? 1 : 0

  name                              = "${var.name}-realtime"
  cluster                           = aws_ecs_cluster.realtime[0].id
  task_definition                   = aws_ecs_task_definition.realtime[0].arn
  desired_count                     = var.realtime_desired_count
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = 30
  propagate_tags                    = "SERVICE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = concat(aws_security_group.realtime_task[*].id, var.security_group_ids)
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.realtime[0].arn
    container_name   = "pgqueue"
    container_port   = local.realtime_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags       = local.tags
  depends_on = [aws_lb_listener.realtime, aws_iam_role_policy.realtime_execution, aws_secretsmanager_secret_version.settings]

  lifecycle {
    precondition {
      condition     = var.realtime_image != null
      error_message = "realtime_enabled needs realtime_image: a container image with pgqueue (the repository's Dockerfile)."
    }
    precondition {
      condition     = var.vpc_id != null && length(var.subnet_ids) > 0
      error_message = "realtime_enabled needs vpc_id and subnet_ids (private subnets with a route to ECR, Secrets Manager, CloudWatch Logs and the database)."
    }
  }
}
