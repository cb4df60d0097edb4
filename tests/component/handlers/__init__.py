"""Handler modules imported by the Python target's component tests."""
