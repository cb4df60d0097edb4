"""The README's Kubernetes section lists every alert of the rules file, each with its runbook link."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO_ROOT

ALERTS = REPO_ROOT / "deploy" / "helm" / "esm" / "files" / "alerts.yaml"


def test_the_readme_alert_table_matches_the_rules_file() -> None:
    """Same alerts, same severities, and each link is the rule's own runbook anchor."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Alerts") : readme.index("### How this is tested")]
    rows = re.findall(r"^\| \[`(\w+)`\]\(docs/runbooks\.md#([\w-]+)\) \| (\w+) \|", section, flags=re.MULTILINE)
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    expected = [
        (r["alert"], r["annotations"]["runbook_url"].rpartition("#")[2], r["labels"]["severity"]) for r in rules
    ]
    assert rows == expected
