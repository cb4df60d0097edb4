"""The Helm values the README shows (blocks marked `<!-- helm-values -->`) work with the chart as it is.

Each block is checked against values.schema.json, rendered by Helm's library, every built-in
manifest validated strictly for the newest Kubernetes version, and the configuration file it
renders accepted by `esm validate`: a user who copies the README's values gets a working release.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.helm.test_chart import CHART, CUSTOM_RESOURCES, ESM, KUBE_VERSIONS, render
from tests.unit.test_examples import README, YamlBlock, yaml_blocks

BLOCKS = [b for b in yaml_blocks(README.read_text(encoding="utf-8")) if b.helm_values]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(str(CHART)) as loaded:
        yield loaded


def test_the_readme_shows_helm_values() -> None:
    """The Kubernetes section has at least one values file marked for this test."""
    assert BLOCKS, "README.md has no <!-- helm-values --> block"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"README.md:{b.line}")
def test_readme_values_render_a_valid_release(chart: helm_python.Chart, block: YamlBlock, tmp_path: Path) -> None:
    """Schema, render, strict manifests, the optional objects the values enable, `esm validate` of the file."""
    values = yaml.safe_load(block.text)
    chart.validate_schema(values)
    release = render(chart, values)
    for obj in release.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        kubernetes_validate.validate(obj, KUBE_VERSIONS[0], strict=True)
    for key in values:
        if key in {"serviceMonitor", "prometheusRule", "keda"} and values[key].get("enabled"):
            kind = {"serviceMonitor": "ServiceMonitor", "prometheusRule": "PrometheusRule", "keda": "ScaledObject"}[key]
            assert release.all(kind), f"{key}.enabled but no {kind} rendered"
    config = tmp_path / "config.yaml"
    config.write_text(release.config_map["data"]["config.yaml"])
    for name, source in (values.get("handlers") or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    result = subprocess.run(
        [str(ESM), "validate", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
