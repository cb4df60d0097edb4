"""`esm filter test`: verdicts, reasons, input forms and exit codes (issue #4, point 4)."""

from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path

import pytest

from esm.filter_test import add_filter_parser, run_filter_test


def run(*argv: str) -> int:
    """Parse `esm filter test ARGV` with the command's own parser and run it."""
    parser = argparse.ArgumentParser(prog="esm")
    add_filter_parser(parser.add_subparsers(dest="command"))
    return run_filter_test(parser.parse_args(["filter", "test", *argv]))


def b64(value: object) -> str:
    """The base64 of `value`'s JSON text."""
    return base64.b64encode(json.dumps(value).encode()).decode()


class TestVerdicts:
    """Each record gets MATCH (with the filters) or NO MATCH (with a reason per filter)."""

    def test_match_and_no_match_with_reasons(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A JSON body that matches, one that does not, and a plain body (format mismatch)."""
        status = run(
            "--source", "sqs",
            "--pattern", '{"body": {"kind": ["order"]}}',
            "--body", '{"kind": "order"}',
            "--body", '{"kind": "refund"}',
            "--body", "plain text",
        )  # fmt: skip
        assert status == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [
            "body 1: MATCH (filter 1)",
            "body 2: NO MATCH",
            '  filter 1: body.kind: "refund" matches none of: "order"',
            "body 3: NO MATCH",
            '  filter 1: body: is not JSON ("plain text") but the pattern filters its fields (a JSON pattern): '
            "AWS drops such messages (format mismatch, ESM-SPEC.md §6.3)",
            "1 of 3 records match",
        ]

    def test_several_filters(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Several --pattern options are ORed and the matching ones are named."""
        record = {"eventID": "e1", "eventName": "INSERT", "eventSource": "aws:dynamodb", "dynamodb": {}}
        patterns = ["-p", '{"eventName": ["INSERT"]}', "-p", '{"eventSource": ["aws:dynamodb"]}']
        run("-s", "dynamodb", *patterns, "-r", json.dumps(record))
        assert capsys.readouterr().out.splitlines() == ["record 1 (e1): MATCH (filters 1, 2)", "1 of 1 record match"]

    def test_more_than_five_filters_warns(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Over AWS's default quota of 5 filters the command warns but still runs."""
        patterns = [arg for i in range(6) for arg in ("-p", json.dumps({"k": [i]}))]
        assert run("-s", "dynamodb", *patterns, "-r", '{"k": 5}') == 0
        captured = capsys.readouterr()
        assert "MATCH (filter 6)" in captured.out
        assert "warning: 6 filters; AWS allows 5 per mapping by default" in captured.err


class TestInputs:
    """Patterns and records from arguments, files, stdin, events and FilterCriteria objects."""

    def test_files_and_events(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """@FILE works for patterns (a FilterCriteria object) and events."""
        criteria = {"Filters": [{"Pattern": json.dumps({"data": {"type": ["buy"]}})}]}
        (tmp_path / "filters.json").write_text(json.dumps(criteria))
        event = {"Records": [{"kinesis": {"sequenceNumber": str(i), "data": b64({"type": t})}} for i, t in
                             enumerate(["buy", "sell"])]}  # fmt: skip
        (tmp_path / "event.json").write_text(json.dumps(event))
        assert run("-s", "kinesis", "-p", f"@{tmp_path / 'filters.json'}", "-e", f"@{tmp_path / 'event.json'}") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "record 1 (0): MATCH (filter 1)"
        assert out[1] == "record 2 (1): NO MATCH"
        assert out[2] == '  filter 1: data.type: "sell" matches none of: "buy"'

    def test_pattern_from_stdin(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        """`@-` reads the pattern from standard input."""
        monkeypatch.setattr("sys.stdin", io.StringIO('{"body": [{"prefix": "ERROR"}]}'))
        assert run("-s", "sqs", "-p", "@-", "-b", "ERROR: disk") == 0
        assert capsys.readouterr().out.startswith("body 1: MATCH")

    def test_recorded_shapes_are_normalized(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A parsed body, parsed Kinesis data or a bare stream record is turned into the real shape, with a note."""
        run("-s", "sqs", "-p", '{"body": {"a": [1]}}', "-r", '[{"messageId": "m1", "body": {"a": 1}}]')
        assert capsys.readouterr().out.splitlines()[:2] == [
            "record 1 (m1): MATCH (filter 1)",
            '  note: "body" was parsed JSON; used its JSON text, as SQS delivers a string',
        ]
        run("-s", "kinesis", "-p", '{"data": {"a": [1]}}', "-r", '{"partitionKey": "p", "data": {"a": 1}}')
        out = capsys.readouterr().out
        assert "MATCH (filter 1)" in out
        assert 'wrapped a bare Kinesis record in {"kinesis": ...}' in out
        assert '"data" was parsed JSON' in out
        run(
            "-s", "dynamodb", "-p", '{"dynamodb": {"Keys": {"id": {"S": ["1"]}}}}', "-r", '{"Keys": {"id": {"S": "1"}}}'
        )
        assert 'wrapped a bare stream record in {"dynamodb": ...}' in capsys.readouterr().out

    def test_sqs_api_message(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An SQS API message with `Body` is read as the record's body."""
        run("-s", "sqs", "-p", '{"body": ["hi"]}', "-r", '{"MessageId": "x", "Body": "hi"}')
        assert capsys.readouterr().out.startswith("record 1: MATCH")


class TestErrors:
    """Exit status 2 for an invalid pattern or unreadable input, with AWS's text and esm's detail."""

    def test_invalid_pattern(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid pattern prints AWS's text and esm's detail, and exits 2."""
        assert run("-s", "sqs", "-p", '{"a": ["x"]}', "-p", '{"eventSource": "aws:sqs"}', "-b", "x") == 2
        assert capsys.readouterr().err.splitlines() == [
            "esm filter test: pattern 2: Invalid filter pattern definition.",
            '  esm: eventSource: must be an object or an array of values, not the string "aws:sqs"',
        ]

    def test_malformed_pattern_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A pattern that is not JSON is an invalid pattern too."""
        assert run("-s", "dynamodb", "-p", '[{"eventName": ["INSERT"=123}]', "-r", "{}") == 2
        assert "Invalid filter pattern definition." in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["-s", "sqs", "-p", '{"a": ["x"]}'], "give the records to test"),
            (["-s", "kinesis", "-p", '{"a": ["x"]}', "-b", "x"], "--body builds SQS records"),
            (["-s", "sqs", "-p", "@/nonexistent/filters.json", "-b", "x"], "cannot read --pattern"),
            (["-s", "sqs", "-p", '{"a": ["x"]}', "-r", "@/nonexistent/r.json"], "cannot read --record"),
            (["-s", "sqs", "-p", '{"a": ["x"]}', "-r", "{not json"], "is not JSON"),
            (["-s", "sqs", "-p", '{"a": ["x"]}', "-e", '{"a": 1}'], 'has no "Records" array'),
            (["-s", "sqs", "-p", '{"a": ["x"]}', "-r", "[1, 2]"], "record 1 is not a JSON object"),
        ],
        ids=["no-records", "body-not-sqs", "missing-pattern-file", "missing-record-file", "bad-json", "not-event",
             "not-object"],
    )  # fmt: skip
    def test_unreadable_input(self, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Input that cannot be used exits 2 with a message saying why."""
        assert run(*argv) == 2
        assert message in capsys.readouterr().err

    def test_source_is_required(self) -> None:
        """--source is required (argparse exits 2)."""
        with pytest.raises(SystemExit) as info:
            run("-p", '{"a": ["x"]}', "-b", "x")
        assert info.value.code == 2
