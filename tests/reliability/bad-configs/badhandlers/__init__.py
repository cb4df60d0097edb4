"""Handler modules the invalid configurations name (tests/reliability/test_bad_config.py)."""
