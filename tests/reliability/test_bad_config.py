"""Invalid configuration files: each one is refused with its exact messages (issue 7, reliability point 4).

Every file in `bad-configs/` is one invalid configuration. Its first line says what is wrong, and
each `# expect: path: reason` line below it is one line `esm validate` must print for it (after
`FILE: `), in order; `{dir}` stands for the folder itself (handler import messages name it).
Together they cover what `tests/unit/test_config.py` does not already pin: YAML errors with line
and column (control characters, duplicate keys, alias bombs, python tags), wrong types, unknown
keys at every level, every AWS range of CreateEventSourceMapping per source, parameters on the
wrong source, bad ARNs, unknown functions, duplicate mappings, bad FilterCriteria, `${VAR}`
mistakes, http/state/reload/metrics/shutdown/streams/dev ranges, FIFO limits, functions with
several targets, and handlers that cannot be imported.

`esm validate` runs once over the whole folder as a user would (one subprocess), and once per
file in-process for each file's own exit code. A sample also goes through `esm run`, which must
exit 2 with the same message before it calls anything: its AWS endpoint is a listening socket
that must never see a connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from esm.cli import main
from esm.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
CASES_DIR = Path(__file__).resolve().parent / "bad-configs"
CASES = sorted(p.name for p in CASES_DIR.glob("*.yaml"))
EXPECT = b"# expect: "
# Files whose only problem is a handler `esm validate` cannot import (`--no-handlers` accepts them).
HANDLER_CASES = [name for name in CASES if "-handler-" in name]
# A sample of every kind of problem that `esm run` must refuse the same way before polling.
RUN_SAMPLE = [
    "03-yaml-duplicate-section.yaml",
    "29-kinesis-batch-size-10001.yaml",
    "68-unset-variable-in-arn.yaml",
    "74-endpoint-url-not-a-url.yaml",
]
RUN_HANDLER_SAMPLE = "64-handler-dependency-missing.yaml"

RunResults = dict[str, tuple[int, str, str]]
"""Each sampled file's `esm run` (exit code, stdout, stderr)."""


def expected(name: str) -> list[str]:
    """The `path: reason` lines a file's `# expect:` comments name, `{dir}` filled in."""
    lines = (CASES_DIR / name).read_bytes().splitlines()
    return [line[len(EXPECT) :].decode().replace("{dir}", str(CASES_DIR)) for line in lines if line.startswith(EXPECT)]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without esm's or AWS endpoint variables (no `${ESM_BAD_…}` is ever set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESM_", "AWS_ENDPOINT_URL"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env | extra


def by_file(stderr: str) -> dict[str, list[str]]:
    """`FILE: path: reason` lines grouped by FILE, each as `path: reason`."""
    grouped: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        name, sep, rest = line.partition(": ")
        assert sep, f"not a `FILE: path: reason` line: {line!r}"
        assert name in CASES, f"a line about no case file: {line!r}"
        grouped.setdefault(name, []).append(rest)
    return grouped


@pytest.fixture(scope="module")
def validate_all() -> subprocess.CompletedProcess[str]:
    """`esm validate` over every file of the folder, in one process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "esm", "validate", *CASES],
        cwd=CASES_DIR,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run `esm.cli.main` here without leaving the handler folder on sys.path or its modules imported."""
    monkeypatch.chdir(CASES_DIR)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [k for k in os.environ if k.startswith("ESM_")]:
        monkeypatch.delenv(name)
    yield
    for module in [m for m in sys.modules if m == "badhandlers" or m.startswith("badhandlers.")]:
        del sys.modules[module]


class TestTheTable:
    """The folder is a broad specification: at least 50 files, each saying what is wrong and what esm prints."""

    def test_at_least_fifty_invalid_files(self) -> None:
        """There are at least 50 invalid configuration files, numbered without gaps."""
        assert len(CASES) >= 50
        assert [int(name[:2]) for name in CASES] == list(range(1, len(CASES) + 1))

    @pytest.mark.parametrize("name", CASES)
    def test_each_file_describes_itself_and_expects_something(self, name: str) -> None:
        """Each file starts with a one-line description and names at least one expected message."""
        first = (CASES_DIR / name).read_bytes().splitlines()[0]
        assert first.startswith(b"# ")
        assert not first.startswith(EXPECT)
        assert expected(name)


class TestValidate:
    """`esm validate` refuses every file, with exactly the expected `FILE: path: reason` lines."""

    def test_the_whole_folder_exits_2_and_no_file_is_ok(self, validate_all: subprocess.CompletedProcess[str]) -> None:
        """Validating every file at once exits 2, and no file is reported `ok`."""
        assert validate_all.returncode == 2, validate_all.stderr
        assert validate_all.stdout == ""

    @pytest.mark.parametrize("name", CASES)
    def test_file_is_reported_exactly(self, validate_all: subprocess.CompletedProcess[str], name: str) -> None:
        """The file's lines in the folder-wide run are exactly its expected lines, in order."""
        assert by_file(validate_all.stderr).get(name) == expected(name)

    @pytest.mark.usefixtures("in_process")
    @pytest.mark.parametrize("name", CASES)
    def test_file_alone_exits_2_with_its_lines(self, name: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Validated alone, each file exits 2 and prints only its own lines on stderr."""
        assert main(["validate", name]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.splitlines() == [f"{name}: {line}" for line in expected(name)]

    @pytest.mark.usefixtures("in_process")
    @pytest.mark.parametrize("name", HANDLER_CASES)
    def test_no_handlers_skips_the_import(self, name: str, capsys: pytest.CaptureFixture[str]) -> None:
        """`--no-handlers` accepts a file whose only problem is its handler's import."""
        assert main(["validate", "--no-handlers", name]) == 0
        assert capsys.readouterr().out == f"{name}: ok\n"

    def test_the_handler_cases_are_all_there(self) -> None:
        """A missing module, a missing dependency and a missing function are all covered."""
        assert len(HANDLER_CASES) == 3


@contextlib.contextmanager
def sentinel_endpoint() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket standing in for AWS: the kernel completes any connection made to it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.setblocking(False)
        yield f"http://127.0.0.1:{server.getsockname()[1]}", server


def connections(server: socket.socket) -> int:
    """How many connections reached the sentinel (accepting each)."""
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.fixture(scope="module")
def run_sample() -> RunResults:
    """`esm run --config FILE` for each sampled file, in parallel; AWS is a sentinel that must see nothing.

    Returns each file's (exit code, stdout, stderr).
    """
    with sentinel_endpoint() as (endpoint, server):
        env = clean_env(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "esm", "run", "--config", name, "--log-format", "json"],
                cwd=CASES_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in [*RUN_SAMPLE, RUN_HANDLER_SAMPLE]
        }
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            results[name] = (proc.returncode, out, err)
        assert connections(server) == 0, "esm run called AWS although its configuration is invalid"
    return results


class TestRun:
    """`esm run` refuses the same files with the same messages, exit 2, before calling AWS."""

    @pytest.mark.parametrize("name", RUN_SAMPLE)
    def test_run_refuses_with_the_validate_messages(self, run_sample: RunResults, name: str) -> None:
        """`esm run` prints exactly validate's lines for the file on stderr and exits 2."""
        code, out, err = run_sample[name]
        assert (code, out) == (2, ""), err
        assert err.splitlines() == [f"{name}: {line}" for line in expected(name)]

    def test_run_refuses_an_unimportable_handler(self, run_sample: RunResults) -> None:
        """A handler that cannot be imported stops `esm run` with exit 2 before any mapping starts,
        logging the reason validate prints."""
        code, out, err = run_sample[RUN_HANDLER_SAMPLE]
        assert (code, out) == (2, ""), err
        events = [json.loads(line) for line in err.splitlines()]
        (line,) = expected(RUN_HANDLER_SAMPLE)
        assert [e["reason"] for e in events if e["event"] == "target_unusable"] == [
            line.removeprefix("functions.orders.handler: ")
        ]
        assert not any(e["event"] in ("daemon_started", "mapping_started") for e in events)


class TestTheNewRulesAreNotTooStrict:
    """What the rules added for this table (duplicate keys, `${` references, IPv6 listen, endpoints,
    booleans as numbers, the alias budget) still accept."""

    def test_valid_neighbours_of_the_bad_files_are_accepted(self) -> None:
        """A merge key overridden, `$${` literals, defaults, bracketed IPv6 and https endpoints all pass."""
        text = """\
aws:
  region: us-east-1
  endpoint_url: https://localhost.localstack.cloud:4566
  endpoints: {sqs: 'http://127.0.0.1:4566'}
http: {listen: '[::1]:9100'}
functions:
  audit:
    url: http://audit.local/invoke
    headers: {Authorization: 'Bearer ${ESM_OK_TOKEN:-dev}', X-Literal: 'costs $${PRICE} and $$5'}
event_source_mappings:
  - &orders
    EventSourceArn: arn:aws:sqs:us-east-1:123456789012:orders
    FunctionName: audit
    BatchSize: 10
    Enabled: true
  - <<: *orders
    EventSourceArn: arn:aws:sqs:us-east-1:123456789012:returns
    BatchSize: 5
    Enabled: false
"""
        spec = parse_config(text, "ok.yaml", {})
        assert spec.http.host == "::1"
        assert spec.functions["audit"].headers == {"Authorization": "Bearer dev", "X-Literal": "costs ${PRICE} and $5"}
        merged = spec.event_source_mappings[1]
        assert (merged.FunctionName, merged.BatchSize, merged.Enabled) == ("audit", 5, False)

    def test_a_large_document_with_aliases_is_still_accepted(self) -> None:
        """500 mappings that all merge one anchor are far below the alias budget."""
        first = "  - &m {FunctionName: f, BatchSize: 7, EventSourceArn: 'arn:aws:sqs:us-east-1:123456789012:q0'}\n"
        others = "".join(
            f"  - {{<<: *m, EventSourceArn: 'arn:aws:sqs:us-east-1:123456789012:q{i}'}}\n" for i in range(1, 500)
        )
        text = "functions: {f: {url: 'http://f.local/'}}\nevent_source_mappings:\n" + first + others
        spec = parse_config(text, "big.yaml", {})
        assert len(spec.event_source_mappings) == 500
        assert {m.BatchSize for m in spec.event_source_mappings} == {7}
