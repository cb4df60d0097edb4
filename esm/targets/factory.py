"""Builds the invoker for a configured function, by its kind (`handler`, `lambda` or `url`).

The one place that knows the concrete target classes: the engine sees only the `Invoker` protocol
(DESIGN.md rule 6), and each invoker receives only its slice of the configuration (rule 8).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from esm.aws import ClientFactory
from esm.config import FunctionConfig
from esm.targets.base import Invoker
from esm.targets.http import HttpInvoker
from esm.targets.lambda_ import LambdaInvoker
from esm.targets.python import PythonInvoker

__all__ = ["build_invoker"]


def build_invoker(
    name: str,
    fn: FunctionConfig,
    *,
    base_dir: Path,
    clients: ClientFactory,
    region: str,
    account: str,
    logger: structlog.typing.FilteringBoundLogger,
) -> Invoker:
    """The (not yet entered) invoker for function `name`.

    `base_dir` is the configuration file's folder, from which Python handlers are imported;
    `region` and `account` make the `invoked_function_arn` a Python handler sees.
    """
    if fn.kind == "handler":
        return PythonInvoker(name, fn, base_dir=base_dir, region=region, account=account, logger=logger)
    if fn.kind == "lambda":
        return LambdaInvoker(name, fn, clients=clients, logger=logger)
    return HttpInvoker(name, fn, logger=logger)
