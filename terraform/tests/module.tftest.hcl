# The module planned and applied against a mocked AWS provider (no account, no network): the
# provider's real schema checks every argument, the mock fills in computed values. Run from
# terraform/ after `terraform init` (tests/serverless/test_terraform.py does both).

mock_provider "aws" {
  # mocked values during plan too (Terraform >= 1.11): every run is a plan, nothing to tear down
  override_during = plan

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
  # the roles and policies validate their documents as JSON
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\": \"2012-10-17\", \"Statement\": []}"
    }
  }
  # references between resources are validated as ARNs when applied
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/pgqueue-mock"
    }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/pgqueue-mock"
    }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = {
      arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgqueue-settings-AbCdEf"
      id  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgqueue-settings-AbCdEf"
    }
  }
  mock_resource "aws_apigatewayv2_api" {
    defaults = {
      execution_arn = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234"
      api_endpoint  = "https://abcdef1234.execute-api.eu-west-1.amazonaws.com"
    }
  }
  mock_resource "aws_lambda_function_url" {
    defaults = {
      function_url = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-1.on.aws/"
    }
  }
  mock_resource "aws_lambda_function" {
    defaults = {
      arn        = "arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-mock"
      invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-mock/invocations"
      version    = "7"
    }
  }
  mock_resource "aws_db_proxy" {
    defaults = {
      endpoint = "pgqueue-proxy.proxy-abcdefghijkl.eu-west-1.rds.amazonaws.com"
    }
  }
  mock_resource "aws_db_instance" {
    defaults = {
      address = "pgqueue-db.abcdefghijkl.eu-west-1.rds.amazonaws.com"
    }
  }
  # realtime.tf
  mock_resource "aws_lb" {
    defaults = {
      arn      = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/pgqueue-rt/0123456789abcdef"
      dns_name = "pgqueue-rt-1234567890.eu-west-1.elb.amazonaws.com"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/pgqueue-rt/0123456789abcdef"
    }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = {
      arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/pgqueue-realtime"
      id  = "arn:aws:ecs:eu-west-1:123456789012:cluster/pgqueue-realtime"
    }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/pgqueue-realtime:1"
    }
  }
  mock_resource "aws_lambda_alias" {
    defaults = {
      arn        = "arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-mock:live"
      invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-mock:live/invocations"
    }
  }
}

# distinct ARNs for the two functions and their aliases, so an assertion can tell them apart
override_resource {
  override_during = plan
  target          = aws_lambda_function.executor
  values = {
    arn     = "arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-executor"
    version = "12"
  }
}

override_resource {
  override_during = plan
  target          = aws_lambda_alias.executor
  values = {
    arn        = "arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-executor:live"
    invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-executor:live/invocations"
  }
}

override_resource {
  override_during = plan
  target          = aws_lambda_function.api
  values = {
    arn     = "arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-api"
    version = "3"
  }
}

override_resource {
  override_during = plan
  target          = aws_lambda_alias.api
  values = {
    arn        = "arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-api:live"
    invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-api:live/invocations"
  }
}

variables {
  lambda_package_path = "tests/fixtures/lambda-stub.zip"
  database_url        = "postgresql://pgqueue:secret@db.example.com:5432/pgqueue?sslmode=require"
}

# -- the defaults (what examples/basic deploys) -----------------------------------------------------

run "defaults" {
  command = plan

  assert {
    condition     = aws_lambda_function.executor.publish && aws_lambda_function.api.publish
    error_message = "both functions must publish versions"
  }
  assert {
    condition     = aws_lambda_invocation.migrate[0].qualifier == aws_lambda_function.executor.version
    error_message = "migrations must run on the version just published, not on the alias"
  }
  assert {
    condition     = aws_lambda_alias.executor.function_version == aws_lambda_function.executor.version && aws_lambda_alias.api.function_version == aws_lambda_function.api.version
    error_message = "the aliases must follow the published versions"
  }
  assert {
    condition     = aws_scheduler_schedule.tick.target[0].arn == aws_lambda_alias.executor.arn
    error_message = "the schedule must invoke the executor's alias"
  }
  assert {
    condition     = aws_apigatewayv2_integration.api[0].integration_uri == aws_lambda_alias.api.invoke_arn
    error_message = "the HTTP API must invoke the API function's alias"
  }
  assert {
    condition     = aws_lambda_permission.api_gateway[0].qualifier == aws_lambda_alias.api.name
    error_message = "the HTTP API's permission must be on the alias it invokes"
  }
  assert {
    condition     = aws_lambda_function_event_invoke_config.executor.qualifier == aws_lambda_alias.executor.name && aws_lambda_function_event_invoke_config.executor.maximum_retry_attempts == 0
    error_message = "kicks reach the alias: its invoke config must turn Lambda's retries off"
  }
  assert {
    condition     = data.aws_iam_policy_document.scheduler.statement[0].resources == toset([aws_lambda_alias.executor.arn]) && data.aws_iam_policy_document.api.statement[1].resources == toset([aws_lambda_alias.executor.arn])
    error_message = "the scheduler role and the API may invoke the executor's alias"
  }
  assert {
    condition     = coalesce(aws_lambda_function.executor.reserved_concurrent_executions, -1) == -1 && coalesce(aws_lambda_function.api.reserved_concurrent_executions, -1) == -1
    error_message = "no reserved concurrency by default (accounts with a quota of 10 refuse any)"
  }
  assert {
    condition     = length(aws_lambda_function_url.api) == 0 && length(aws_lambda_permission.function_url_invoke) == 0
    error_message = "the default frontend is the HTTP API"
  }

  # the environment the engine reads

  assert {
    condition     = aws_lambda_function.executor.environment[0].variables["PGQUEUE_KICK_FUNCTION"] == "pgqueue-executor:live" && aws_lambda_function.api.environment[0].variables["PGQUEUE_KICK_FUNCTION"] == "pgqueue-executor:live"
    error_message = "kicks and the executor's own wake-ups go to the executor's alias"
  }
  assert {
    condition     = aws_lambda_function.executor.environment[0].variables["PGQUEUE_SECRET_ARN"] == aws_secretsmanager_secret.settings.arn && aws_lambda_function.api.environment[0].variables["PGQUEUE_POOLER"] == "1"
    error_message = "both functions read the module's settings secret and run in pooler mode"
  }
  assert {
    condition = (
      startswith(jsondecode(aws_secretsmanager_secret_version.settings.secret_string)["PGQUEUE_SIGNING_KEY"], "signkey-prod-")
      && jsondecode(aws_secretsmanager_secret_version.settings.secret_string)["PGQUEUE_EVENT_KEYS"] != ""
      && jsondecode(aws_secretsmanager_secret_version.settings.secret_string)["DATABASE_URL"] == var.database_url
    )
    error_message = "the settings secret holds generated keys and the database URL"
  }
  assert {
    condition     = data.aws_iam_policy_document.executor_wakeups.statement[0].resources == toset([aws_lambda_alias.executor.arn])
    error_message = "the executor may invoke its own alias"
  }
  assert {
    condition     = length(data.aws_iam_policy_document.executor_wakeups.statement) == 1
    error_message = "invoking its own alias is all the executor's wake-up policy allows"
  }

  # alarms
  assert {
    condition     = toset(keys(aws_cloudwatch_metric_alarm.throttles)) == toset(["api", "executor"])
    error_message = "both functions' throttles alarm"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.executor_duration.threshold == 300 * 1000 * 0.99
    error_message = "the duration alarm sits at 99% of the executor timeout"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.api_5xx.namespace == "AWS/ApiGateway" && aws_cloudwatch_metric_alarm.api_5xx.metric_name == "5xx"
    error_message = "with the HTTP API, 5xx comes from API Gateway"
  }
}

# -- Function URL -----------------------------------------------------------------------------------

run "function_url_on_the_alias_with_both_permissions" {
  command = plan

  variables {
    api_frontend = "function_url"
  }

  assert {
    condition     = aws_lambda_function_url.api[0].qualifier == aws_lambda_alias.api.name && aws_lambda_function_url.api[0].authorization_type == "NONE"
    error_message = "the URL belongs to the alias"
  }
  assert {
    condition = (
      aws_lambda_permission.function_url[0].action == "lambda:InvokeFunctionUrl"
      && aws_lambda_permission.function_url[0].function_url_auth_type == "NONE"
      && aws_lambda_permission.function_url[0].qualifier == aws_lambda_alias.api.name
    )
    error_message = "lambda:InvokeFunctionUrl for everyone on the alias"
  }
  assert {
    condition = (
      aws_lambda_permission.function_url_invoke[0].action == "lambda:InvokeFunction"
      && aws_lambda_permission.function_url_invoke[0].principal == "*"
      && aws_lambda_permission.function_url_invoke[0].qualifier == aws_lambda_alias.api.name
    )
    error_message = "Function URLs since October 2025 also need lambda:InvokeFunction, or they answer 403"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.api_5xx.metric_name == "Url5xxCount" && length(aws_apigatewayv2_api.this) == 0
    error_message = "with a Function URL, 5xx comes from Lambda's URL metrics"
  }
}

run "function_url_without_the_unscoped_grant" {
  command = plan

  variables {
    api_frontend                   = "function_url"
    function_url_invoke_permission = false
  }

  assert {
    condition     = length(aws_lambda_permission.function_url_invoke) == 0 && length(aws_lambda_permission.function_url) == 1
    error_message = "function_url_invoke_permission = false leaves the grant to you (provider >= 6.28)"
  }
}

# -- settings from your own secret ------------------------------------------------------------------

run "a_secret_with_only_a_url_gets_the_keys_from_the_module_secret" {
  command = plan

  variables {
    database_url = null
    secret_arn   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgqueue-db-url-AbCdEf"
    signing_key  = "signkey-prod-0123456789abcdef0123456789abcdef"
    event_keys   = ["first-event-key", "second-event-key"]
  }

  assert {
    condition     = aws_lambda_function.api.environment[0].variables["PGQUEUE_SECRET_ARN"] == "${aws_secretsmanager_secret.settings.arn},${var.secret_arn}"
    error_message = "the module's secret first, yours after it (yours wins)"
  }
  assert {
    condition = (
      jsondecode(aws_secretsmanager_secret_version.settings.secret_string) == {
        PGQUEUE_SIGNING_KEY = "signkey-prod-0123456789abcdef0123456789abcdef"
        PGQUEUE_EVENT_KEYS  = "first-event-key,second-event-key"
      }
    )
    error_message = "signing_key and event_keys are not ignored with secret_arn; no DATABASE_URL without one"
  }
  assert {
    condition     = data.aws_iam_policy_document.read_settings.statement[0].resources == toset([aws_secretsmanager_secret.settings.arn, var.secret_arn])
    error_message = "both functions may read both secrets"
  }
  assert {
    condition     = length(terraform_data.generated_signing_key) == 0 && length(terraform_data.generated_event_key) == 0
    error_message = "nothing is generated when the keys are given"
  }
}

run "an_ssm_parameter_comes_after_the_module_secret" {
  command = plan

  variables {
    database_url      = null
    ssm_parameter_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/pgqueue/settings"
    kms_key_arn       = "arn:aws:kms:eu-west-1:123456789012:key/0b0e5b4e-0000-4000-8000-000000000000"
  }

  assert {
    condition = (
      aws_lambda_function.executor.environment[0].variables["PGQUEUE_SSM_PARAMETER"] == var.ssm_parameter_arn
      && aws_lambda_function.executor.environment[0].variables["PGQUEUE_SECRET_ARN"] == aws_secretsmanager_secret.settings.arn
    )
    error_message = "the parameter is read after the module's secret"
  }
  assert {
    condition     = aws_secretsmanager_secret.settings.kms_key_id == var.kms_key_arn
    error_message = "the module's secret is encrypted with the customer key"
  }
}

run "no_database_at_all_is_refused" {
  command = plan

  variables {
    database_url = null
  }

  expect_failures = [aws_secretsmanager_secret_version.settings]
}

run "secret_and_parameter_together_are_refused" {
  command = plan

  variables {
    secret_arn        = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:a-AbCdEf"
    ssm_parameter_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/b"
  }

  expect_failures = [aws_secretsmanager_secret_version.settings]
}

# -- names, concurrency ------------------------------------------------------------------------------

run "a_40_character_name_and_reserved_concurrency" {
  command = plan

  variables {
    name                          = "acme-payments-production-eu-west-queue-1"
    executor_reserved_concurrency = 5
    api_reserved_concurrency      = 20
  }

  assert {
    condition = alltrue([
      for prefix in [aws_iam_role.api.name_prefix, aws_iam_role.executor.name_prefix, aws_iam_role.scheduler.name_prefix] :
      length(prefix) <= 38
    ])
    error_message = "IAM allows 38 characters of name_prefix"
  }
  assert {
    condition     = aws_lambda_function.executor.function_name == "acme-payments-production-eu-west-queue-1-executor"
    error_message = "function names keep the full name"
  }
  assert {
    condition     = aws_lambda_function.executor.reserved_concurrent_executions == 5 && aws_lambda_function.api.reserved_concurrent_executions == 20
    error_message = "reserved concurrency is passed through"
  }
}

run "a_41_character_name_zero_reserved_concurrency_and_python311_are_refused" {
  command = plan

  variables {
    name                          = "acme-payments-production-eu-west-queue-12"
    executor_reserved_concurrency = 0
    api_reserved_concurrency      = 0
    runtime                       = "python3.11"
  }

  expect_failures = [var.name, var.executor_reserved_concurrency, var.api_reserved_concurrency, var.runtime]
}

# -- a created database (what examples/vpc deploys) -------------------------------------------------

run "created_database_behind_the_proxy_with_a_customer_key" {
  command = plan

  variables {
    database_url    = null
    create_database = true
    vpc_id          = "vpc-0123456789abcdef0"
    subnet_ids      = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
    kms_key_arn     = "arn:aws:kms:eu-west-1:123456789012:key/0b0e5b4e-0000-4000-8000-000000000000"
  }

  assert {
    condition     = aws_lambda_function.executor.vpc_config[0].subnet_ids == toset(var.subnet_ids) && length(aws_iam_role_policy_attachment.executor_vpc) == 1
    error_message = "the functions run in the private subnets"
  }
  assert {
    condition     = strcontains(jsondecode(aws_secretsmanager_secret_version.settings.secret_string)["DATABASE_URL"], "@${aws_db_proxy.this[0].endpoint}:5432/")
    error_message = "the functions reach the database through the proxy"
  }
  assert {
    condition     = data.aws_iam_policy_document.rds_proxy[0].statement[1].actions == toset(["kms:Decrypt"]) && data.aws_iam_policy_document.rds_proxy[0].statement[1].resources == toset([var.kms_key_arn])
    error_message = "the proxy decrypts its credentials secret with the customer key"
  }
  assert {
    condition     = startswith(aws_db_instance.this[0].final_snapshot_identifier, "pgqueue-db-final-") && length(aws_db_instance.this[0].final_snapshot_identifier) > length("pgqueue-db-final-")
    error_message = "the final snapshot is named per instance"
  }
  assert {
    condition     = aws_db_instance.this[0].password == jsondecode(aws_secretsmanager_secret_version.db_credentials[0].secret_string)["password"]
    error_message = "the instance and the proxy share the generated password"
  }
}

# -- realtime: `pgqueue realtime` on ECS Fargate behind a load balancer ------------------------------

run "realtime_beside_a_created_database" {
  command = plan

  variables {
    create_database          = true
    vpc_id                   = "vpc-0123456789abcdef0"
    subnet_ids               = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    realtime_enabled         = true
    realtime_image           = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pgqueue:1.0"
    realtime_lb_subnet_ids   = ["subnet-0aaaaaaaaaaaaaaa0", "subnet-0aaaaaaaaaaaaaaa1"]
    realtime_certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
    realtime_domain_name     = "realtime.example.com"
    realtime_desired_count   = 2
  }

  assert {
    condition     = output.realtime_url == "https://realtime.example.com" && aws_lambda_function.api.environment[0].variables["PGQUEUE_REALTIME_URL"] == "https://realtime.example.com"
    error_message = "the API sends SSE subscribers to the realtime service"
  }
  assert {
    condition     = !contains(keys(aws_lambda_function.executor.environment[0].variables), "PGQUEUE_REALTIME_URL")
    error_message = "only the API answers subscribers"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.realtime[0].container_definitions)[0].command == ["realtime"] && jsondecode(aws_ecs_task_definition.realtime[0].container_definitions)[0].image == var.realtime_image
    error_message = "the tasks run `pgqueue realtime` from the given image"
  }
  assert {
    condition     = [for s in jsondecode(aws_ecs_task_definition.realtime[0].container_definitions)[0].secrets : s.valueFrom] == [aws_secretsmanager_secret.settings.arn]
    error_message = "the tasks read the module's settings secret, as the functions do"
  }
  assert {
    condition     = contains([for e in jsondecode(aws_ecs_task_definition.realtime[0].container_definitions)[0].environment : "${e.name}=${e.value}"], "PGQUEUE_POOLER=1")
    error_message = "the tasks go through the proxy like the functions"
  }
  assert {
    condition     = strcontains(jsondecode(aws_secretsmanager_secret_version.settings.secret_string)["PGQUEUE_REALTIME_LISTEN_URL"], aws_db_instance.this[0].address)
    error_message = "the tasks LISTEN on the instance itself, not through RDS Proxy"
  }
  assert {
    condition     = strcontains(jsondecode(aws_secretsmanager_secret_version.settings.secret_string)["DATABASE_URL"], aws_db_proxy.this[0].endpoint)
    error_message = "the pools still go through the proxy"
  }
  assert {
    condition     = aws_lb_listener.realtime[0].protocol == "HTTPS" && aws_lb_listener.realtime[0].port == 443 && aws_lb.realtime[0].idle_timeout == 120
    error_message = "HTTPS with the certificate; idle connections outlive the keep-alives"
  }
  assert {
    condition     = aws_ecs_service.realtime[0].desired_count == 2 && aws_ecs_service.realtime[0].launch_type == "FARGATE" && aws_ecs_service.realtime[0].network_configuration[0].assign_public_ip == false
    error_message = "private Fargate tasks, as many as asked"
  }
  assert {
    condition     = aws_lb_target_group.realtime[0].health_check[0].path == "/health" && aws_lb_target_group.realtime[0].target_type == "ip"
    error_message = "the load balancer checks /health on each task"
  }
  assert {
    condition     = data.aws_iam_policy_document.realtime_execution.statement[0].resources == toset([aws_secretsmanager_secret.settings.arn])
    error_message = "the tasks' execution role reads only the settings secret"
  }
  assert {
    condition     = length(aws_iam_role.realtime_execution[0].name_prefix) <= 38
    error_message = "IAM allows 38 characters of name_prefix"
  }
}

run "realtime_reads_your_secret_and_parameter_after_the_module_s" {
  command = plan

  variables {
    database_url           = null
    secret_arn             = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgqueue-db-AbCdEf"
    vpc_id                 = "vpc-0123456789abcdef0"
    subnet_ids             = ["subnet-0123456789abcdef0"]
    realtime_enabled       = true
    realtime_image         = "ghcr.io/acme/pgqueue:1.0"
    realtime_lb_subnet_ids = ["subnet-0aaaaaaaaaaaaaaa0", "subnet-0aaaaaaaaaaaaaaa1"]
    realtime_extra_environment = {
      PGQUEUE_REALTIME_LISTEN_URL = "postgresql://pgqueue@db.internal:5432/pgqueue"
    }
  }

  assert {
    condition = [for s in jsondecode(aws_ecs_task_definition.realtime[0].container_definitions)[0].secrets : "${s.name}=${s.valueFrom}"] == [
      "PGQUEUE_SECRET_VALUE_1=${aws_secretsmanager_secret.settings.arn}",
      "PGQUEUE_SECRET_VALUE_2=${var.secret_arn}",
    ]
    error_message = "your secret comes after the module's, as for the functions"
  }
  assert {
    condition     = startswith(output.realtime_url, "http://") && aws_lb_listener.realtime[0].port == 80
    error_message = "without a certificate: plain HTTP on 80"
  }
  assert {
    condition     = contains([for e in jsondecode(aws_ecs_task_definition.realtime[0].container_definitions)[0].environment : e.name], "PGQUEUE_REALTIME_LISTEN_URL")
    error_message = "extra settings reach the tasks"
  }
}

run "realtime_is_off_by_default" {
  command = plan

  assert {
    condition     = length(aws_ecs_service.realtime) == 0 && length(aws_lb.realtime) == 0 && output.realtime_url == null
    error_message = "no realtime service unless asked"
  }
  assert {
    condition     = !contains(keys(aws_lambda_function.api.environment[0].variables), "PGQUEUE_REALTIME_URL")
    error_message = "the API names no realtime service it does not have"
  }
}

run "realtime_without_an_image_is_refused" {
  command = plan

  variables {
    vpc_id                 = "vpc-0123456789abcdef0"
    subnet_ids             = ["subnet-0123456789abcdef0"]
    realtime_enabled       = true
    realtime_lb_subnet_ids = ["subnet-0aaaaaaaaaaaaaaa0", "subnet-0aaaaaaaaaaaaaaa1"]
  }

  expect_failures = [aws_ecs_service.realtime]
}

run "realtime_with_one_load_balancer_subnet_is_refused" {
  command = plan

  variables {
    vpc_id                 = "vpc-0123456789abcdef0"
    subnet_ids             = ["subnet-0123456789abcdef0"]
    realtime_enabled       = true
    realtime_image         = "ghcr.io/acme/pgqueue:1.0"
    realtime_lb_subnet_ids = ["subnet-0aaaaaaaaaaaaaaa0"]
  }

  expect_failures = [aws_lb.realtime]
}
