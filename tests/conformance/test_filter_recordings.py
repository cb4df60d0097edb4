"""Every FilterCriteria scenario recorded against real AWS, as a named case (ESM-SPEC.md §6, §8 vector 10).

The recordings (`aws-recordings/*.snapshot.json`) hold each mapping's pattern (in
`create_event_source_mapping_response.FilterCriteria`, parsed into an object by the recorder) and
the events the function received. What was *not* delivered is not recorded: those items come from
the parameters of the LocalStack tests that made the recordings (commit 8b9a79f and its
predecessors, `test_lambda_integration_{sqs,kinesis,dynamodbstreams}.py`), whose assertions were
validated on AWS (one invocation with one record for SQS, the queue empty afterwards; `calls`
invocations for DynamoDB). The SQS ids `single-filter`, `or-filter`, `and-filter`, `exists-filter`
and `numeric-prefix` come from a version of that test whose patterns and delivered items are those
of `filter0`-`filter3` and `filter7`, so the same undelivered items are used.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from esm.arns import SourceKind
from esm.filtering import INVALID_PATTERN_MESSAGE, FilterPatternError, compile_filters
from tests.conformance.recordings import instantiate, load_snapshot, records_in

# Recorded SQS test id -> the message body that was sent but not delivered (LocalStack parameters).
SQS_NOT_DELIVERED: dict[str, Any] = {
    "filter0-item_matching0-item_not_matching0": {"testItem": "tesWER"},
    "filter1-item_matching1-item_not_matching1": {"testItem": "WERTD"},
    "filter2-item_matching2-item_not_matching2": {"testItem": "test67", "test2": "go"},
    "filter3-item_matching3-item_not_matching3": {"test5": "74545"},
    "filter4-item_matching4-this is a test string": "this is a test string",
    "filter5-item_matching5-item_not_matching5": {"test2": 105},
    "filter6-item_matching6-item_not_matching6": {"test2": 200},
    "filter7-item_matching7-item_not_matching7": {"test2": "eu-wert"},
    "single-filter": {"testItem": "tesWER"},
    "or-filter": {"testItem": "WERTD"},
    "and-filter": {"testItem": "test67", "test2": "go"},
    "exists-filter": {"test5": "74545"},
    "numeric-prefix": {"test2": "eu-wert"},
    "single": {"my-key": "other-value"},
    "or": {"my-key": "other-value"},
    "and": {"my-key-one": "other-value-", "my-key-two": "my-value-two"},
    "exists": {"other-key": "any-value-two"},
    "numeric-bigger": {"my-number": 100},
    "numeric-smaller": {"my-number": 100},
    "numeric-range": {"my-number": 200},
    "prefix": {"my-key": "no-value"},
    "valid-json-filter": "plain-string",
}
# Skipped by LocalStack ("figure out how plain string matching works"): recorded empty.
SQS_UNRECORDED = ("plain-string-matching", "plain-string-filter")

# Recorded id -> the pattern text the test sent (json.dumps of its parameter, or the raw string).
INVALID_PATTERNS: dict[tuple[str, str], str] = {
    ("sqs", "test_sqs_invalid_event_filter[None]"): "null",
    ("sqs", "test_sqs_invalid_event_filter[simple string]"): '"simple string"',
    ("sqs", "test_sqs_invalid_event_filter[invalid_filter2]"): '{"eventSource": "aws:sqs"}',
    ("sqs", "test_sqs_invalid_event_filter[invalid_filter3]"): '{"eventSource": []}',
    ("dynamodbstreams", "test_dynamodb_invalid_event_filter[single-string]"): "single-string",
    (
        "dynamodbstreams",
        'test_dynamodb_invalid_event_filter[[{"eventName": ["INSERT"=123}]]',
    ): '[{"eventName": ["INSERT"=123}]',
}

# The date_time_conversion pattern was replaced by a placeholder in the recording; LocalStack's parameter:
DATE_TIME_PATTERN = {"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">", 0]}]}}
RECORDED_CREATION_TIME = 1764072000.0  # a JSON number of epoch seconds, as real AWS sends (LS asserts float)


def _test_id(name: str) -> str:
    return name.rpartition("::")[2]


def _params(key: str) -> str:
    return key.partition("[")[2][:-1]


def _content(test: str, source: str) -> dict[str, Any]:
    """The recorded content of the one test whose id ends with `::test` (may be empty)."""
    (content,) = [v for k, v in load_snapshot(source).items() if k.endswith(f"::{test}")]
    result: dict[str, Any] = content["recorded-content"]
    return result


def _pattern_text(create_response: dict[str, Any]) -> str:
    (item,) = create_response["FilterCriteria"]["Filters"]
    pattern = item["Pattern"]
    return pattern if isinstance(pattern, str) else json.dumps(pattern)


# --------------------------------------------------------------------------------------------
# SQS
# --------------------------------------------------------------------------------------------


def _sqs_cases() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for name, content in load_snapshot("sqs").items():
        test = _test_id(name)
        if not test.startswith("test_sqs_event_filter["):
            continue
        rc = content["recorded-content"]
        if not rc:
            continue
        (event,) = rc["invocation_events"]
        (record,) = records_in(event)
        delivered = instantiate(record)
        delivered["body"] = json.dumps(delivered["body"])  # the recorder parsed the JSON body
        cases.append((_params(test), _pattern_text(rc["create_event_source_mapping_response"]), delivered))
    return cases


SQS_CASES = _sqs_cases()


class TestSqsRecordings:
    """SQS filter scenarios recorded on AWS: the delivered message matches, the other one does not."""

    @pytest.mark.parametrize(("case", "pattern", "delivered"), SQS_CASES, ids=[c[0] for c in SQS_CASES])
    def test_scenario(self, case: str, pattern: str, delivered: dict[str, Any]) -> None:
        """The one delivered record matches; the message AWS deleted unseen does not."""
        compiled = compile_filters([pattern], SourceKind.SQS)
        assert compiled.matches(delivered)
        other = SQS_NOT_DELIVERED[case]
        filtered = {**delivered, "body": other if isinstance(other, str) else json.dumps(other)}
        assert not compiled.matches(filtered)
        assert compiled.explain(filtered)

    def test_every_recorded_scenario_is_covered(self) -> None:
        """Each recorded filter scenario has its undelivered item here, and the skipped ones stay empty."""
        assert sorted(case for case, _, _ in SQS_CASES) == sorted(SQS_NOT_DELIVERED)
        for case in SQS_UNRECORDED:
            assert _content(f"test_sqs_event_filter[{case}]", "sqs") == {}


# --------------------------------------------------------------------------------------------
# Invalid patterns
# --------------------------------------------------------------------------------------------


class TestInvalidPatternRecordings:
    """Patterns AWS rejected at CreateEventSourceMapping: same text, from esm's compiler."""

    @pytest.mark.parametrize(
        ("source", "test", "pattern"),
        [(s, t, p) for (s, t), p in INVALID_PATTERNS.items()],
        ids=[_params(t) for _, t in INVALID_PATTERNS],
    )
    def test_rejected_with_aws_text(self, source: str, test: str, pattern: str) -> None:
        """The recorded error message is the FilterPatternError's text."""
        content = _content(test, source)
        error = content.get("create_event_source_mapping_exception") or content["exception_event_source_creation"]
        assert error["Error"] == {"Code": "InvalidParameterValueException", "Message": INVALID_PATTERN_MESSAGE}
        kind = SourceKind.SQS if source == "sqs" else SourceKind.DYNAMODB
        with pytest.raises(FilterPatternError) as info:
            compile_filters([pattern], kind)
        assert str(info.value) == error["Error"]["Message"]


# --------------------------------------------------------------------------------------------
# Kinesis
# --------------------------------------------------------------------------------------------


def _kinesis_record(data: dict[str, Any]) -> dict[str, Any]:
    encoded = base64.b64encode(json.dumps(data).encode()).decode()
    return {
        "kinesis": {"partitionKey": "custom", "sequenceNumber": "1", "data": encoded},
        "eventName": "aws:kinesis:record",
    }


class TestKinesisRecordings:
    """`test_kinesis_event_filtering_json_pattern`: two mappings, each gets only its event type."""

    def test_each_mapping_gets_its_record(self) -> None:
        """Function 1 received only msg1 (recorded payload); function 2's filter takes only msg2."""
        content = _content("TestKinesisEventFiltering::test_kinesis_event_filtering_json_pattern", "kinesis")
        first = compile_filters([_pattern_text(content["create_event_source_mapping_response"])], SourceKind.KINESIS)
        second = compile_filters([_pattern_text(content["create_event_source_mapping_2_response"])], SourceKind.KINESIS)
        msg1 = {"event_type": "function_1", "message": "foo"}
        msg2 = {"event_type": "function_2", "message": "bar"}
        assert json.loads(content["kinesis-record-lambda-payload"]) == [msg1]
        assert first.matches(_kinesis_record(msg1))
        assert not first.matches(_kinesis_record(msg2))
        assert second.matches(_kinesis_record(msg2))
        assert not second.matches(_kinesis_record(msg1))


# --------------------------------------------------------------------------------------------
# DynamoDB
# --------------------------------------------------------------------------------------------


def _ddb_delivered(case: str) -> tuple[str, list[dict[str, Any]]]:
    content = _content(f"test_dynamodb_event_filter[{case}]", "dynamodbstreams")
    pattern = _pattern_text(content["create_event_source_mapping_response"])
    if case == "date_time_conversion":
        pattern = json.dumps(DATE_TIME_PATTERN)
    records = [instantiate(r) for r in records_in(content["lambda-multiple-log-events"])]
    for r in records:
        r["dynamodb"]["ApproximateCreationDateTime"] = RECORDED_CREATION_TIME
    return pattern, records


def _ddb_variant(
    record: dict[str, Any], event_name: str, new: dict[str, Any], old: dict[str, Any] | None
) -> dict[str, Any]:
    """Another stream record of the same table: a different event name and images."""
    out = copy.deepcopy(record)
    out["eventID"] = "not-delivered"
    out["eventName"] = event_name
    out["dynamodb"]["Keys"] = {"id": new["id"]}
    out["dynamodb"]["NewImage"] = new
    if old is not None:
        out["dynamodb"]["OldImage"] = old
    return out


# Case -> undelivered stream records, built from the LocalStack parameters (`item_to_put2`, calls == 1).
def _ddb_not_delivered(case: str, first: dict[str, Any]) -> list[dict[str, Any]]:
    image = first["dynamodb"]["NewImage"]
    if case == "insert_same_entry_twice":  # the same item again: a MODIFY, if DynamoDB emits one at all
        return [_ddb_variant(first, "MODIFY", image, image)]
    if case == "content_multiple_filters":
        return [_ddb_variant(first, "MODIFY", {"id": {"S": "id_value"}, "id2": {"S": "id2_new_value"}}, image)]
    if case in ("content_filter_type", "exists_filter_type"):
        return [_ddb_variant(first, "INSERT", {"id": {"S": "id_value_2"}}, None)]
    if case == "numeric_filter":
        return [_ddb_variant(first, "INSERT", {"id": {"S": "id_value_2"}, "numericFilter": {"N": "101"}}, None)]
    if case == "prefix_filter":
        return [_ddb_variant(first, "MODIFY", {"id": {"S": "id_value_1"}, "prefix": {"S": "other-suffix"}}, image)]
    return []  # content_or_filter, exists_false_filter, date_time_conversion: both items were delivered


DDB_CASES = [
    "insert_same_entry_twice",
    "content_or_filter",
    "content_multiple_filters",
    "content_filter_type",
    "exists_filter_type",
    "exists_false_filter",
    "numeric_filter",
    "prefix_filter",
    "date_time_conversion",
]
DDB_CALLS = {"content_or_filter": 2, "exists_false_filter": 2, "date_time_conversion": 2}


class TestDynamoDbRecordings:
    """DynamoDB filter scenarios recorded on AWS: delivered records match, the others do not."""

    @pytest.mark.parametrize("case", DDB_CASES)
    def test_scenario(self, case: str) -> None:
        """Every delivered record matches the recorded pattern; the undelivered item does not."""
        pattern, delivered = _ddb_delivered(case)
        assert len(delivered) == DDB_CALLS.get(case, 1)
        compiled = compile_filters([pattern], SourceKind.DYNAMODB)
        for record in delivered:
            assert compiled.matches(record), record["dynamodb"]
        for record in _ddb_not_delivered(case, delivered[0]):
            assert not compiled.matches(record), record["dynamodb"]
            assert compiled.explain(record)

    def test_type_key_is_required(self) -> None:
        """Omitting the "S" type key does not match (LocalStack's AWS-validated note on content_filter_type)."""
        _, delivered = _ddb_delivered("content_filter_type")
        without_type = json.dumps({"dynamodb": {"NewImage": {"presentKey": ["presentValue"]}}})
        assert not compile_filters([without_type], SourceKind.DYNAMODB).matches(delivered[0])

    def test_every_recorded_scenario_is_covered(self) -> None:
        """Each recorded DynamoDB filter scenario is a case here."""
        recorded_cases = [
            _params(_test_id(k))
            for k in load_snapshot("dynamodbstreams")
            if _test_id(k).startswith("test_dynamodb_event_filter[")
        ]
        assert sorted(recorded_cases) == sorted(DDB_CASES)
