# pgqueue inside a VPC: both functions in private subnets next to a new RDS for PostgreSQL
# instance behind RDS Proxy. Functions in a VPC have no internet access of their own:
# - the executor calls your SDK apps over HTTPS, which needs the NAT gateway (use_nat_gateway)
#   unless every app is reachable inside the VPC;
# - the AWS APIs the functions call (Secrets Manager for the settings, Lambda for kicks and
#   self-invocation, EventBridge Scheduler for one-time wake-ups) are reached through interface
#   endpoints (create_vpc_endpoints), with or without NAT. Without either, those calls time out:
#   pgqueue's AWS clients give up after a few seconds instead of hanging (pgqueue/serverless/aws.py).
# Build the package first: python scripts/build_lambda.py --arch arm64

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region"
  type        = string
  default     = "eu-west-1"
}

variable "lambda_package_path" {
  description = "The zip built by scripts/build_lambda.py for the architecture below (null: the repository's dist/pgqueue-lambda-arm64.zip)"
  type        = string
  default     = null
}

variable "vpc_cidr" {
  description = "Address range of the VPC"
  type        = string
  default     = "10.42.0.0/16"
}

variable "use_nat_gateway" {
  description = "A NAT gateway (in a public subnet) for calls to SDK apps on the internet"
  type        = bool
  default     = true
}

variable "create_vpc_endpoints" {
  description = "Interface endpoints for Secrets Manager, Lambda and EventBridge Scheduler"
  type        = bool
  default     = true
}

locals {
  name = "pgqueue-vpc"
  # two availability zones: RDS needs subnets in at least two
  azs = ["${var.region}a", "${var.region}b"]
  # the AWS services the functions call from inside the VPC
  endpoint_services = var.create_vpc_endpoints ? toset(["secretsmanager", "lambda", "scheduler"]) : toset([])
  tags              = { Project = "pgqueue-example" }
}

################################################################################
# Network: private subnets for the functions and the database, a public one for the NAT gateway
################################################################################

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # private DNS names of the interface endpoints
  tags                 = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "private" {
  count = length(local.azs)

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, count.index)
  tags              = merge(local.tags, { Name = "${local.name}-private-${local.azs[count.index]}" })
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-private" })
}

resource "aws_route_table_association" "private" {
  count = length(aws_subnet.private)

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_subnet" "public" {
  count = var.use_nat_gateway ? 1 : 0

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[0]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, 100)
  tags              = merge(local.tags, { Name = "${local.name}-public" })
}

resource "aws_internet_gateway" "this" {
  count = var.use_nat_gateway ? 1 : 0

  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.name })
}

resource "aws_route_table" "public" {
  count = var.use_nat_gateway ? 1 : 0

  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-public" })
}

resource "aws_route" "public_internet" {
  count = var.use_nat_gateway ? 1 : 0

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count = var.use_nat_gateway ? 1 : 0

  subnet_id      = aws_subnet.public[0].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_eip" "nat" {
  count = var.use_nat_gateway ? 1 : 0

  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.name}-nat" })
}

resource "aws_nat_gateway" "this" {
  count = var.use_nat_gateway ? 1 : 0

  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  tags          = merge(local.tags, { Name = local.name })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route" "private_nat" {
  count = var.use_nat_gateway ? 1 : 0

  route_table_id         = aws_route_table.private.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

################################################################################
# Interface endpoints: AWS APIs without leaving the VPC
################################################################################

resource "aws_security_group" "endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  name_prefix = "${local.name}-endpoints-"
  description = "HTTPS from inside the VPC to the AWS service endpoints"
  vpc_id      = aws_vpc.this.id

  ingress {
    description = "HTTPS from the VPC"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }

  tags = local.tags
}

resource "aws_vpc_endpoint" "this" {
  for_each = local.endpoint_services

  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${var.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = aws_security_group.endpoints[*].id
  tags                = merge(local.tags, { Name = "${local.name}-${each.key}" })
}

################################################################################
# pgqueue
################################################################################

module "pgqueue" {
  source = "../.."

  name                = local.name
  lambda_package_path = coalesce(var.lambda_package_path, "${path.module}/../../../dist/pgqueue-lambda-arm64.zip")
  architecture        = "arm64"

  vpc_id          = aws_vpc.this.id
  subnet_ids      = aws_subnet.private[*].id
  create_database = true
  # create_rds_proxy = true (the default): Lambda concurrency x pool size connections, multiplexed.
  # On accounts with a concurrency quota above 10, cap the connections further with
  # api_reserved_concurrency (2 each) and executor_reserved_concurrency (executor_pool_size each).

  tags = local.tags

  # the functions' first calls to AWS APIs need the endpoints (or the NAT route) in place
  depends_on = [aws_vpc_endpoint.this, aws_route.private_nat, aws_route_table_association.private]
}
