"""How AWS reads a function's response to a batch: the partial batch response (`batchItemFailures`).

With `FunctionResponseTypes: [ReportBatchItemFailures]` a function may answer
`{"batchItemFailures": [{"itemIdentifier": "<id>"}, ...]}` to fail only some records; the id is
the SQS `messageId` or the stream record's sequence number (ESM-SPEC.md §3.6). AWS is strict: a
response it cannot fully trust fails the whole batch. `parse_batch_response` classifies any
payload into one of three kinds; it is pure and never raises, so a misbehaving function can
never crash a consumer (DESIGN.md rule 3: a partial failure is a value). The SQS ack decision
(`esm.policy.decide_sqs`) and the stream checkpoint decision both build on it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["BatchResponse", "ResponseKind", "parse_batch_response"]


class ResponseKind(enum.StrEnum):
    """What a function's response means for the batch as a whole (ESM-SPEC.md §4.1, §4.2)."""

    SUCCESS = "success"
    """Every record succeeded."""
    PARTIAL = "partial"
    """The listed records failed; every other record succeeded."""
    INVALID = "invalid"
    """The response could not be trusted: the whole batch failed."""


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """A classified function response.

    - `kind`: SUCCESS, PARTIAL or INVALID.
    - `failed`: for PARTIAL, the reported `itemIdentifier`s in response order, each once;
      empty otherwise.
    - `reason`: for INVALID, why (for logs and metrics); empty otherwise.
    """

    kind: ResponseKind
    failed: tuple[str, ...] = ()
    reason: str = ""


_SUCCESS: Final = BatchResponse(ResponseKind.SUCCESS)
_WHITESPACE: Final = " \t\r\n"  # JSON's insignificant whitespace (RFC 8259 §2)


def _invalid(reason: str) -> BatchResponse:
    return BatchResponse(ResponseKind.INVALID, reason=reason)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_batch_response(payload: bytes, item_ids: Collection[str]) -> BatchResponse:
    """Classify a function's response payload against the ids of the batch it answered.

    `item_ids` are the batch's SQS message ids or stream sequence numbers. Never raises.

    | response                                        | kind    | source (ESM-SPEC.md)                   |
    | ----------------------------------------------- | ------- | -------------------------------------- |
    | empty payload (or only whitespace)              | SUCCESS | §4.1 "a null response" (no return)     |
    | `null`                                          | SUCCESS | §4.1 SQS-ERR; §4.2 recorded, streams   |
    | `{}`; an object without `batchItemFailures` (1) | SUCCESS | §4.1, recorded for SQS (2)             |
    | `[]`                                            | SUCCESS | §4.2 recorded, streams; §8 vector 5    |
    | `""` (a handler that returned an empty string)  | SUCCESS | recorded, Kinesis `empty_string_success` |
    | `{"batchItemFailures": []}` / `null`            | SUCCESS | §4.1, §4.2, §8 vector 5                |
    | each entry `{"itemIdentifier": "<id>"}` (3)     | PARTIAL | §3.6, §4.1                             |
    | not UTF-8; not JSON (`NaN`, `Infinity` too)     | INVALID | §4.1 "invalid JSON response"           |
    | a string, number, boolean or non-empty array    | INVALID | §3.6: the response is an object        |
    | `batchItemFailures` not an array                | INVALID | §3.6 shape                             |
    | an entry that is not an object                  | INVALID | §3.6 shape                             |
    | entry without `itemIdentifier` (`{"foo": 1}`)   | INVALID | §4.1; §8 vector 3 recorded (4)         |
    | `itemIdentifier` `""` or `null`                 | INVALID | §4.1; §4.2 recorded, streams           |
    | `itemIdentifier` not a string (`123`)           | INVALID | §4.2 recorded, streams; §8 vector 5    |
    | `itemIdentifier` not an id of this batch        | INVALID | §4.1 "not a message ID in the batch"   |

    (1) Other keys, such as a tumbling window's `state`, are ignored here.
    (2) `test_report_batch_item_failures_empty_json_batch_succeeds`.
    (3) `<id>` one of `item_ids`; extra keys beside `itemIdentifier` are ignored; an id listed
        twice counts once.
    (4) `test_report_batch_item_failures_invalid_result_json_batch_fails`.

    Three rows are esm's reading where AWS documents nothing exact: whitespace-only payloads (no
    AWS runtime sends one), objects with other keys but no `batchItemFailures` (read like `{}`),
    and non-object top-level values (the documented response is an object, so anything else is
    treated like invalid JSON). Every other row is documented or recorded AWS behaviour.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _invalid(f"response is not UTF-8: {exc.reason} at byte {exc.start}")
    if not text.strip(_WHITESPACE):
        return _SUCCESS
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError is a ValueError, as are NaN/Infinity and over-long integers.
        return _invalid(f"response is not valid JSON: {_shorten(str(exc))}")
    return _classify(document, item_ids)


def _classify(document: Any, item_ids: Collection[str]) -> BatchResponse:
    if document is None or document == [] or document == "":
        return _SUCCESS
    if not isinstance(document, dict):
        return _invalid(f"response is a JSON {_json_type(document)}, not an object")
    failures = document.get("batchItemFailures")
    if failures is None or failures == []:
        return _SUCCESS
    if not isinstance(failures, list):
        return _invalid(f"batchItemFailures is a JSON {_json_type(failures)}, not an array")
    ids = item_ids if isinstance(item_ids, set | frozenset) else frozenset(item_ids)
    failed: dict[str, None] = {}
    for index, entry in enumerate(failures):
        if not isinstance(entry, dict):
            return _invalid(f"batchItemFailures[{index}] is a JSON {_json_type(entry)}, not an object")
        if "itemIdentifier" not in entry:
            return _invalid(f"batchItemFailures[{index}] has no itemIdentifier")
        identifier = entry["itemIdentifier"]
        if not isinstance(identifier, str):
            return _invalid(f"batchItemFailures[{index}].itemIdentifier is a JSON {_json_type(identifier)}")
        if not identifier:
            return _invalid(f"batchItemFailures[{index}].itemIdentifier is empty")
        if identifier not in ids:
            return _invalid(f"batchItemFailures[{index}].itemIdentifier {_shorten(identifier)!r} is not in the batch")
        failed[identifier] = None
    return BatchResponse(ResponseKind.PARTIAL, failed=tuple(failed))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
