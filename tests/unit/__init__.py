"""Unit tests: the pure core, without I/O."""
