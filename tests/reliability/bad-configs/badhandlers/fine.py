"""A handler module that imports and has a handler (other fields of its configuration are wrong)."""

from typing import Any


def handle(event: Any, context: Any) -> None:
    """Accept every batch."""
