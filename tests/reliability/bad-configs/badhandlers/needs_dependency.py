"""A handler module whose dependency is not installed where the configuration is validated."""

from typing import Any

import esm_reliability_missing_dependency  # type: ignore[import-not-found]


def handle(event: Any, context: Any) -> None:
    """Never reached: the import above fails."""
    esm_reliability_missing_dependency.process(event)
