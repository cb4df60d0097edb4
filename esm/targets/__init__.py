"""Targets: in-process Python handlers, the AWS Lambda Invoke API, and HTTP endpoints."""
