################################################################################
# HTTP API at the origin root: every method and path goes to the API function
# (SDKs call <origin>/e/{key}, <origin>/fn/register, ...; no stage prefix)
################################################################################

resource "aws_apigatewayv2_api" "this" {
  count = var.api_frontend == "http_api" ? 1 : 0

  name          = var.name
  description   = "pgqueue Event API, SDK endpoints and REST API"
  protocol_type = "HTTP"
  tags          = local.tags
}

resource "aws_apigatewayv2_integration" "api" {
  count = var.api_frontend == "http_api" ? 1 : 0

  api_id                 = aws_apigatewayv2_api.this[0].id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_alias.api.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "default" {
  count = var.api_frontend == "http_api" ? 1 : 0

  api_id    = aws_apigatewayv2_api.this[0].id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.api[0].id}"
}

resource "aws_apigatewayv2_stage" "default" {
  count = var.api_frontend == "http_api" ? 1 : 0

  api_id      = aws_apigatewayv2_api.this[0].id
  name        = "$default"
  auto_deploy = true
  tags        = local.tags
}

resource "aws_lambda_permission" "api_gateway" {
  count = var.api_frontend == "http_api" ? 1 : 0

  statement_id  = "AllowHttpApiInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.api.function_name
  qualifier     = aws_lambda_alias.api.name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this[0].execution_arn}/*/*"
}

################################################################################
# Or a Lambda Function URL on the alias (no 30 s integration limit)
################################################################################

resource "aws_lambda_function_url" "api" {
  count = var.api_frontend == "function_url" ? 1 : 0

  function_name      = aws_lambda_function.api.function_name
  qualifier          = aws_lambda_alias.api.name
  authorization_type = "NONE"
}

resource "aws_lambda_permission" "function_url" {
  count = var.api_frontend == "function_url" ? 1 : 0

  statement_id           = "AllowPublicFunctionUrl"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.api.function_name
  qualifier              = aws_lambda_alias.api.name
  principal              = "*"
  function_url_auth_type = "NONE"
}

# Function URLs created since October 2025 also need lambda:InvokeFunction, or they answer 403.
# AWS scopes that grant to URL calls with the condition lambda:InvokedViaFunctionUrl, which the
# AWS provider sets only from 6.28 on (`invoked_via_function_url = true`). This module supports
# 5.x too, so the grant here is unscoped: anyone may also invoke the alias directly, which reaches
# the same app with the same authentication as the URL (event keys, signing key). With provider
# >= 6.28, set function_url_invoke_permission = false and add the scoped grant (README).
resource "aws_lambda_permission" "function_url_invoke" {
  count = var.api_frontend == "function_url" && var.function_url_invoke_permission ? 1 : 0

  statement_id  = "AllowPublicFunctionUrlInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.api.function_name
  qualifier     = aws_lambda_alias.api.name
  principal     = "*"
}
