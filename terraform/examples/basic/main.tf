# The smallest useful stack: both functions, an HTTP API at the origin root, the schedule, and a
# settings secret the module creates from an existing database's URL (Neon, Supabase, your own
# RDS...). Build the package first: python scripts/build_lambda.py --arch arm64

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

variable "database_url" {
  description = "PostgreSQL URL; through a pooler in transaction mode is fine"
  type        = string
  sensitive   = true
}

module "pgqueue" {
  source = "../.."

  name                = "pgqueue-basic"
  lambda_package_path = coalesce(var.lambda_package_path, "${path.module}/../../../dist/pgqueue-lambda-arm64.zip")
  architecture        = "arm64"
  database_url        = var.database_url

  tags = {
    Project = "pgqueue-example"
  }
}
