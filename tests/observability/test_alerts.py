"""The Prometheus alert rules the Helm chart ships (deploy/helm/esm/files/alerts.yaml).

Every expression is checked against the metrics esm exposes, every alert against its runbook
section (docs/runbooks.md), and the rules are run by promtool itself: `check rules`, then
`test rules` on alerts.test.yaml, where every alert has a case that fires and one that must not.
promtool comes with Debian's `prometheus` package; without it these tests fail, they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.promql import (
    ALERT_TESTS,
    ALERTS,
    RUNBOOK_URL,
    RUNBOOKS,
    alert_rules,
    expression_problems,
    github_anchor,
    grafana_variables,
    promtool,
    runbook_anchors,
)

RULES = alert_rules()
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}
DURATION = re.compile(r"^(\d+[smhdwy])+$")


def by_name(rule: dict[str, Any]) -> str:
    """A rule's pytest id."""
    return str(rule["alert"])


def test_the_file_is_a_plain_prometheus_rules_file() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    for group in document["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) == RULE_KEYS, rule.get("alert")
    assert len(RULES) >= 15


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"Esm[A-Z][A-Za-z0-9]+", name) for name in names)


@pytest.mark.parametrize("rule", RULES, ids=by_name)
def test_alert_is_documented(rule: dict[str, Any]) -> None:
    assert DURATION.match(rule["for"]), rule["for"]
    assert rule["labels"] == {"severity": rule["labels"]["severity"]}
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{ $labels." in annotations["summary"] + annotations["description"]
    assert annotations["runbook_url"] == RUNBOOK_URL + github_anchor(rule["alert"])


@pytest.mark.parametrize("rule", RULES, ids=by_name)
def test_alert_expression_names_only_what_esm_exposes(rule: dict[str, Any]) -> None:
    assert grafana_variables(rule["expr"]) == set()
    assert expression_problems(rule["expr"]) == []


def test_every_alert_has_a_runbook_section() -> None:
    anchors = runbook_anchors()
    assert len(anchors) == len(set(anchors))  # GitHub would suffix a repeated heading's anchor
    alerts = {github_anchor(rule["alert"]) for rule in RULES}
    assert alerts <= set(anchors)
    sections = {a for a in anchors if a.startswith("esm") and a != github_anchor("esm alert runbooks")}
    assert sections == alerts  # and no section of an alert that no longer exists


def test_runbook_sections_say_what_to_do() -> None:
    text = RUNBOOKS.read_text()
    for rule in RULES:
        section = text.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning.**", "**Likely causes.**", "**Check.**", "**Fix.**"):
            assert part in section, (rule["alert"], part)


def _alert_test_cases() -> dict[str, dict[str, int]]:
    """Per alert name, how many promtool cases expect it firing and how many expect nothing."""
    document = yaml.safe_load(ALERT_TESTS.read_text())
    assert document["rule_files"] == [ALERTS.name]
    cases: dict[str, dict[str, int]] = {}
    for test in document["tests"]:
        for case in test.get("alert_rule_test", []):
            kind = "firing" if case.get("exp_alerts") else "quiet"
            counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
            counts[kind] += 1
    return cases


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = _alert_test_cases()
    assert set(cases) == {rule["alert"] for rule in RULES}
    missing = {name: counts for name, counts in cases.items() if not (counts["firing"] and counts["quiet"])}
    assert missing == {}


def test_firing_cases_check_labels_and_annotations() -> None:
    document = yaml.safe_load(ALERT_TESTS.read_text())
    for test in document["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                assert alert["exp_labels"]["severity"], test["name"]
                assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}, test["name"]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_reports_a_wrong_expectation(tmp_path: Path) -> None:
    # The run above can fail: an expectation that does not hold makes promtool exit non-zero.
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    wrong = {
        "rule_files": [ALERTS.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'esm_dropped_events_total{event_source_mapping_uuid="u", function_name="f", '
                        'source="kinesis", job="esm", instance="esm-0:9100"}',
                        "values": "0x20",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "EsmRecordsDropped",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "wrong.test.yaml"
    test_file.write_text(yaml.safe_dump(wrong))
    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_a_missing_promtool_fails_and_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install prometheus"):
        promtool(path=str(tmp_path))
