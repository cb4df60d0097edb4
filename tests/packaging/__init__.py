"""Packaging tests: the wheel in a clean virtual environment, and the Dockerfile read statically."""
