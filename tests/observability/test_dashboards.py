"""The Grafana dashboards the Helm chart ships (deploy/helm/esm/files/dashboards/*.json).

No Grafana server runs here: the JSON is checked for what makes a dashboard import anywhere and
show data — a `${datasource}` variable every query uses, stable uids, unique panel ids, a query on
every panel — and every PromQL expression is parsed (promql-parser, then Prometheus' own parser
through promtool) and checked against the metrics `esm.metrics.Metrics` really exposes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from esm.metrics import MAPPING_STATES
from tests.observability.promql import (
    DASHBOARDS,
    annotation_queries,
    dashboard_queries,
    exposed_metric_labels,
    exposed_metric_names,
    expression_problems,
    grafana_variables,
    load_dashboard,
    metric_names,
    panels,
    parse,
    promtool,
    range_windows,
    selectors,
    substitute_grafana_vars,
    variable_queries,
)

UIDS = {"esm-overview.json": "esm-overview", "esm-drilldown.json": "esm-drilldown"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_INTERVALS = {"__rate_interval", "__interval", "__range"}
# A duration no panel writes by hand: a window equal to it came from $__rate_interval.
RATE_INTERVAL_PROBE = "7m13s"


def _queries() -> list[Any]:
    """Every panel, annotation and variable query of every dashboard, as pytest parameters."""
    params = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        found = [("panel", title, expr) for title, expr in dashboard_queries(path)]
        found += [("annotation", name, expr) for name, expr in annotation_queries(path)]
        found += [("variable", name, expr) for name, expr, _ in variable_queries(path)]
        params += [
            pytest.param(path, kind, title, expr, id=f"{path.stem}:{kind}:{title}:{i}")
            for i, (kind, title, expr) in enumerate(found)
        ]
    return params


QUERIES = _queries()


@pytest.fixture(params=sorted(UIDS))
def path(request: pytest.FixtureRequest) -> Path:
    """One dashboard file."""
    return DASHBOARDS / str(request.param)


def test_the_chart_ships_exactly_the_two_dashboards() -> None:
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(UIDS)


def test_dashboard_identity(path: Path) -> None:
    board = load_dashboard(path)
    assert board["uid"] == UIDS[path.name]
    assert board["tags"] == ["esm"]
    assert board["schemaVersion"] == 39
    assert board["title"].startswith("esm / ")
    assert board["id"] is None  # provisioned or imported dashboards get their id from Grafana
    assert board["description"]


def test_a_datasource_variable_serves_every_query(path: Path) -> None:
    board = load_dashboard(path)
    variables = board["templating"]["list"]
    datasource = [v for v in variables if v["type"] == "datasource"]
    assert datasource == [variables[0]]  # first, so that every later query can use it
    assert datasource[0]["name"] == "datasource"
    assert datasource[0]["query"] == "prometheus"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
    for variable in variables[1:]:
        assert variable["datasource"] == DATASOURCE, variable["name"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == DATASOURCE, annotation["name"]


def test_dashboards_link_to_each_other(path: Path) -> None:
    board = load_dashboard(path)
    (other,) = set(UIDS.values()) - {board["uid"]}
    links = [link for link in board["links"] if link["type"] == "link"]
    assert [link["url"] for link in links] == [f"/d/{other}/{other}"]
    assert links[0]["includeVars"] is True  # the mapping and replica selection carry over
    assert links[0]["keepTime"] is True
    tagged = [link for link in board["links"] if link["type"] == "dashboards"]
    assert [link["tags"] for link in tagged] == [["esm"]]


def test_panel_ids_are_unique_and_panels_do_not_overlap(path: Path) -> None:
    board = load_dashboard(path)
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        pos = panel["gridPos"]
        assert 0 <= pos["x"] < pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_panel_has_a_promql_target(path: Path) -> None:
    board = load_dashboard(path)
    shown = [panel for panel in panels(board) if panel["type"] != "row"]
    assert len(shown) >= 20
    for panel in shown:
        assert panel["title"], panel["id"]
        assert panel["description"], panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert all(t["expr"].strip() for t in targets), panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_rows_hold_no_queries(path: Path) -> None:
    rows = [panel for panel in panels(load_dashboard(path)) if panel["type"] == "row"]
    assert rows
    assert all("targets" not in row and row["title"] for row in rows)


@pytest.mark.parametrize(("path", "kind", "title", "expr"), QUERIES)
def test_query_names_only_what_esm_exposes(path: Path, kind: str, title: str, expr: str) -> None:
    assert expression_problems(substitute_grafana_vars(expr)) == []


@pytest.mark.parametrize(("path", "kind", "title", "expr"), QUERIES)
def test_query_uses_only_defined_variables(path: Path, kind: str, title: str, expr: str) -> None:
    variables = [v["name"] for v in load_dashboard(path)["templating"]["list"]]
    used = grafana_variables(expr) - GRAFANA_INTERVALS
    if kind == "variable":  # a variable may only use the variables before it
        variables = variables[: variables.index(title)]
    assert used <= set(variables)


def test_rate_windows_use_rate_interval(path: Path) -> None:
    board = load_dashboard(path)
    for panel in panels(board):
        for target in panel.get("targets", []):
            windows = range_windows(substitute_grafana_vars(target["expr"], rate_interval=RATE_INTERVAL_PROBE))
            if panel["type"] == "stat":  # a stat may total a fixed period ("last hour")
                continue
            assert set(windows) <= {433.0}, f"{panel['title']}: {target['expr']}"


def test_variables_read_labels_their_metric_has(path: Path) -> None:
    labels = exposed_metric_labels()
    found = variable_queries(path)
    assert {name for name, _, _ in found} >= {"instance", "mapping"}
    for name, selector, label in found:
        (metric,) = metric_names(substitute_grafana_vars(selector))
        assert label in labels[metric] | {"instance"}, name


def test_every_exposed_metric_is_on_a_dashboard() -> None:
    exposed = exposed_metric_names()

    def family(name: str) -> str:  # a histogram is shown when any of its series is
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if name.endswith(suffix) and f"{base}_bucket" in exposed:
                return base
        return name

    shown = {
        family(name)
        for path in DASHBOARDS.glob("*.json")
        for _, expr in dashboard_queries(path)
        for name in metric_names(substitute_grafana_vars(expr))
    }
    assert {family(name) for name in exposed} - shown == set()


def test_every_query_parses_in_prometheus_own_parser(tmp_path: Path) -> None:
    # promql-parser follows Prometheus 2.45; promtool (the Prometheus CI and users install, 2.42 on
    # Debian bookworm) parses each expression as a recording rule: what it accepts, Prometheus runs.
    rules = [
        {"record": f"esm_dashboard:query_{i}", "expr": substitute_grafana_vars(expr)}
        for i, (_, _, _, expr) in enumerate(p.values for p in QUERIES)
    ]
    assert len(rules) > 50
    rules_file = tmp_path / "dashboard-queries.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_substitution_of_grafana_variables() -> None:
    expr = (
        'sum by (le) (rate(esm_batch_events_bucket{event_source_mapping_uuid=~"$mapping", '
        'instance=~"${instance}", shard=~"[[shard]]", function_name=~"${function:regex}"}[$__rate_interval]))'
        " / $__interval + $__range"
    )
    assert substitute_grafana_vars(expr) == (
        'sum by (le) (rate(esm_batch_events_bucket{event_source_mapping_uuid=~".*", '
        'instance=~".*", shard=~".*", function_name=~".*"}[5m]))'
        " / 1m + 1h"
    )
    assert substitute_grafana_vars("rate(x[$__rate_interval])", rate_interval="2m") == "rate(x[2m])"
    assert grafana_variables(expr) == {"mapping", "instance", "shard", "function"} | GRAFANA_INTERVALS


def test_the_checks_catch_wrong_expressions() -> None:
    # Each of these would silently show "No data" in Grafana.
    wrong = {
        "sum(rate(esm_polled_events[5m]))": "esm_polled_events: esm exposes no such metric",
        "esm_invocation_duration_seconds_total": "esm exposes no such metric",
        "histogram_quantile(0.9, rate(esm_batch_size_bucket[5m]))": "esm_batch_size_bucket: esm exposes no such",
        'esm_leases_held{function_name=~"orders"}': "esm_leases_held: has no label 'function_name'",
        'esm_invocations_total{outcome="partial_failure"}': "outcome is never 'partial_failure'",
        'esm_lease_events_total{event=~"lost|expired"}': "event is never 'expired'",
        'esm_sqs_queue_messages{state="inflight"}': "state is never 'inflight'",
        'esm_mapping_up{source="sns"}': "source is never 'sns'",
        'esm_mapping_up{event_source_mapping_uuid="$mapping"}': "compares a template variable literally",
        "sum by (mapping) (esm_mapping_up)": "groups or matches on 'mapping'",
        'esm_mapping_state{state="down"} == 1': "state is never 'down'",
        'esm_mapping_state{state=~"running|healthy"}': "state is never 'healthy'",
        'esm_mapping_info{state="running"}': "esm_mapping_info: has no label 'state'",
        'esm_config_last_reload_successful{outcome="rejected"}': "has no label 'outcome'",
        'sum({__name__=~"esm_.*_total"})': "a selector without a fixed metric name",
        "rate(esm_polled_events_total[5m]": "not usable",
        "no_such_function(esm_mapping_up)": "not usable",
    }
    for expr, problem in wrong.items():
        found = expression_problems(substitute_grafana_vars(expr))
        assert any(problem in p for p in found), (expr, found)
    assert metric_names("sum(rate(esm_polled_events[5m])) / on (instance) group_left up") == {"esm_polled_events", "up"}
    assert expression_problems('sum(rate(esm_polled_events_total{source=~"sqs|kinesis"}[5m]))') == []


def test_exposed_metric_names_follow_the_registry() -> None:
    names = exposed_metric_names()
    assert {"esm_polled_events_total", "esm_mapping_up", "esm_build_info"} <= names
    assert {"esm_invocation_duration_seconds_bucket", "esm_invocation_duration_seconds_count"} <= names
    assert "esm_polled_events" not in names  # counters are exposed with _total only
    assert not any(name.endswith("_created") for name in names)  # the daemon disables them
    labels = exposed_metric_labels()
    assert set(labels) == names  # every family was given a child, so every label set is known
    assert labels["esm_iterator_age_seconds"] == {"event_source_mapping_uuid", "function_name", "source", "shard"}
    assert labels["esm_leases_held"] == {"event_source_mapping_uuid"}
    assert "le" in labels["esm_batch_payload_bytes_bucket"]
    mapping = {"event_source_mapping_uuid", "function_name", "source"}
    assert labels["esm_mapping_info"] == mapping | {"event_source_arn"}
    assert labels["esm_mapping_state"] == mapping | {"state"}
    assert labels["esm_config_last_reload_successful"] == set()


# Panels that show a mapping's state as a number: `N * (esm_mapping_state{state="S", …} == 1)`.
_STATE_CODE = re.compile(r'(\d+) \* \(esm_mapping_state\{state="(\w+)"')


def _value_mappings(panel: dict[str, Any]) -> dict[str, str]:
    """Value -> text of every value mapping of a panel, its defaults and overrides together."""
    found: dict[str, str] = {}
    field_config = panel.get("fieldConfig", {})
    lists = [field_config.get("defaults", {}).get("mappings", [])]
    lists += [p["value"] for o in field_config.get("overrides", []) for p in o["properties"] if p["id"] == "mappings"]
    for mappings in lists:
        for mapping in mappings:
            if mapping["type"] == "value":
                found.update({value: option["text"] for value, option in mapping["options"].items()})
    return found


def test_state_codes_match_their_value_mappings(path: Path) -> None:
    # A panel that turns states into numbers (the worst state wins) must name each number as its state.
    coded = 0
    for panel in panels(load_dashboard(path)):
        for target in panel.get("targets", []):
            codes = dict(_STATE_CODE.findall(target["expr"]))
            if not codes:
                continue
            coded += 1
            assert sorted(codes.values()) == sorted(MAPPING_STATES), panel["title"]
            assert len(set(codes)) == len(codes), panel["title"]
            mappings = _value_mappings(panel)
            assert {code: mappings.get(code) for code in codes} == codes, panel["title"]
            assert codes[max(codes, key=int)] == "unhealthy", panel["title"]  # the worst state wins
    assert coded >= 1


def test_state_columns_name_every_state() -> None:
    board = load_dashboard(DASHBOARDS / "esm-drilldown.json")
    (table,) = [p for p in panels(board) if p["title"] == "Mapping on each replica"]
    (state,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "state"]
    (mappings,) = [p["value"] for p in state["properties"] if p["id"] == "mappings"]
    assert set(mappings[0]["options"]) == set(MAPPING_STATES)


def _next_row_y(board: dict[str, Any], row: dict[str, Any]) -> int:
    below = [p["gridPos"]["y"] for p in panels(board) if p["type"] == "row" and p["gridPos"]["y"] > row["gridPos"]["y"]]
    return min(below, default=10**6)


def test_queue_variable_lists_queue_arns_and_the_queue_panels_use_it() -> None:
    path = DASHBOARDS / "esm-drilldown.json"
    variables = {name: (selector, label) for name, selector, label in variable_queries(path)}
    selector, label = variables["queue"]
    assert label == "event_source_arn"
    ((metric, matchers),) = selectors(substitute_grafana_vars(selector))
    assert metric == "esm_mapping_info"
    assert ("source", "=", "sqs") in matchers
    board = load_dashboard(path)
    row = next(p for p in panels(board) if p["type"] == "row" and p["title"] == "SQS queue")
    queue_panels = [p for p in panels(board) if p["type"] != "row" and p["gridPos"]["y"] > row["gridPos"]["y"]]
    queue_panels = [p for p in queue_panels if p["gridPos"]["y"] < _next_row_y(board, row)]
    assert len(queue_panels) == 4
    for panel in queue_panels:
        for target in panel["targets"]:
            found = selectors(target["expr"].replace("$__rate_interval", "5m"))  # $queue stays a literal
            infos = [m for name, m in found if name == "esm_mapping_info"]
            assert infos, panel["title"]
            assert all(("event_source_arn", "=~", "$queue") in m for m in infos), panel["title"]
            assert "{{event_source_arn}}" in target["legendFormat"], panel["title"]


def test_arn_joins_are_made_replica_by_replica(path: Path) -> None:
    # The same UUID may read another ARN on another replica during a rolling change: joining per
    # replica (job, instance) never meets two ARNs for one UUID, which Prometheus would refuse.
    joins = 0
    for title, expr in dashboard_queries(path):

        def visit(node: promql_parser.Expr, title: str = title) -> None:
            nonlocal joins
            if not isinstance(node, promql_parser.BinaryExpr) or node.modifier is None:
                return
            if "event_source_arn" not in (node.modifier.group_labels or []):
                return
            joins += 1
            matching = node.modifier.matching
            assert matching is not None, title
            assert str(matching).startswith("on"), title
            assert set(matching.labels) == {"job", "instance", "event_source_mapping_uuid"}, title

        promql_parser.walk(parse(substitute_grafana_vars(expr)), visit)
    assert joins >= 2


def test_mapping_tables_show_the_source_arn_and_state() -> None:
    overview = load_dashboard(DASHBOARDS / "esm-overview.json")
    (table,) = [p for p in panels(overview) if p["title"] == "Mappings"]
    shown = {name for t in table["targets"] for name in metric_names(substitute_grafana_vars(t["expr"]))}
    assert {"esm_mapping_info", "esm_mapping_state"} <= shown
    names = [o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]]
    assert "event_source_arn" in names
    stats = {p["title"]: p for p in panels(overview) if p["type"] == "stat"}
    (config,) = stats["Configuration file"]["targets"]
    assert metric_names(substitute_grafana_vars(config["expr"])) == {"esm_config_last_reload_successful"}
