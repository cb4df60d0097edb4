"""Conformance tests: esm's output compared with real AWS recordings (../shared/aws-recordings)."""
