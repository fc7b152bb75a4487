terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x and 6.x: checked in CI with 5.100 (terraform validate and mocked plans, see
      # tests/serverless/test_terraform.py); 7.x is unknown, so excluded until tested.
      version = ">= 5.40, < 7"
    }
  }
}
