"""`esm validate` and `esm schema` as a user runs them: real subprocesses (DESIGN.md §2).

`esm validate FILE...` prints `FILE: ok` on stdout for each valid file, every problem of the others
as `FILE: path: reason` on stderr, and exits 2 if any file is invalid, 0 otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders"

VALID = f"""\
functions:
  orders: {{handler: 'handlers.orders:handle', timeout: 10}}
event_source_mappings:
  - EventSourceArn: {QUEUE}
    FunctionName: orders
    FunctionResponseTypes: [ReportBatchItemFailures]
"""

TWO_PROBLEMS = f"""\
http: {{listen: localhost}}
event_source_mappings:
  - EventSourceArn: {QUEUE}
    FunctionName: orders
    BatchSize: 50
"""

ONE_PROBLEM = """\
functions:
  orders: {timeout: 3}
"""

LISTEN = "must be HOST:PORT, for example 127.0.0.1:9100 or 0.0.0.0:9100"
WINDOW = "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"


def esm(*args: str, cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m esm ARGS` in `cwd` with this checkout importable, capturing its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESM_")} | (extra_env or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "esm", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with one valid and two invalid configuration files."""
    (tmp_path / "valid.yaml").write_text(VALID, encoding="utf-8")
    (tmp_path / "two.yaml").write_text(TWO_PROBLEMS, encoding="utf-8")
    (tmp_path / "one.yaml").write_text(ONE_PROBLEM, encoding="utf-8")
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "orders.py").write_text("def handle(event, context):\n    return None\n")
    return tmp_path


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The schema printed by `esm schema`, parsed (one subprocess for the module)."""
    result = esm("schema", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


class TestValidate:
    """`esm validate FILE...` reports every problem of every file and sets the exit code."""

    def test_mixed_files_exit_2_and_report_every_problem(self, files: Path) -> None:
        """With one valid and two invalid files: exit 2, `FILE: ok` for the valid one, every problem on stderr."""
        result = esm("validate", "valid.yaml", "two.yaml", "one.yaml", cwd=files)
        assert result.returncode == 2
        assert result.stdout.splitlines() == ["valid.yaml: ok"]
        assert result.stderr.splitlines() == [
            f"two.yaml: http.listen: {LISTEN}",
            f"two.yaml: event_source_mappings.0.MaximumBatchingWindowInSeconds: {WINDOW}",
            "one.yaml: functions.orders: exactly one of `handler`, `lambda` or `url` is required",
        ]

    def test_handlers_are_imported_as_esm_run_would(self, files: Path) -> None:
        """A handler that cannot be imported (or is not callable) fails validation like a bad field;
        `--no-handlers` skips the imports (handler dependencies missing where the check runs)."""
        (files / "handlers" / "orders.py").write_text("handle = 42\n")
        result = esm("validate", "valid.yaml", cwd=files)
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "valid.yaml: functions.orders.handler: handler 'handlers.orders:handle' is not callable (it is a int)"
        ]
        (files / "handlers" / "orders.py").unlink()
        result = esm("validate", "valid.yaml", cwd=files)
        assert result.returncode == 2
        assert result.stderr.startswith("valid.yaml: functions.orders.handler: cannot import handler")
        assert "ModuleNotFoundError" in result.stderr
        result = esm("validate", "--no-handlers", "valid.yaml", cwd=files)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["valid.yaml: ok"]

    def test_all_valid_files_exit_0(self, files: Path) -> None:
        """When every file is valid: exit 0, `FILE: ok` for each, nothing on stderr."""
        (files / "copy.yaml").write_text(VALID, encoding="utf-8")
        result = esm("validate", "valid.yaml", "copy.yaml", cwd=files)
        assert result.returncode == 0
        assert result.stdout.splitlines() == ["valid.yaml: ok", "copy.yaml: ok"]
        assert result.stderr == ""

    def test_file_is_named_as_given(self, files: Path) -> None:
        """Problems name the file exactly as it was given on the command line (here an absolute path)."""
        path = files / "one.yaml"
        result = esm("validate", str(path), cwd=ROOT)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"{path}: functions.orders: exactly one of `handler`, `lambda` or `url` is required"
        ]

    def test_missing_file_is_a_clear_problem(self, files: Path) -> None:
        """A missing file is reported as `FILE: <file>: No such file or directory` with exit 2; others still run."""
        result = esm("validate", "missing.yaml", "valid.yaml", cwd=files)
        assert result.returncode == 2
        assert result.stderr.splitlines() == ["missing.yaml: <file>: No such file or directory"]
        assert result.stdout.splitlines() == ["valid.yaml: ok"]

    def test_yaml_syntax_error_names_line_and_column(self, files: Path) -> None:
        """A YAML syntax error is reported with its line and column."""
        (files / "broken.yaml").write_text("aws:\n  region: [us-east-1\nhttp: {}\n", encoding="utf-8")
        result = esm("validate", "broken.yaml", cwd=files)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "broken.yaml: line 3, column 5: invalid YAML: expected ',' or ']', but got ':'"
        ]

    def test_environment_variables_are_expanded(self, files: Path) -> None:
        """`${VAR}` is read from the environment of the validating process."""
        (files / "env.yaml").write_text("http: {listen: '127.0.0.1:${ESM_PORT}'}\n", encoding="utf-8")
        assert esm("validate", "env.yaml", cwd=files, extra_env={"ESM_PORT": "9200"}).returncode == 0
        unset = esm("validate", "env.yaml", cwd=files)
        assert unset.returncode == 2
        assert unset.stderr.splitlines() == [
            "env.yaml: http.listen: environment variable ESM_PORT is not set",
            f"env.yaml: http.listen: {LISTEN}",
        ]

    def test_no_files_is_a_usage_error(self, files: Path) -> None:
        """`esm validate` without files prints usage and exits 2."""
        result = esm("validate", cwd=files)
        assert result.returncode == 2
        assert "usage:" in result.stderr
        assert "FILE" in result.stderr

    def test_example_configurations_are_valid(self) -> None:
        """Every example configuration shipped in config/ validates from the command line."""
        examples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").glob("*.yaml"))
        result = esm("validate", *examples, cwd=ROOT)
        assert result.stderr == ""
        assert result.returncode == 0
        assert result.stdout.splitlines() == [f"{name}: ok" for name in examples]


class TestSchema:
    """`esm schema` prints the configuration file's JSON Schema (draft 2020-12)."""

    def test_schema_is_a_valid_json_schema(self, schema: dict[str, Any]) -> None:
        """The output is a valid draft 2020-12 JSON Schema describing the file's sections."""
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert {"event_source_mappings", "functions"} <= set(schema["properties"])

    @pytest.mark.parametrize("name", ["example.yaml", "fifo.yaml", "lambda-and-http.yaml"])
    def test_schema_accepts_the_examples(self, schema: dict[str, Any], name: str) -> None:
        """The example configurations validate against the schema, so editors show no false errors."""
        document = yaml.safe_load((ROOT / "config" / name).read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator(schema).validate(document)

    def test_schema_rejects_unknown_keys(self, schema: dict[str, Any]) -> None:
        """A misspelt parameter is an error in the editor too, as in `esm validate`."""
        document = {"event_source_mappings": [{"EventSourceArn": QUEUE, "FunctionName": "f", "Batchsize": 5}]}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(schema).validate(document)
