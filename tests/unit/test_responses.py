"""Reading a function's partial batch response exactly as AWS does (ESM-SPEC.md §3.6, §4.1, §4.2, §8)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esm.responses import BatchResponse, ResponseKind, parse_batch_response

IDS = ("id-1", "id-2", "id-3", "id-4")
SUCCESS, PARTIAL, INVALID = ResponseKind.SUCCESS, ResponseKind.PARTIAL, ResponseKind.INVALID


def raw(payload: Any) -> bytes:
    """A response as the function would send it: bytes as given, anything else as JSON."""
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


# Every row of the partial-batch table: ESM-SPEC.md §4.1 and §8 vectors 3, 4 and 5.
TABLE = [
    pytest.param(b"", SUCCESS, (), id="empty-payload-succeeds"),
    pytest.param(b" \n\t", SUCCESS, (), id="whitespace-payload-succeeds"),
    pytest.param(None, SUCCESS, (), id="null-response-succeeds"),
    pytest.param({}, SUCCESS, (), id="empty-object-succeeds"),
    pytest.param([], SUCCESS, (), id="empty-array-succeeds"),
    pytest.param({"batchItemFailures": []}, SUCCESS, (), id="empty-failure-list-succeeds"),
    pytest.param({"batchItemFailures": None}, SUCCESS, (), id="null-failure-list-succeeds"),
    pytest.param({"statusCode": 200}, SUCCESS, (), id="object-without-failure-list-succeeds"),
    pytest.param(
        {"state": {"a": 1}, "batchItemFailures": []}, SUCCESS, (), id="window-state-without-failures-succeeds"
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": "id-2"}]}, PARTIAL, ("id-2",), id="one-listed-id-is-partial"
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": i} for i in ("id-2", "id-3", "id-4")]},
        PARTIAL,
        ("id-2", "id-3", "id-4"),
        id="fifo-2-3-4-listed-is-partial",
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": "id-3"}, {"itemIdentifier": "id-1"}]},
        PARTIAL,
        ("id-3", "id-1"),
        id="response-order-is-kept",
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "id-1"}]},
        PARTIAL,
        ("id-1",),
        id="duplicate-id-counted-once",
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": "id-1", "reason": "boom"}], "extra": True},
        PARTIAL,
        ("id-1",),
        id="extra-keys-are-ignored",
    ),
    pytest.param(b"{not json", INVALID, (), id="invalid-json-fails-whole-batch"),
    pytest.param(b'{"batchItemFailures": [', INVALID, (), id="truncated-json-fails-whole-batch"),
    pytest.param(b"\xff\xfe{}", INVALID, (), id="non-utf8-fails-whole-batch"),
    pytest.param(b"\xef\xbb\xbf{}", INVALID, (), id="utf8-bom-fails-whole-batch"),
    pytest.param(b"NaN", INVALID, (), id="nan-fails-whole-batch"),
    pytest.param("ok", INVALID, (), id="string-response-fails-whole-batch"),
    pytest.param(42, INVALID, (), id="number-response-fails-whole-batch"),
    pytest.param(True, INVALID, (), id="boolean-response-fails-whole-batch"),
    pytest.param([{"itemIdentifier": "id-1"}], INVALID, (), id="non-empty-array-fails-whole-batch"),
    pytest.param(
        {"batchItemFailures": {"itemIdentifier": "id-1"}}, INVALID, (), id="failures-object-fails-whole-batch"
    ),
    pytest.param({"batchItemFailures": "id-1"}, INVALID, (), id="failures-string-fails-whole-batch"),
    pytest.param({"batchItemFailures": ["id-1"]}, INVALID, (), id="entry-string-fails-whole-batch"),
    pytest.param({"batchItemFailures": [None]}, INVALID, (), id="entry-null-fails-whole-batch"),
    pytest.param({"batchItemFailures": [{"foo": "notvalid"}]}, INVALID, (), id="foo-key-fails-whole-batch"),
    pytest.param({"batchItemFailures": [{"foo": None}]}, INVALID, (), id="foo-null-fails-whole-batch"),
    pytest.param({"batchItemFailures": [{"itemIdentifier": ""}]}, INVALID, (), id="empty-identifier-fails-whole-batch"),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": None}]}, INVALID, (), id="null-identifier-fails-whole-batch"
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": 123}]}, INVALID, (), id="number-identifier-fails-whole-batch"
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": ["id-1"]}]}, INVALID, (), id="array-identifier-fails-whole-batch"
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": "id-9"}]}, INVALID, (), id="unknown-identifier-fails-whole-batch"
    ),
    pytest.param(
        {"batchItemFailures": [{"itemIdentifier": "id-1"}, {"foo": "notvalid"}]},
        INVALID,
        (),
        id="one-bad-entry-among-good-fails-whole-batch",
    ),
]


class TestPartialBatchTable:
    """Each documented or recorded response shape has AWS's meaning for the batch."""

    @pytest.mark.parametrize(("payload", "kind", "failed"), TABLE)
    def test_row(self, payload: Any, kind: ResponseKind, failed: tuple[str, ...]) -> None:
        """The response is classified as the table row says, with the failed ids in response order."""
        response = parse_batch_response(raw(payload), IDS)
        assert response.kind is kind
        assert response.failed == failed
        assert bool(response.reason) == (kind is INVALID)


class TestReasons:
    """An invalid response says why, for logs."""

    def test_missing_identifier_is_named(self) -> None:
        """The reason points at the entry that lacks an itemIdentifier."""
        response = parse_batch_response(raw({"batchItemFailures": [{"foo": "notvalid"}]}), IDS)
        assert response.reason == "batchItemFailures[0] has no itemIdentifier"

    def test_unknown_identifier_is_quoted(self) -> None:
        """The reason quotes the id that is not in the batch."""
        response = parse_batch_response(raw({"batchItemFailures": [{"itemIdentifier": "nope"}]}), IDS)
        assert response.reason == "batchItemFailures[0].itemIdentifier 'nope' is not in the batch"

    def test_long_identifiers_are_shortened(self) -> None:
        """A huge bogus id does not flood the logs."""
        response = parse_batch_response(raw({"batchItemFailures": [{"itemIdentifier": "x" * 10_000}]}), IDS)
        assert len(response.reason) < 300


class TestRobustness:
    """No response, however malformed, makes the parser raise."""

    def test_deep_nesting_is_invalid_not_a_crash(self) -> None:
        """A response nested deeper than the JSON parser's recursion limit fails the batch."""
        assert parse_batch_response(b"[" * 100_000 + b"]" * 100_000, IDS).kind is INVALID

    def test_huge_integer_is_invalid_not_a_crash(self) -> None:
        """An integer beyond Python's digit limit fails the batch."""
        assert (
            parse_batch_response(b'{"batchItemFailures": [{"itemIdentifier": ' + b"9" * 5000 + b"}]}", IDS).kind
            is INVALID
        )

    def test_ids_may_be_any_collection(self) -> None:
        """The batch ids may be a list, tuple, set or frozenset."""
        payload = raw({"batchItemFailures": [{"itemIdentifier": "id-2"}]})
        for ids in (list(IDS), IDS, set(IDS), frozenset(IDS)):
            assert parse_batch_response(payload, ids) == BatchResponse(PARTIAL, failed=("id-2",))

    @given(st.binary(max_size=512))
    def test_arbitrary_bytes_never_raise(self, payload: bytes) -> None:
        """Any bytes give a classification."""
        assert parse_batch_response(payload, IDS).kind in ResponseKind

    @settings(deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.sampled_from(IDS),
            lambda children: (
                st.lists(children, max_size=5)
                | st.dictionaries(st.sampled_from(["batchItemFailures", "itemIdentifier", "foo"]) | st.text(), children)
            ),
            max_leaves=30,
        )
    )
    def test_arbitrary_json_never_raises(self, document: Any) -> None:
        """Any JSON document gives a classification; a partial one lists only ids of the batch."""
        response = parse_batch_response(json.dumps(document).encode(), IDS)
        assert response.kind in ResponseKind
        if response.kind is PARTIAL:
            assert response.failed
            assert set(response.failed) <= set(IDS)
            assert len(set(response.failed)) == len(response.failed)

    @given(st.lists(st.sampled_from(IDS), min_size=1))
    def test_valid_lists_are_partial_in_first_seen_order(self, listed: list[str]) -> None:
        """Any list of batch ids is PARTIAL, failed being those ids de-duplicated in first-seen order."""
        payload = raw({"batchItemFailures": [{"itemIdentifier": i} for i in listed]})
        response = parse_batch_response(payload, IDS)
        assert response.kind is PARTIAL
        assert response.failed == tuple(dict.fromkeys(listed))
