"""The narrow interface every target implements (DESIGN.md rule 6).

An `Invoker` takes one serialized event and returns what the function answered. A function
error (the function ran and failed, or timed out) is a value, `InvokeResult.function_error`;
only failures to *reach* the function raise (`esm.errors.InvokeError` and subclasses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Invocation", "InvokeResult", "Invoker"]


@dataclass(frozen=True, slots=True)
class Invocation:
    """One synchronous invocation request.

    `payload` is the serialized event JSON (what the Lambda Invoke API and HTTP targets send);
    `event` is the same event as Python objects, handed to in-process handlers without a
    parse round trip. Both describe the same event; `len(payload)` is the size AWS limits to 6 MB.
    """

    payload: bytes
    event: Any
    request_id: str


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """What a function answered.

    - `function_error`: None on success, else Lambda's `FunctionError` value (`"Unhandled"` for
      a thrown error or a timeout).
    - `payload`: the raw response bytes (empty for a handler that returned nothing).
    - `status_code`: the Invoke API's status (200 for function errors too, as in AWS).
    - `executed_version`: `$LATEST` or the version that ran.
    """

    function_error: str | None
    payload: bytes
    status_code: int = 200
    executed_version: str = "$LATEST"

    @property
    def ok(self) -> bool:
        """True when the function returned without a function error."""
        return self.function_error is None


class Invoker(Protocol):
    """A target function. Implementations are async context managers that own their clients."""

    name: str
    """The function's name as configured (used in logs, metrics and failure records)."""

    timeout: float | None
    """The function timeout in seconds (Lambda's `Timeout`); None if it could not be learned."""

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        """Invoke synchronously; raise InvokeError subclasses only when the function was not reached."""
        ...

    async def __aenter__(self) -> Invoker:
        """Open clients, import handlers, learn the timeout; errors here are configuration errors."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """Close what __aenter__ opened."""
        ...
