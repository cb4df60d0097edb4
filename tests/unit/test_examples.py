"""The configurations users copy: config/*.yaml, the example handler, and README.md's YAML blocks.

README convention: every ```yaml block is a complete configuration file and must pass
`load_config` with no environment variables set (use `${VAR:-default}`). A block that is only a
fragment (one mapping, one section) is preceded by the HTML comment `<!-- fragment -->`, with at most
blank lines in between, and is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from esm.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"
README = ROOT / "README.md"
REQUIRED_EXAMPLES = {"example.yaml", "fifo.yaml", "lambda-and-http.yaml"}

_FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_FRAGMENT = re.compile(r"^\s*<!--\s*fragment\s*-->\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class YamlBlock:
    """A fenced YAML block of a Markdown file."""

    line: int
    """1-based line number of the opening fence."""
    text: str
    fragment: bool


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
        blocks.append(YamlBlock(start + 1, "\n".join(body) + "\n", bool(_FRAGMENT.match(previous))))
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

    @pytest.mark.parametrize("block", _readme_blocks(), ids=lambda b: f"README.md:{b.line}")
    def test_block_validates(self, block: YamlBlock) -> None:
        """The block is a valid configuration, unless it is marked `<!-- fragment -->`."""
        if block.fragment:
            pytest.skip("marked <!-- fragment -->")
        try:
            parse_config(block.text, f"README.md:{block.line}", env={})
        except ConfigError as exc:
            pytest.fail("\n".join(exc.lines()), pytrace=False)


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


class TestReadmeFilterExample:
    """The README's `esm filter test` example prints what the README says it prints."""

    def test_filter_test_example(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The command is taken from README.md itself and run through the real CLI."""
        import shlex

        from esm.cli import main

        text = README.read_text()
        [line] = [ln for ln in text.splitlines() if ln.startswith(".venv/bin/esm filter test")]
        code = main(shlex.split(line)[1:])
        out = capsys.readouterr().out
        assert code == 0
        assert "NO MATCH" in out
        claimed = re.search(r"prints `NO MATCH` and why \(`([^`]+)`\)", text)
        assert claimed is not None
        assert claimed.group(1) in out
