"""Helm chart tests: deploy/helm/esm rendered, validated and linted offline."""
