"""structlog configured once: JSON lines by default, a console renderer on a terminal.

Components receive a bound logger (`get_logger().bind(...)`) and log snake_case past-tense events
with values as keyword arguments (DESIGN.md rule 9). Event payloads and credentials are never
logged: components log ids, counts, sizes and error types.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import FilteringBoundLogger

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: Literal["auto", "json", "console"] | str = "auto") -> None:
    """Configure structlog for the process: level filtering, timestamps, JSON or console output."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if not use_console else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: object) -> FilteringBoundLogger:
    """A logger with the given context bound (e.g. the mapping's UUID and function)."""
    logger: FilteringBoundLogger = structlog.get_logger().bind(**bound)
    return logger
