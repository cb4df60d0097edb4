"""The configurations users copy: config/*.yaml, the example handler, and README.md's YAML blocks.

README convention: every ```yaml block is a complete configuration file and must pass
`load_config` with no environment variables set (use `${VAR:-default}`). A block that is only a
fragment (one mapping, one section) is preceded by the HTML comment `<!-- fragment -->`, with at most
blank lines in between, and is only checked to be YAML. A block of Helm values for the chart is
preceded by `<!-- helm-values -->` instead: tests/helm/test_readme_values.py renders it.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from esm.arns import SourceKind
from esm.config import ConfigError, ConfigFile, load_config, parse_config
from esm.filter_test import add_filter_parser
from esm.filtering import compile_filters

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"
README = ROOT / "README.md"
REQUIRED_EXAMPLES = {"example.yaml", "fifo.yaml", "lambda-and-http.yaml"}

_FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_FRAGMENT = re.compile(r"^\s*<!--\s*(fragment|helm-values)\s*-->\s*$", re.IGNORECASE)
_HELM_VALUES = re.compile(r"^\s*<!--\s*helm-values\s*-->\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class YamlBlock:
    """A fenced YAML block of a Markdown file."""

    line: int
    """1-based line number of the opening fence."""
    text: str
    fragment: bool
    helm_values: bool = False
    """Preceded by `<!-- helm-values -->`: values for the Helm chart (a fragment for esm's checks)."""


def yaml_blocks(markdown: str) -> list[YamlBlock]:
    """Every ```yaml / ```yml block of a Markdown text, marking those preceded by `<!-- fragment -->`."""
    lines = markdown.splitlines()
    blocks: list[YamlBlock] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            # Blocks nested in a list item are indented: remove the fence's indentation only.
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        i += 1  # the closing fence
        if m["lang"].lower() not in ("yaml", "yml"):
            continue
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        blocks.append(
            YamlBlock(
                start + 1,
                "\n".join(body) + "\n",
                fragment=bool(_FRAGMENT.match(previous)),
                helm_values=bool(_HELM_VALUES.match(previous)),
            )
        )
    return blocks


def _readme_blocks() -> list[YamlBlock]:
    return yaml_blocks(README.read_text(encoding="utf-8")) if README.is_file() else []


def _load_module(path: Path, name: str) -> ModuleType:
    """Import a file as a module without putting its folder on sys.path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestConfigExamples:
    """Every configuration in config/ is valid and names handlers that exist."""

    def test_required_examples_exist(self) -> None:
        """The examples the README and `make run` rely on are present."""
        assert {p.name for p in CONFIG_DIR.glob("*.yaml")} >= REQUIRED_EXAMPLES

    @pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
    def test_example_validates(self, path: Path) -> None:
        """The file loads with no environment variables set."""
        config = load_config(path, env={})
        assert config.spec.event_source_mappings, "an example should show at least one mapping"

    @pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
    def test_handlers_exist(self, path: Path) -> None:
        """Each `handler: module:function` names a module file in the config's folder with that function."""
        config = load_config(path, env={})
        for fn in config.spec.functions.values():
            if fn.handler is None:
                continue
            module_name, _, function = fn.handler.partition(":")
            parts = module_name.split(".")
            file = config.base_dir.joinpath(*parts).with_suffix(".py")
            assert file.is_file(), f"{fn.handler}: {file} does not exist"
            module = _load_module(file, f"_esm_example_{'_'.join(parts)}")
            assert callable(getattr(module, function, None)), f"{fn.handler}: no function {function!r}"

    def test_make_run_config_has_the_documented_setup(self) -> None:
        """config/example.yaml is what `make run` documents: the orders queue with a DLQ and partial failures."""
        spec = load_config(CONFIG_DIR / "example.yaml", env={}).spec
        assert spec.aws.region == "us-east-1"
        assert spec.dev.port == 4566
        redrive = spec.dev.queues["orders"].RedrivePolicy
        assert redrive == {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:orders-dlq", "maxReceiveCount": 3}
        (mapping,) = spec.event_source_mappings
        assert mapping.EventSourceArn == "arn:aws:sqs:us-east-1:123456789012:orders"
        assert mapping.batch_size == 10
        assert mapping.report_batch_item_failures
        assert spec.functions[mapping.FunctionName].handler == "handlers.example:handle"

    def test_lambda_and_http_example_reads_the_token_from_the_environment(self) -> None:
        """The audit header uses AUDIT_TOKEN when set, and a development default otherwise."""
        path = CONFIG_DIR / "lambda-and-http.yaml"
        with_token = load_config(path, env={"AUDIT_TOKEN": "prod-token"}).spec.functions["audit"]
        without = load_config(path, env={}).spec.functions["audit"]
        assert with_token.headers["Authorization"] == "Bearer prod-token"
        assert without.headers["Authorization"] == "Bearer dev-token"


class _Context:
    """The part of a Lambda context the example handler reads."""

    aws_request_id = "req-1"
    function_name = "orders"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def _record(message_id: str, body: str) -> dict[str, Any]:
    return {"messageId": message_id, "body": body, "eventSource": "aws:sqs"}


@pytest.fixture(scope="module")
def handler() -> ModuleType:
    """The example handler module."""
    return _load_module(CONFIG_DIR / "handlers" / "example.py", "_esm_example_handler")


class TestExampleHandler:
    """config/handlers/example.py logs ids and sizes only, and fails exactly the `{"fail": true}` messages."""

    def test_reports_only_fail_messages(self, handler: ModuleType) -> None:
        """Only bodies that are exactly the JSON `{"fail": true}` are reported in batchItemFailures."""
        event = {
            "Records": [
                _record("m1", json.dumps({"order": 1})),
                _record("m2", json.dumps({"fail": True})),
                _record("m3", '{ "fail" : true }'),
                _record("m4", json.dumps({"fail": False})),
                _record("m5", json.dumps({"fail": True, "order": 5})),
                _record("m6", "not json"),
                _record("m7", "true"),
            ]
        }
        assert handler.handle(event, _Context()) == {
            "batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]
        }

    def test_empty_batch_succeeds(self, handler: ModuleType) -> None:
        """A batch with no failure answers an empty batchItemFailures list (whole batch succeeded)."""
        assert handler.handle({"Records": [_record("m1", "hello")]}, _Context()) == {"batchItemFailures": []}
        assert handler.handle({"Records": []}, _Context()) == {"batchItemFailures": []}

    def test_logs_message_id_and_size_but_never_the_body(
        self, handler: ModuleType, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each record is logged with its messageId and body size in bytes; the body itself is never printed."""
        secret = "card=4111-1111-1111-1111 é"
        handler.handle({"Records": [_record("m-42", secret)]}, _Context())
        out = capsys.readouterr().out
        assert "messageId=m-42" in out
        assert f"body_bytes={len(secret.encode())}" in out
        assert "4111" not in out
        assert out.startswith("[example] ")


class TestReadmeBlocks:
    """Every complete YAML configuration in README.md is valid, so users can paste it as is."""

    def test_readme_has_configuration_examples(self) -> None:
        """README.md exists and shows at least one complete YAML configuration."""
        assert README.is_file(), "README.md is missing"
        assert [b for b in _readme_blocks() if not b.fragment], "README.md has no complete ```yaml block"

    @pytest.mark.parametrize(
        "block", [b for b in _readme_blocks() if not b.fragment], ids=lambda b: f"README.md:{b.line}"
    )
    def test_block_validates(self, block: YamlBlock) -> None:
        """The block is a valid esm configuration."""
        try:
            parse_config(block.text, f"README.md:{block.line}", env={})
        except ConfigError as exc:
            pytest.fail("\n".join(exc.lines()), pytrace=False)

    @pytest.mark.parametrize("block", [b for b in _readme_blocks() if b.fragment], ids=lambda b: f"README.md:{b.line}")
    def test_fragment_is_yaml(self, block: YamlBlock) -> None:
        """A block marked `<!-- fragment -->` (a Kubernetes manifest, say) is at least well-formed YAML."""
        assert isinstance(yaml.safe_load(block.text), dict)


class TestYamlBlockParser:
    """The README convention: ```yaml blocks are checked, `<!-- fragment -->` marks the ones to skip."""

    def test_finds_yaml_blocks_and_fragment_markers(self) -> None:
        """Blocks of other languages are ignored; the marker applies across blank lines to the next block only."""
        markdown = (
            "# Title\n"
            "```yaml\naws: {region: us-east-1}\n```\n"
            "<!-- fragment -->\n\n"
            "```yml\n- EventSourceArn: x\n```\n"
            "```bash\nmake run\n```\n"
            "Text.\n"
            "~~~yaml\nhttp: {listen: '127.0.0.1:1'}\n~~~\n"
            "- item\n  ```yaml\n  functions: {}\n  ```\n"
        )
        blocks = yaml_blocks(markdown)
        assert [(b.line, b.text, b.fragment) for b in blocks] == [
            (2, "aws: {region: us-east-1}\n", False),
            (7, "- EventSourceArn: x\n", True),
            (14, "http: {listen: '127.0.0.1:1'}\n", False),
            (18, "functions: {}\n", False),
        ]

    def test_marker_must_directly_precede_the_block(self) -> None:
        """A fragment marker followed by text does not apply to a later block."""
        blocks = yaml_blocks("<!-- fragment -->\nSome text.\n```yaml\na: 1\n```\n")
        assert [b.fragment for b in blocks] == [False]


# --------------------------------------------------------------------------------------------
# README.md "Event filtering": its commands, their claimed output, and its YAML mappings
# --------------------------------------------------------------------------------------------

_FILTER_SECTION = "## Event filtering"
_FILTER_COMMAND = ".venv/bin/esm filter test"
_PRINTS = re.compile(r"prints `(?P<verdict>NO MATCH|MATCH)` and why \(`(?P<reason>[^`]+)`\)")
_RECORD_LINE = re.compile(r"^record (?P<n>\d+)(?: \((?P<ident>[^)]+)\))?: (?P<verdict>MATCH|NO MATCH)\b")
_DECODES_TO = re.compile(r"`(config/samples/[^`]+)`[^.`]*(?:`[^`]*`[^.`]*)*?decodes\s+to\s+(.+?)\.(?:\s|$)", re.S)


@dataclass(frozen=True)
class Fence:
    """A fenced block of a Markdown text."""

    line: int
    """1-based line number of the opening fence."""
    lang: str
    text: str
    after: str
    """The text from the closing fence to the next fenced block."""


def fenced_blocks(markdown: str) -> list[Fence]:
    """Every fenced block of a Markdown text (not nested in a list item), with the prose after it."""
    lines = markdown.splitlines()
    found: list[tuple[int, str, str, int]] = []  # (opening line index, lang, text, index after the closing fence)
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m is None:
            i += 1
            continue
        start, fence = i, m["fence"]
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        found.append((start, m["lang"].lower(), "\n".join(body) + "\n", i))
    blocks = []
    for k, (start, lang, text, end) in enumerate(found):
        stop = found[k + 1][0] if k + 1 < len(found) else len(lines)
        blocks.append(Fence(start + 1, lang, text, "\n".join(lines[end:stop])))
    return blocks


def _section() -> str:
    """README.md's "Event filtering" section, up to the next `## ` heading; line numbers kept (blank lines before)."""
    lines = README.read_text(encoding="utf-8").splitlines() if README.is_file() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == _FILTER_SECTION), len(lines))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n" * start + "\n".join(lines[start:end]) + "\n"


@dataclass(frozen=True)
class FilterExample:
    """An `esm filter test` command of the section and what the README says it prints."""

    line: int
    argv: list[str]
    """The command line split as a shell does, starting with `.venv/bin/esm`."""
    claimed_output: str | None
    """The ```text block that follows the command, if any: its exact output."""
    claimed_verdict: str | None
    claimed_reason: str | None
    """From a sentence "prints `NO MATCH` and why (`reason`)" after the command, if any."""


def _filter_examples() -> list[FilterExample]:
    import shlex

    blocks = fenced_blocks(_section())
    examples = []
    for k, block in enumerate(blocks):
        commands = [
            c.strip() for c in block.text.replace("\\\n", " ").splitlines() if c.strip().startswith(_FILTER_COMMAND)
        ]
        if not commands:
            continue
        assert len(commands) == 1, f"README.md:{block.line}: one `esm filter test` command per block"
        nxt = blocks[k + 1] if k + 1 < len(blocks) else None
        output = nxt.text if nxt is not None and nxt.lang == "text" and not block.after.strip() else None
        prints = _PRINTS.search(block.after)
        examples.append(
            FilterExample(
                block.line,
                shlex.split(commands[0]),
                output,
                prints["verdict"] if prints and output is None else None,
                prints["reason"] if prints and output is None else None,
            )
        )
    return examples


def _filter_yaml_blocks() -> list[YamlBlock]:
    return yaml_blocks(_section())


def _parse(block: YamlBlock) -> ConfigFile:
    try:
        return parse_config(block.text, f"README.md:{block.line}", env={})
    except ConfigError as exc:
        pytest.fail("\n".join(exc.lines()), pytrace=False)


def _filter_args(example: FilterExample) -> argparse.Namespace:
    """The command's arguments, parsed by `esm filter test`'s own parser."""
    parser = argparse.ArgumentParser(prog="esm")
    add_filter_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(example.argv[1:])


@dataclass(frozen=True)
class RecordClaim:
    """One record's verdict in a command's output block."""

    number: int
    ident: str | None
    matches: bool
    reasons: list[str]
    """The `filter N: ...` lines under it (empty for a match)."""


def _verdict(output: str) -> str:
    """The verdict of the first record in `esm filter test` output: "MATCH" or "NO MATCH"."""
    first = output.splitlines()[0]
    return "NO MATCH" if first.endswith(": NO MATCH") else first.rpartition(": ")[2].split(" ")[0]


def _record_claims(output: str) -> list[RecordClaim]:
    claims: list[RecordClaim] = []
    for line in output.splitlines():
        m = _RECORD_LINE.match(line)
        if m is not None:
            claims.append(RecordClaim(int(m["n"]), m["ident"], m["verdict"] == "MATCH", []))
        elif line.startswith("  filter ") and claims:
            claims[-1].reasons.append(line.strip())
    return claims


class TestReadmeFilterExample:
    """Every example of README.md's "Event filtering" section does what the README says it does.

    Section convention: each `esm filter test` command (a ```sh block, lines continued with `\\`)
    is followed either by a ```text block holding its exact output or by a sentence
    "prints `MATCH|NO MATCH` and why (`reason`)". Each ```yaml block is a complete configuration
    whose mapping patterns the next `esm filter test` command tries on a sample event; that
    command's output block says which records the patterns keep and why the others are dropped.
    """

    def test_filter_test_example(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        """The first command (an SQS `--body`) prints the verdict and the reason its sentence quotes."""
        from esm.cli import main

        example = next(e for e in _filter_examples() if e.claimed_verdict is not None)
        monkeypatch.chdir(ROOT)
        code = main(example.argv[1:])
        out = capsys.readouterr().out
        assert code == 0
        assert _verdict(out) == example.claimed_verdict
        assert example.claimed_reason is not None
        assert example.claimed_reason in out

    def test_section_shows_every_source(self) -> None:
        """A YAML mapping per source, and `esm filter test` lines for Kinesis and DynamoDB records."""
        kinds = {m.source.kind for b in _filter_yaml_blocks() for m in _parse(b).event_source_mappings}
        assert kinds == {SourceKind.SQS, SourceKind.KINESIS, SourceKind.DYNAMODB}
        sources = {_filter_args(e).source for e in _filter_examples()}
        assert sources >= {"kinesis", "dynamodb"}
        for example in _filter_examples():
            assert example.claimed_output is not None or example.claimed_verdict is not None, (
                f"README.md:{example.line}: the command has neither an output block nor a `prints ...` sentence"
            )

    @pytest.mark.parametrize("example", _filter_examples(), ids=lambda e: f"README.md:{e.line}")
    def test_command_prints_what_the_readme_shows(
        self, example: FilterExample, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The command, run through the real CLI from the repository root, prints the README's output."""
        from esm.cli import main

        monkeypatch.chdir(ROOT)  # sample files are named relative to the root, as in the README
        code = main(example.argv[1:])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        if example.claimed_output is not None:
            assert captured.out.rstrip("\n").splitlines() == example.claimed_output.rstrip("\n").splitlines()
        else:
            assert example.claimed_reason is not None
            assert _verdict(captured.out) == example.claimed_verdict
            assert example.claimed_reason in captured.out

    @pytest.mark.parametrize("block", _filter_yaml_blocks(), ids=lambda b: f"README.md:{b.line}")
    def test_yaml_mapping_keeps_and_drops_what_the_readme_shows(self, block: YamlBlock) -> None:
        """The config loader accepts the block; its compiled patterns give the next command's verdicts.

        The next `esm filter test` command must try exactly the mapping's patterns, on a sample
        event file; each record of that file matches (or not, with the quoted reasons) as the
        command's output block in the README says.
        """
        assert not block.fragment, "a filtering example is a complete configuration"
        (mapping,) = _parse(block).event_source_mappings
        patterns = mapping.filter_patterns
        assert patterns, "the example mapping has FilterCriteria"
        compiled = compile_filters(patterns, mapping.source.kind)

        example = next((e for e in _filter_examples() if e.line > block.line), None)
        assert example is not None, "no `esm filter test` command follows the YAML block"
        args = _filter_args(example)
        assert args.source == mapping.source.kind.value
        assert args.pattern == patterns, "the command must try the mapping's own patterns"
        assert example.claimed_output is not None
        assert len(args.event) == 1, "the command replays one sample event"
        assert not args.record
        assert not args.body
        event_arg = args.event[0]
        assert event_arg.startswith("@config/samples/"), "the sample event is a file in config/samples/"
        records = json.loads((ROOT / event_arg[1:]).read_text(encoding="utf-8"))["Records"]

        claims = _record_claims(example.claimed_output)
        assert [c.number for c in claims] == list(range(1, len(records) + 1))
        assert {c.matches for c in claims} == {True, False}, "show a record that is kept and one that is dropped"
        for claim, record in zip(claims, records, strict=True):
            if claim.ident is not None:
                assert claim.ident in json.dumps(record), f"record {claim.number} is not {claim.ident}"
            assert compiled.matches(record) is claim.matches, f"record {claim.number}"
            assert compiled.explain(record) == claim.reasons, f"record {claim.number}"

    def test_sample_data_is_what_the_readme_says(self) -> None:
        """A sentence "`config/samples/F.json` ... decodes to `A`, `B` and `C`." tells the truth."""
        sentences = re.findall(_DECODES_TO, _section())
        assert sentences, "the Kinesis example says what its records' data is"
        for path, items in sentences:
            claimed = re.findall(r"`([^`]+)`", items)
            event = json.loads((ROOT / path).read_text(encoding="utf-8"))
            decoded = [base64.b64decode(r["kinesis"]["data"]).decode() for r in event["Records"]]
            assert len(decoded) == len(claimed)
            assert decoded == claimed, f"{path}: the records' data is not what README.md says"


class TestReadmeWindowHandler:
    """The README's tumbling-window handler is config/handlers/windows.py's, which a component test runs."""

    def test_readme_shows_the_example_handler(self) -> None:
        text = README.read_text()
        section = text[text.index("### Tumbling windows") :]
        block = section[section.index("```python\n") + len("```python\n") :]
        block = block[: block.index("```")]
        source = (CONFIG_DIR / "handlers" / "windows.py").read_text()
        assert block == source[source.index("def handle") :]
