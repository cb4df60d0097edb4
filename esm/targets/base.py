"""The narrow interface every target implements (DESIGN.md rule 6).

An `Invoker` takes one serialized event and returns what the function answered. A function
error (the function ran and failed, or timed out) is a value, `InvokeResult.function_error`;
only failures to *reach* the function raise (`esm.errors.InvokeError` and subclasses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Invocation", "InvokeResult", "Invoker"]


class Invocation:
    """One synchronous invocation request.

    `payload` is the serialized event JSON (what the Lambda Invoke API and HTTP targets send);
    `event` is the same event as Python objects, handed to in-process handlers without a
    parse round trip. Both describe the same event; `size`, which is `len(payload)`, is the size
    AWS limits to 6 MB.

    The payload may be given as a function that writes it, with its exact size: it is then
    written the first time a target asks for it (an in-process handler never does).
    """

    __slots__ = ("_payload", "_write", "event", "request_id", "size")

    def __init__(
        self, payload: bytes | Callable[[], bytes], event: Any, request_id: str, size: int | None = None
    ) -> None:
        self.event = event
        self.request_id = request_id
        if isinstance(payload, bytes | bytearray | memoryview):
            self._payload: bytes | None = bytes(payload)
            self._write: Callable[[], bytes] | None = None
            self.size = len(self._payload)
        else:
            if size is None:
                raise ValueError("an Invocation with a deferred payload needs its size")
            self._payload = None
            self._write = payload
            self.size = size

    @property
    def payload(self) -> bytes:
        """The serialized event (written now, the first time, if it was deferred)."""
        payload = self._payload
        if payload is None:
            assert self._write is not None
            payload = self._payload = self._write()
            self._write = None
        return payload

    def __repr__(self) -> str:
        return f"Invocation(request_id={self.request_id!r}, size={self.size})"


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
