"""PromQL of the Grafana dashboards and alert rules, and the metric names esm really exposes.

Shared by the observability tests and the end-to-end test that runs every dashboard query against
a real Prometheus scraping a running esm:

- `dashboard_queries(path)`: every panel target's `expr` of a dashboard, as Grafana stores it;
- `substitute_grafana_vars(expr)`: the same expression with Grafana's variables replaced by
  harmless values, so that Prometheus (or `promql_parser`) accepts it;
- `metric_names(expr)`: the metric names an expression selects (parsed with PyPI `promql-parser`);
- `exposed_metric_names()`: the sample names `esm.metrics.Metrics` exposes on /metrics.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry

from esm.arns import SourceKind
from esm.metrics import INVOKE_OUTCOMES, LEASE_EVENTS, MAPPING_STATES, Metrics

REPO = Path(__file__).resolve().parents[2]
CHART_FILES = REPO / "deploy" / "helm" / "esm" / "files"
DASHBOARDS = CHART_FILES / "dashboards"
ALERTS = CHART_FILES / "alerts.yaml"
ALERT_TESTS = CHART_FILES / "alerts.test.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/esm-dev/esm/blob/main/docs/runbooks.md#"

PROMETHEUS_METRICS: dict[str, frozenset[str]] = {"up": frozenset()}
"""Series Prometheus itself creates that the rules may use, with their labels (besides the target's)."""

TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint"})
"""Labels Prometheus adds at scrape time (`namespace`, `pod`, … in Kubernetes); never exposed by esm."""

_OUTCOMES = frozenset(INVOKE_OUTCOMES)
LABEL_VALUES: dict[tuple[str, str], frozenset[str]] = {
    ("esm_invocations_total", "outcome"): _OUTCOMES,
    ("esm_invocation_duration_seconds_bucket", "outcome"): _OUTCOMES,
    ("esm_invocation_duration_seconds_sum", "outcome"): _OUTCOMES,
    ("esm_invocation_duration_seconds_count", "outcome"): _OUTCOMES,
    ("esm_lease_events_total", "event"): frozenset(LEASE_EVENTS),
    ("esm_mapping_state", "state"): frozenset(MAPPING_STATES),
    # Written by MappingMetrics.queue_counts, the callers of window_closed, and the daemon's reloads.
    ("esm_sqs_queue_messages", "state"): frozenset({"visible", "in_flight", "delayed"}),
    ("esm_tumbling_windows_closed_total", "reason"): frozenset({"final", "terminated_early", "undeliverable"}),
    ("esm_config_reloads_total", "outcome"): frozenset({"applied", "rejected"}),
}
"""The values of esm's enumerated labels, per sample name; `source` takes `SourceKind` values everywhere."""

# Grafana's interval variables, replaced by fixed durations; every other `$var` is a template
# variable, replaced by a regex that matches anything (they are only used in =~ matchers).
_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def substitute_grafana_vars(expr: str, *, rate_interval: str = "5m") -> str:
    """`expr` with `$__rate_interval` (and `$__interval`, `$__range`) as durations, other variables as `.*`."""
    intervals = {**_INTERVALS, "__rate_interval": rate_interval}

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        return intervals.get(name, ".*")

    return _VARIABLE.sub(value, expr)


def grafana_variables(expr: str) -> set[str]:
    """The names of the Grafana variables `expr` refers to (`$__rate_interval` included)."""
    return {next(g for g in m.groups() if g is not None) for m in _VARIABLE.finditer(expr)}


def load_dashboard(path: Path) -> dict[str, Any]:
    """A dashboard JSON file, parsed."""
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows included, and the panels inside collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel of the dashboard at `path`, unsubstituted."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in panels(load_dashboard(path))
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def annotation_queries(path: Path) -> list[tuple[str, str]]:
    """(annotation name, expr) for the dashboard's Prometheus annotation queries."""
    board = load_dashboard(path)
    return [(a["name"], a["expr"]) for a in board.get("annotations", {}).get("list", []) if "expr" in a]


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)


def variable_queries(path: Path) -> list[tuple[str, str, str | None]]:
    """(variable name, PromQL, label) of the dashboard's query variables.

    `label_values(selector, label)` gives the selector and the label; `query_result(expr)` the
    expression and no label. Any other form raises ValueError (it could not be checked).
    """
    found: list[tuple[str, str, str | None]] = []
    for variable in load_dashboard(path).get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        if match := _LABEL_VALUES.match(text):
            found.append((variable["name"], match["selector"], match["label"]))
        elif match := _QUERY_RESULT.match(text):
            found.append((variable["name"], match["expr"], None))
        else:
            raise ValueError(f"variable {variable['name']}: unsupported query {text!r}")
    return found


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    """Every alerting rule of a Prometheus rules file."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def parse(expr: str) -> promql_parser.Expr:
    """`expr` parsed (Grafana variables must have been substituted); ValueError if it is not PromQL."""
    return promql_parser.parse(expr)


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, operator, value)]) of every vector selector of `expr`.

    The operator is one of `=`, `!=`, `=~`, `!~`. A selector must name its metric, by name or by an
    equality matcher on `__name__`; a selector that does not (`{__name__=~"esm_.*"}`) raises
    ValueError, since what it selects cannot be checked.
    """
    operators = [  # MatchOp values are not hashable
        (promql_parser.MatchOp.Equal, "="),
        (promql_parser.MatchOp.NotEqual, "!="),
        (promql_parser.MatchOp.Re, "=~"),
        (promql_parser.MatchOp.NotRe, "!~"),
    ]

    def operator(op: promql_parser.MatchOp) -> str:
        return next(text for candidate, text in operators if candidate == op)

    found: list[tuple[str, list[tuple[str, str, str]]]] = []

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        matchers = [(m.name, operator(m.op), m.value) for m in node.matchers.matchers]
        names = [value for label, op, value in matchers if label == "__name__" and op == "="]
        name = node.name or (names[0] if names else None)
        if not name:
            raise ValueError(f"a selector without a fixed metric name: {node}")
        found.append((name, [m for m in matchers if m[0] != "__name__"]))

    promql_parser.walk(parse(expr), visit)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects (after `substitute_grafana_vars` when it comes from Grafana)."""
    return {name for name, _ in selectors(expr)}


def grouping_labels(expr: str) -> set[str]:
    """Labels named by `by`/`without` and `on`/`ignoring`/`group_left`/`group_right` in `expr`."""
    found: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            found.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                found.update(node.modifier.matching.labels)
            found.update(node.modifier.group_labels or [])

    promql_parser.walk(parse(expr), visit)
    return found


def range_windows(expr: str, functions: frozenset[str] = frozenset({"rate", "irate", "increase"})) -> list[float]:
    """The range, in seconds, of every range selector passed directly to one of `functions`."""
    found: list[float] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name in functions:
            found.extend(a.range.total_seconds() for a in node.args if isinstance(a, promql_parser.MatrixSelector))

    promql_parser.walk(parse(expr), visit)
    return found


def _families() -> tuple[CollectorRegistry, Metrics]:
    registry = CollectorRegistry()
    return registry, Metrics(registry)


def exposed_metric_names() -> set[str]:
    """Every sample name /metrics can show: counters as `_total`, histograms as `_bucket`/`_sum`/`_count`.

    Built from the families `esm.metrics.Metrics` declares (the daemon disables the `_created` twins).
    """
    registry, _ = _families()
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


@functools.cache
def exposed_metric_labels() -> Mapping[str, frozenset[str]]:
    """Sample name -> label names, read from samples after every family got a child through esm's own API."""
    registry, metrics = _families()
    mapping = metrics.for_mapping("uuid", "function", "kinesis")
    mapping.for_shard("shardId-000000000000")
    mapping.invocation("success", 0.1)
    mapping.window_closed("final")
    mapping.oldest_message_age(1.0)
    mapping.stream_open_shards(1)
    mapping.queue_counts(1, 0, 0)
    mapping.source_error("ThrottlingException")
    mapping.describe("arn:aws:kinesis:us-east-1:123456789012:stream/clicks")
    mapping.state("running")
    metrics.lease_mapping("uuid")
    metrics.replica_info.labels("replica").set(1)
    metrics.config_reloads.labels("applied").inc()
    exposed = exposed_metric_names()
    labels: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in exposed:
                labels.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(found) for name, found in labels.items()}


def _allowed_values(metric: str, label: str) -> frozenset[str] | None:
    if label == "source":
        return frozenset(kind.value for kind in SourceKind)
    return LABEL_VALUES.get((metric, label))


def expression_problems(expr: str) -> list[str]:
    """Everything wrong with an expression (Grafana variables already substituted); empty if it is sound.

    It must parse; every selector must name a metric esm exposes (or Prometheus' `up`) and match
    only labels that metric has (or a scrape label such as `instance`), with known values for
    enumerated labels (`outcome`, `event`, `state`, `reason`, `source`); a template variable (`.*`
    after substitution) must sit in a regex matcher; `by`/`on`/`without`/`ignoring`/`group_*`
    may only name labels of the expression's metrics.
    """
    known_metrics = {**exposed_metric_labels(), **PROMETHEUS_METRICS}
    try:
        found = selectors(expr)
        grouped = grouping_labels(expr)
    except ValueError as exc:
        return [f"not usable: {exc}"]
    problems: list[str] = []
    in_expr = set(TARGET_LABELS)
    for name, matchers in found:
        if name not in known_metrics:
            problems.append(f"{name}: esm exposes no such metric")
            continue
        labels = known_metrics[name] | TARGET_LABELS
        in_expr |= labels
        for label, op, value in matchers:
            allowed = _allowed_values(name, label)
            if label not in labels:
                problems.append(f"{name}: has no label {label!r}")
            elif ".*" in value and op in ("=", "!="):
                problems.append(f"{name}: {label}{op}{value!r} compares a template variable literally; use =~")
            elif allowed is not None and (op in ("=", "!=") or re.fullmatch(r"[\w|]+", value)):
                problems.extend(
                    f"{name}: {label} is never {v!r} (it is one of {sorted(allowed)})"
                    for v in value.split("|")
                    if v not in allowed
                )
    problems.extend(f"groups or matches on {label!r}, a label none of its metrics has" for label in grouped - in_expr)
    return problems


def promtool(path: str | None = None) -> str:
    """The promtool binary; fails the test (never skips it) when it is not installed."""
    found = shutil.which("promtool", path=path)
    if found is None:
        pytest.fail(
            "promtool not found on PATH: the alert rule tests need it. Install Debian's `prometheus` "
            "package, which provides promtool: apt-get install prometheus"
        )
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_anchors(path: Path = RUNBOOKS) -> list[str]:
    """The GitHub anchors of every heading of the runbooks file (code blocks skipped)."""
    anchors: list[str] = []
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            anchors.append(github_anchor(match[1]))
    return anchors
