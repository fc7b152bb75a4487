# The examples planned and applied against a mocked AWS provider. Assertions can see an
# example's own resources and the module's outputs; the module's internals for the same
# settings are asserted in module.tftest.hcl.

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
  mock_resource "aws_lambda_alias" {
    defaults = {
      arn        = "arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-mock:live"
      invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:pgqueue-mock:live/invocations"
    }
  }
}

variables {
  lambda_package_path = "tests/fixtures/lambda-stub.zip"
}

# ids the assertions compare, known at plan time
override_resource {
  override_during = plan
  target          = aws_route_table.private
  values = {
    id = "rtb-0private00000000"
  }
}

override_resource {
  override_during = plan
  target          = aws_nat_gateway.this
  values = {
    id = "nat-0123456789abcdef0"
  }
}

override_resource {
  override_during = plan
  target          = aws_subnet.private[0]
  values = {
    id = "subnet-0private0000000a"
  }
}

override_resource {
  override_during = plan
  target          = aws_subnet.private[1]
  values = {
    id = "subnet-0private0000000b"
  }
}

run "basic" {
  command = plan

  module {
    source = "./examples/basic"
  }

  variables {
    database_url = "postgresql://pgqueue:secret@db.example.com:5432/pgqueue?sslmode=require"
  }

  assert {
    condition     = output.api_url != "" && output.settings_secret_arn != ""
    error_message = "the example answers with the API origin and the secret holding the keys"
  }
}

run "vpc_with_nat_and_endpoints" {
  command = plan

  module {
    source = "./examples/vpc"
  }

  assert {
    condition     = toset(keys(aws_vpc_endpoint.this)) == toset(["secretsmanager", "lambda", "scheduler"])
    error_message = "endpoints for the settings, kicks and self-invocation, and one-time schedules"
  }
  assert {
    condition = alltrue([
      for endpoint in aws_vpc_endpoint.this :
      endpoint.vpc_endpoint_type == "Interface" && endpoint.private_dns_enabled && endpoint.subnet_ids == toset(aws_subnet.private[*].id)
    ])
    error_message = "interface endpoints with private DNS in the functions' subnets"
  }
  assert {
    condition     = aws_vpc_endpoint.this["scheduler"].service_name == "com.amazonaws.eu-west-1.scheduler"
    error_message = "service names follow the region"
  }
  assert {
    condition     = length(aws_nat_gateway.this) == 1 && aws_route.private_nat[0].nat_gateway_id == aws_nat_gateway.this[0].id && aws_route.private_nat[0].route_table_id == aws_route_table.private.id
    error_message = "the private subnets reach SDK apps on the internet through NAT"
  }
  assert {
    condition     = output.db_proxy_endpoint != null
    error_message = "the example creates the database behind RDS Proxy"
  }
}

run "vpc_with_endpoints_only" {
  command = plan

  module {
    source = "./examples/vpc"
  }

  variables {
    use_nat_gateway = false
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 0 && length(aws_internet_gateway.this) == 0 && length(aws_vpc_endpoint.this) == 3
    error_message = "without NAT only the AWS APIs are reachable, through the endpoints"
  }
}
