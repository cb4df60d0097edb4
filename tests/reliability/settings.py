"""Knobs of the reliability suite, read from the environment (`make soak` raises them)."""

from __future__ import annotations

import os

__all__ = ["env_int"]


def env_int(name: str, default: int) -> int:
    """A positive integer from the environment variable `name`, else `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    return value
