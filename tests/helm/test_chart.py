"""The Helm chart deploy/helm/esm (issue 6, point 1), rendered offline by Helm's own Go library.

No Kubernetes API server can run here (shared/TESTING.md), so the chart is checked as far as that
goes without one: it renders with the default values and with every optional feature on
(tests/helm/values-full.yaml); every built-in manifest passes Kubernetes' strict OpenAPI schemas
for the newest and an older supported version; the custom resources (ServiceMonitor,
PrometheusRule, ScaledObject) have the shape their operators require; `helm lint` finds nothing;
values.schema.json refuses bad values; the configuration file the chart renders passes
`esm validate`; and the KEDA queries are evaluated on sample series to show what they make KEDA
ask for. The dashboards and alert rules under files/ are written separately: they are compared
with the chart's output as they are when the tests run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import promql_parser
import pytest
import yaml

from tests.observability.promql import github_anchor

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "esm"
FILES = CHART / "files"
FULL_VALUES: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "values-full.yaml").read_text())
ESM = Path(sys.executable).parent / "esm"

NAMESPACE = "workers"
# The newest Kubernetes the validator knows, an older one, and the oldest the chart supports (kubeVersion).
KUBE_VERSIONS = ("1.37.0", "1.29.0", "1.25.0")
# Custom resources: kubernetes-validate has no schema for them, so their shape is checked by hand.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}

KINESIS = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
DDB_STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2024-06-10T19:26:16.525"
SQS = "arn:aws:sqs:us-east-1:123456789012:orders"
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"


# --------------------------------------------------------------------------------------------
# rendering


class Release:
    """A rendered release: its manifests by template path, parsed into objects."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.manifests = manifests
        self.notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
        self.objects = [
            doc
            for path, text in sorted(manifests.items())
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of one kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        """The one object of `kind` whose name ends with `name_suffix`."""
        found = [o for o in self.all(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[o['metadata'] for o in found]}"
        return found[0]

    def kinds(self) -> list[str]:
        """The kinds rendered, sorted."""
        return sorted(o["kind"] for o in self.objects)

    @property
    def deployment(self) -> dict[str, Any]:
        """The esm Deployment."""
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        """The Deployment's pod spec."""
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        """The esm container."""
        (container,) = self.pod["containers"]
        return container  # type: ignore[no-any-return]

    @property
    def config_map(self) -> dict[str, Any]:
        """The ConfigMap holding config.yaml and the handlers."""
        return self.one("ConfigMap", "-config")

    @property
    def config(self) -> dict[str, Any]:
        """The rendered configuration file, parsed."""
        return yaml.safe_load(self.config_map["data"]["config.yaml"])  # type: ignore[no-any-return]

    @property
    def test_pod(self) -> dict[str, Any]:
        """The `helm test` hook Pod."""
        return self.one("Pod", "-test-config")

    @property
    def pod_annotations(self) -> dict[str, str]:
        """The Deployment's pod template annotations."""
        return self.deployment["spec"]["template"]["metadata"].get("annotations") or {}


def render(chart: helm_python.Chart, values: dict[str, Any], name: str = "demo") -> Release:
    """Render the chart as `helm template` would for release `name` in NAMESPACE."""
    return Release(chart.render(values, name=name, namespace=NAMESPACE))


def render_error(chart: helm_python.Chart, values: dict[str, Any]) -> str:
    """The message of the render failure `values` must cause."""
    with pytest.raises(helm_python.HelmRenderError) as failure:
        chart.render(values, name="demo", namespace=NAMESPACE)
    return str(failure.value)


def with_changes(values: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `values` with top-level keys replaced."""
    out = copy.deepcopy(values)
    out.update(changes)
    return out


def mappings(*arns: str) -> list[dict[str, Any]]:
    """One valid mapping per source ARN, all on the Lambda function `worker`."""
    return [
        {"EventSourceArn": arn, "FunctionName": "worker"}
        | ({} if ":sqs:" in arn else {"StartingPosition": "TRIM_HORIZON"})
        for arn in arns
    ]


def keda_values(*arns: str, **keda: Any) -> dict[str, Any]:
    """Values with KEDA on, a lease table, and one mapping per ARN."""
    return {
        "config": {
            "state": {"sqlite": None, "dynamodb": {"table": "esm-leases"}},
            "event_source_mappings": mappings(*arns),
        },
        "keda": {"enabled": True, "prometheus": {"serverAddress": PROMETHEUS}} | keda,
    }


def dashboard_files() -> list[Path]:
    """The dashboards the chart ships now (possibly none)."""
    return sorted((FILES / "dashboards").glob("*.json"))


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    """The chart, loaded once."""
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def default(chart: helm_python.Chart) -> Release:
    """The release with the chart's default values."""
    return render(chart, {})


@pytest.fixture(scope="module")
def full(chart: helm_python.Chart) -> Release:
    """The release with every optional feature on."""
    return render(chart, FULL_VALUES, name="full")


@pytest.fixture(scope="module", params=["default", "full"])
def release(request: pytest.FixtureRequest) -> Release:
    """Each of the two releases."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# the chart as a whole


class TestChart:
    """The chart renders, validates against Kubernetes' schemas and lints clean."""

    def test_chart_metadata(self, chart: helm_python.Chart) -> None:
        """Chart.yaml: apiVersion v2, appVersion 0.1.0 (the image tag default), Kubernetes 1.25 and later."""
        meta = chart.metadata
        assert (meta["apiVersion"], meta["name"], meta["appVersion"]) == ("v2", "esm", "0.1.0")
        assert meta["kubeVersion"] == ">=1.25.0-0"

    def test_default_release_has_only_the_core_objects(self, default: Release) -> None:
        """With the defaults: ConfigMap, Deployment, Service, ServiceAccount and the test Pod, nothing optional."""
        assert default.kinds() == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]

    def test_full_release_has_every_optional_object(self, full: Release) -> None:
        """Every feature on: PDB, ServiceMonitor, ScaledObject, and the objects made from files/ when they exist."""
        expected = ["ConfigMap", "Deployment", "Pod", "PodDisruptionBudget", "ScaledObject", "Service"]
        expected += ["ServiceAccount", "ServiceMonitor"]
        if dashboard_files():
            expected.append("ConfigMap")
        if (FILES / "alerts.yaml").is_file():
            expected.append("PrometheusRule")
        assert full.kinds() == sorted(expected)

    @pytest.mark.parametrize("version", KUBE_VERSIONS)
    def test_manifests_pass_strict_kubernetes_schemas(self, release: Release, version: str) -> None:
        """Every built-in object passes the strict schema (no unknown fields, right types) of the version."""
        checked = []
        for obj in release.objects:
            if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} is invalid for Kubernetes {version}: {exc}")
            checked.append(obj["kind"])
        assert "Deployment" in checked
        assert "Service" in checked

    def test_every_object_is_namespaced_and_labelled(self, release: Release) -> None:
        """Each object names its namespace and carries the app.kubernetes.io labels of the release."""
        for obj in release.objects:
            meta = obj["metadata"]
            assert meta["namespace"] in {NAMESPACE, "monitoring"}, meta
            labels = meta["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/instance"] in {"demo", "full"}
            assert labels["helm.sh/chart"] == "esm-0.1.0"

    @pytest.mark.parametrize("values_name", ["default", "full"])
    def test_lint_finds_nothing(self, values_name: str) -> None:
        """`helm lint --strict` reports no error and no warning (only infos such as a missing icon)."""
        values = {} if values_name == "default" else FULL_VALUES
        report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.37.0")
        assert report["total_charts_linted"] == 1
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []

    def test_renders_without_the_files_folder(self, tmp_path: Path) -> None:
        """With files/ missing, every feature on still renders: no dashboards ConfigMap, no PrometheusRule."""
        copy_dir = tmp_path / "esm"
        shutil.copytree(CHART, copy_dir, ignore=shutil.ignore_patterns("files"))
        with helm_python.Chart.load(copy_dir) as bare:
            release = render(bare, FULL_VALUES, name="full")
        assert release.all("PrometheusRule") == []
        assert [o["metadata"]["name"] for o in release.all("ConfigMap")] == ["full-esm-config"]
        assert "ScaledObject" in release.kinds()


# --------------------------------------------------------------------------------------------
# values.schema.json


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("negative-replicas", {"replicaCount": -1}, "a negative replica count"),
    ("replicas-as-string", {"replicaCount": "3"}, "replicaCount is a number"),
    ("unknown-top-level-key", {"replicas": 3}, "a typo of replicaCount must not pass silently"),
    ("config-reload-not-in-enum", {"configReload": "restart"}, "only rollout or hotReload"),
    ("bad-pull-policy", {"image": {"pullPolicy": "Sometimes"}}, "Kubernetes' three pull policies only"),
    ("empty-image-repository", {"image": {"repository": ""}}, "an image needs a repository"),
    ("digest-not-sha256", {"image": {"digest": "latest"}}, "a digest is sha256:<64 hex>"),
    ("config-as-text", {"config": "http: {listen: 0.0.0.0:9100}"}, "config is a YAML mapping, not a string"),
    (
        "mapping-without-source",
        {"config": {"event_source_mappings": [{"FunctionName": "orders"}]}},
        "a mapping needs EventSourceArn",
    ),
    ("negative-grace-period", {"config": {"shutdown": {"grace_period": -1}}}, "esm refuses it too"),
    ("zero-termination-grace", {"terminationGracePeriodSeconds": 0}, "SIGKILL at once"),
    ("termination-grace-as-string", {"terminationGracePeriodSeconds": "60"}, "seconds are an integer"),
    ("handler-path-traversal", {"handlers": {"../evil.py": "x = 1"}}, "handlers stay inside /etc/esm"),
    ("handler-named-config-yaml", {"handlers": {"config.yaml": "x"}}, "would replace the configuration file"),
    ("handler-not-importable-name", {"handlers": {"my-handler.py": "x = 1"}}, "a module name is an identifier"),
    ("handler-source-not-text", {"handlers": {"orders.py": 1}}, "a handler is Python source text"),
    ("resources-typo", {"resources": {"limit": {"memory": "1Gi"}}}, "limits, not limit"),
    ("bad-quantity", {"resources": {"requests": {"memory": "lots"}}}, "a Kubernetes quantity"),
    ("service-type-external-name", {"service": {"type": "ExternalName"}}, "a metrics Service selects pods"),
    ("keda-min-zero", {"keda": {"minReplicaCount": 0}}, "with no pod there is no metric to scale up from"),
    (
        "keda-reserved-metadata",
        {"keda": {"prometheus": {"extraMetadata": {"query": "up"}}}},
        "the chart writes the query itself",
    ),
    ("keda-address-without-scheme", {"keda": {"prometheus": {"serverAddress": "prometheus:9090"}}}, "a URL"),
    ("keda-zero-backlog-target", {"keda": {"sqs": {"messagesPerReplica": 0}}}, "a division by zero"),
    ("pdb-bad-percentage", {"podDisruptionBudget": {"maxUnavailable": "half"}}, "an integer or N%"),
    ("scrape-interval-as-number", {"serviceMonitor": {"interval": 30}}, "a Prometheus duration such as 30s"),
    ("extra-env-as-mapping", {"extraEnv": {"AWS_REGION": "us-east-1"}}, "extraEnv is a list of EnvVar"),
    ("extra-env-without-name", {"extraEnv": [{"value": "x"}]}, "an EnvVar has a name"),
    ("extra-mount-relative", {"extraVolumeMounts": [{"name": "x", "mountPath": "data"}]}, "absolute mount paths"),
    (
        "annotation-not-a-string",
        {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": 1}}},
        "annotation values are strings",
    ),
    ("probe-unknown-field", {"livenessProbe": {"path": "/"}}, "the probe paths are esm's, fixed"),
    ("persistence-enabled", {"persistence": {"enabled": True}}, "existingClaim is the switch; no PVC is created"),
    ("automount-as-string", {"automountServiceAccountToken": "false"}, "a boolean"),
    ("update-strategy-typo", {"updateStrategy": {"type": "Rolling"}}, "RollingUpdate or Recreate"),
    (
        "runbook-base-with-anchor",
        {"prometheusRule": {"runbookBaseUrl": "https://wiki.example.com/esm#runbooks"}},
        "the chart appends #<alert section> itself",
    ),
    ("runbook-base-not-a-url", {"prometheusRule": {"runbookBaseUrl": "docs/runbooks.md"}}, "an absolute http(s) URL"),
    (
        "runbook-base-with-template",
        {"prometheusRule": {"runbookBaseUrl": "https://wiki.example.com/{{$labels.instance}}"}},
        "Prometheus would expand an alert template in the annotation",
    ),
]


class TestValuesSchema:
    """values.schema.json accepts the documented values and refuses the rest at install time."""

    def test_accepts_the_defaults(self, chart: helm_python.Chart) -> None:
        """The chart's own values.yaml is valid (validate_schema merges the values given into it)."""
        assert chart.schema is not None
        assert chart.schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        chart.validate_schema({})

    def test_accepts_the_full_values(self, chart: helm_python.Chart) -> None:
        """Every optional feature's values are valid."""
        chart.validate_schema(FULL_VALUES)

    @pytest.mark.parametrize(
        ("values", "reason"), [(v, r) for _, v, r in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
    )
    def test_rejects(self, chart: helm_python.Chart, values: dict[str, Any], reason: str) -> None:
        """A bad value is refused, the message naming where (the id and reason say why it is bad)."""
        with pytest.raises(helm_python.HelmValuesError) as refused:
            chart.validate_schema(values)
        assert "at '" in str(refused.value), reason

    def test_render_applies_the_schema(self, chart: helm_python.Chart) -> None:
        """`helm install` (render) refuses bad values before any template runs."""
        with pytest.raises(helm_python.HelmValuesError, match="replicaCount"):
            chart.render({"replicaCount": -1}, name="demo", namespace=NAMESPACE)


# --------------------------------------------------------------------------------------------
# the pod


class TestSecurity:
    """The pods run as the image's unprivileged user with nothing they do not need."""

    def test_pod_security_context(self, release: Release) -> None:
        """Non-root UID/GID 10001 (the image's user), fsGroup 10001 for the state volume, RuntimeDefault seccomp."""
        assert release.pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    def test_container_security_context(self, release: Release) -> None:
        """Read-only root filesystem, no privilege escalation, every capability dropped."""
        ctx = release.container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx.get("privileged", False) is False

    def test_only_the_state_folder_is_writable(self, release: Release) -> None:
        """Every mount but /var/lib/esm (and the user's extra volumes) is read-only; state.sqlite lies below it."""
        mounts = {m["mountPath"]: m for m in release.container["volumeMounts"]}
        assert mounts["/etc/esm"]["readOnly"] is True
        assert not mounts["/var/lib/esm"].get("readOnly", False)
        sqlite = release.config["state"].get("sqlite")
        if sqlite is not None:
            assert Path(sqlite).parent == Path("/var/lib/esm")

    def test_no_kubernetes_api_token(self, release: Release) -> None:
        """esm never calls the Kubernetes API: no token in the pod, nor through the ServiceAccount."""
        assert release.pod["automountServiceAccountToken"] is False
        assert release.one("ServiceAccount")["automountServiceAccountToken"] is False

    def test_resources_have_requests_and_a_memory_limit(self, default: Release) -> None:
        """Defaults request CPU and memory and cap memory (no CPU limit: throttling would stall the event loop)."""
        resources = default.container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"}
        assert set(resources["limits"]) == {"memory"}


class TestContainer:
    """Image, command, ports, probes and environment of the esm container."""

    def test_image_defaults_to_the_app_version(self, default: Release) -> None:
        """repository:appVersion, pulled IfNotPresent, running `esm run --config /etc/esm/config.yaml`."""
        assert default.container["image"] == "esm:0.1.0"
        assert default.container["imagePullPolicy"] == "IfNotPresent"
        assert default.container["args"] == ["run", "--config", "/etc/esm/config.yaml"]
        assert "command" not in default.container  # the image's ENTRYPOINT is esm

    def test_a_digest_pins_the_image(self, chart: helm_python.Chart) -> None:
        """image.digest replaces the tag."""
        digest = "sha256:" + "ab" * 32
        release = render(chart, {"image": {"repository": "ghcr.io/x/esm", "tag": "9.9.9", "digest": digest}})
        assert release.container["image"] == f"ghcr.io/x/esm@{digest}"

    def test_probes(self, release: Release) -> None:
        """Liveness GET /healthz and readiness GET /readyz, both on the named port `http`."""
        assert release.container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert release.container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    def test_probes_can_be_turned_off(self, chart: helm_python.Chart) -> None:
        """enabled: false leaves a probe out."""
        release = render(chart, {"livenessProbe": {"enabled": False}})
        assert "livenessProbe" not in release.container
        assert "readinessProbe" in release.container

    def test_port_comes_from_http_listen(self, chart: helm_python.Chart) -> None:
        """config.http.listen's port is the container port, the Service port and (by name) the probes' port."""
        release = render(chart, {"config": {"http": {"listen": "0.0.0.0:8080"}}})
        assert release.container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        (port,) = release.one("Service")["spec"]["ports"]
        assert (port["port"], port["targetPort"]) == (8080, "http")
        assert release.config["http"]["listen"] == "0.0.0.0:8080"

    @pytest.mark.parametrize(
        ("listen", "message"),
        [
            ("127.0.0.1:9100", "binds the loopback interface"),
            ("localhost:9100", "binds the loopback interface"),
            ("0.0.0.0:0", "the port must be 1-65535"),
            ("${LISTEN}", "must be a literal HOST:PORT"),
        ],
    )
    def test_unreachable_listen_address_fails(self, chart: helm_python.Chart, listen: str, message: str) -> None:
        """An address probes and Prometheus could not reach stops the render, saying why."""
        assert message in render_error(chart, {"config": {"http": {"listen": listen}}})

    def test_pod_name_is_the_replica_id(self, release: Release) -> None:
        """POD_NAME comes from the downward API (esm's replica id in the lease table)."""
        env = {e["name"]: e for e in release.container["env"]}
        assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    def test_extra_env_volumes_and_scheduling(self, full: Release) -> None:
        """extraEnv, extraEnvFrom, extraVolumes/Mounts and the scheduling values reach the pod unchanged."""
        names = [e["name"] for e in full.container["env"]]
        assert names == ["POD_NAME"] + [e["name"] for e in FULL_VALUES["extraEnv"]]
        assert full.container["envFrom"] == FULL_VALUES["extraEnvFrom"]
        assert FULL_VALUES["extraVolumeMounts"][0] in full.container["volumeMounts"]
        assert FULL_VALUES["extraVolumes"][0] in full.pod["volumes"]
        for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
            assert full.pod[key] == FULL_VALUES[key], key
        assert full.pod["imagePullSecrets"] == [{"name": "regcred"}]
        template = full.deployment["spec"]["template"]["metadata"]
        assert template["labels"]["tier"] == "workers"
        assert template["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"

    def test_service_account_with_irsa(self, full: Release) -> None:
        """The pods run as the created ServiceAccount, which carries the IRSA role annotation."""
        account = full.one("ServiceAccount")
        assert account["metadata"]["name"] == full.pod["serviceAccountName"] == "esm-poller"
        assert account["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/esm"
        }

    def test_existing_service_account(self, chart: helm_python.Chart) -> None:
        """create: false uses the named account (or `default`) and renders none."""
        release = render(chart, {"serviceAccount": {"create": False, "name": "shared"}})
        assert release.all("ServiceAccount") == []
        assert release.pod["serviceAccountName"] == "shared"


class TestGracePeriod:
    """terminationGracePeriodSeconds leaves esm time to drain, checkpoint and release its leases."""

    @pytest.mark.parametrize(("grace", "expected"), [(None, 40), (40, 55), (12.5, 28), (0, 15)])
    def test_derived_from_shutdown_grace_period(
        self, chart: helm_python.Chart, grace: float | None, expected: int
    ) -> None:
        """Default: ceil(shutdown.grace_period) + 15, with esm's 25 s when the config sets none."""
        values = {} if grace is None else {"config": {"shutdown": {"grace_period": grace}}}
        release = render(chart, values)
        assert release.pod["terminationGracePeriodSeconds"] == expected
        assert expected > (25 if grace is None else grace)

    def test_explicit_value_above_the_grace_period(self, full: Release) -> None:
        """A value above shutdown.grace_period is used as given."""
        assert full.config["shutdown"]["grace_period"] == 40
        assert full.pod["terminationGracePeriodSeconds"] == 60

    @pytest.mark.parametrize(("given", "grace"), [(25, None), (10, None), (30, 30), (30, 45.5)])
    def test_explicit_value_not_above_the_grace_period_fails(
        self, chart: helm_python.Chart, given: int, grace: float | None
    ) -> None:
        """A value not above the drain time is refused with the reason."""
        values: dict[str, Any] = {"terminationGracePeriodSeconds": given}
        if grace is not None:
            values["config"] = {"shutdown": {"grace_period": grace}}
        message = render_error(chart, values)
        assert f"terminationGracePeriodSeconds ({given}) must be greater than" in message
        assert "shutdown.grace_period" in message


# --------------------------------------------------------------------------------------------
# the configuration file


class TestConfigFile:
    """config.yaml and the handler modules, as the pod sees them in /etc/esm."""

    def test_default_config(self, default: Release) -> None:
        """The defaults: listen on every interface, SQLite on the state volume, no mappings yet."""
        assert default.config == {
            "http": {"listen": "0.0.0.0:9100"},
            "state": {"sqlite": "/var/lib/esm/esm-state.db"},
            "functions": {},
            "event_source_mappings": [],
        }

    def test_rendered_config_passes_esm_validate(self, default: Release, full: Release, tmp_path: Path) -> None:
        """`esm validate` accepts both rendered files, with the environment the pod gives esm."""
        files = []
        for name, release in (("default", default), ("full", full)):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "config.yaml").write_text(release.config_map["data"]["config.yaml"])
            files.append(str(folder / "config.yaml"))
        # The handler modules beside it, where the pod mounts them (esm validate imports them).
        for relative, source in FULL_VALUES["handlers"].items():
            (tmp_path / "full" / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "full" / relative).write_text(source)
        # ${VAR} in the file is expanded from the container's env: give each extraEnv a value.
        env = os.environ | {e["name"]: e.get("value", "from-a-secret") for e in full.container["env"]}
        result = subprocess.run(
            [str(ESM), "validate", *files], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"{f}: ok" for f in files]

    def test_config_values_reach_the_file_unchanged(self, full: Release) -> None:
        """Every section of `config` is in config.yaml as given (state.sqlite: null removed the default)."""
        config = full.config
        for section in ("aws", "functions", "event_source_mappings", "shutdown"):
            assert config[section] == FULL_VALUES["config"][section], section
        assert config["state"] == {"dynamodb": FULL_VALUES["config"]["state"]["dynamodb"]}

    def test_config_folder_is_mounted_without_subpath(self, release: Release) -> None:
        """/etc/esm is the whole ConfigMap volume; no mount of any container uses subPath (hot reload needs it)."""
        for pod in (release.pod, release.test_pod["spec"]):
            for container in pod["containers"]:
                for mount in container["volumeMounts"]:
                    assert "subPath" not in mount, mount
                    assert "subPathExpr" not in mount, mount
        (config_mount,) = [m for m in release.container["volumeMounts"] if m["mountPath"] == "/etc/esm"]
        volume = next(v for v in release.pod["volumes"] if v["name"] == config_mount["name"])
        assert volume["configMap"]["name"] == release.config_map["metadata"]["name"]

    def test_handlers_are_importable_from_the_mounted_folder(self, full: Release, tmp_path: Path) -> None:
        """Rebuilt from the ConfigMap and the volume's items, /etc/esm holds every handler module the config names."""
        (volume,) = [v for v in full.pod["volumes"] if v["name"] == "config"]
        data = full.config_map["data"]
        for item in volume["configMap"]["items"]:
            target = tmp_path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
        assert sorted(data) == sorted(item["key"] for item in volume["configMap"]["items"])
        for path, source in FULL_VALUES["handlers"].items():
            assert (tmp_path / path).read_text() == source  # byte for byte
        handlers = [fn["handler"] for fn in full.config["functions"].values() if "handler" in fn]
        assert len(handlers) == 2
        check = (
            "import importlib, sys\n"
            "for spec in sys.argv[1:]:\n"
            "    module, _, attr = spec.partition(':')\n"
            "    assert callable(getattr(importlib.import_module(module), attr)), spec\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", check, *handlers],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=os.environ | {"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"},
        )
        assert result.returncode == 0, result.stderr

    def test_state_volume_is_an_empty_dir_by_default(self, default: Release) -> None:
        """/var/lib/esm is an emptyDir with a size limit; the Deployment keeps Kubernetes' rolling update."""
        state = next(v for v in default.pod["volumes"] if v["name"] == "state")
        assert state["emptyDir"] == {"sizeLimit": "256Mi"}
        assert "strategy" not in default.deployment["spec"]

    def test_existing_claim_holds_sqlite_state(self, chart: helm_python.Chart) -> None:
        """An existing claim replaces the emptyDir; with SQLite state the pods are recreated, never overlapped."""
        release = render(chart, {"persistence": {"existingClaim": "esm-state"}})
        state = next(v for v in release.pod["volumes"] if v["name"] == "state")
        assert state == {"name": "state", "persistentVolumeClaim": {"claimName": "esm-state"}}
        assert release.deployment["spec"]["strategy"] == {"type": "Recreate"}

    def test_relative_sqlite_path_with_streams_fails(self, chart: helm_python.Chart) -> None:
        """A relative state.sqlite would land in the read-only /etc/esm: refused when stream mappings need it."""
        values = {"config": {"state": {"sqlite": "./esm-state.db"}, "event_source_mappings": mappings(KINESIS)}}
        assert "is relative" in render_error(chart, values)


class TestConfigReload:
    """configReload: rollout rolls the pods on a change, hotReload lets esm apply it."""

    def test_rollout_annotates_the_config_checksum(self, chart: helm_python.Chart, default: Release) -> None:
        """A sha256 of the ConfigMap, stable for the same values, different for another config or handler."""
        checksum = default.pod_annotations["checksum/config"]
        assert re.fullmatch(r"[0-9a-f]{64}", checksum)
        assert render(chart, {}).pod_annotations["checksum/config"] == checksum
        changed = render(chart, {"config": {"shutdown": {"grace_period": 10}}})
        assert changed.pod_annotations["checksum/config"] != checksum
        handler = render(chart, {"handlers": {"orders.py": "def handle(event, context):\n    return None\n"}})
        assert handler.pod_annotations["checksum/config"] not in {checksum, changed.pod_annotations["checksum/config"]}

    def test_hot_reload_has_no_config_checksum(self, chart: helm_python.Chart, full: Release) -> None:
        """hotReload: no checksum/config, and a config change leaves the pod template as it was."""
        assert "checksum/config" not in full.pod_annotations
        config = copy.deepcopy(FULL_VALUES["config"])
        config["functions"]["orders"]["timeout"] = 25
        changed = render(chart, with_changes(FULL_VALUES, config=config), name="full")
        assert changed.config["functions"]["orders"]["timeout"] == 25
        assert changed.deployment["spec"]["template"] == full.deployment["spec"]["template"]

    def test_hot_reload_turns_the_watch_on(self, chart: helm_python.Chart, full: Release) -> None:
        """hotReload forces reload.watch on (keeping the interval); rollout leaves `reload` as given."""
        assert full.config["reload"] == {"watch": True, "interval": 5}
        forced = render(chart, {"configReload": "hotReload", "config": {"reload": {"watch": False}}})
        assert forced.config["reload"] == {"watch": True}
        assert "reload" not in render(chart, {}).config

    def test_hot_reload_still_rolls_on_handler_changes(self, chart: helm_python.Chart, full: Release) -> None:
        """esm imports handler modules once per process, so a handler change rolls the pods even in hotReload."""
        checksum = full.pod_annotations["checksum/handlers"]
        handlers = dict(FULL_VALUES["handlers"]) | {"clicks.py": "def handle(event, context):\n    return {}\n"}
        changed = render(chart, with_changes(FULL_VALUES, handlers=handlers), name="full")
        assert changed.pod_annotations["checksum/handlers"] != checksum
        without = render(chart, {"configReload": "hotReload"})
        assert "checksum/handlers" not in without.pod_annotations


# --------------------------------------------------------------------------------------------
# replicas, leases, disruption budget


class TestReplicas:
    """Several replicas only where esm can share the work."""

    @pytest.mark.parametrize("arn", [KINESIS, DDB_STREAM], ids=["kinesis", "dynamodb-streams"])
    def test_several_replicas_with_stream_mappings_need_the_lease_table(
        self, chart: helm_python.Chart, arn: str
    ) -> None:
        """replicaCount > 1 with a stream mapping and SQLite checkpoints is refused, naming state.dynamodb."""
        message = render_error(chart, {"replicaCount": 2, "config": {"event_source_mappings": mappings(SQS, arn)}})
        assert "replicaCount is 2" in message
        assert "config.state.dynamodb" in message

    def test_keda_maximum_counts_as_several_replicas(self, chart: helm_python.Chart) -> None:
        """KEDA allowed to scale past one replica is refused the same way."""
        values = keda_values(KINESIS, maxReplicaCount=3)
        values["config"]["state"] = {"dynamodb": None}
        assert "keda.maxReplicaCount is 3" in render_error(chart, values)

    @pytest.mark.parametrize(
        ("replicas", "config"),
        [
            (1, {"event_source_mappings": mappings(KINESIS)}),
            (3, {"event_source_mappings": mappings(SQS)}),
            (3, {"state": {"dynamodb": {"table": "esm-leases"}}, "event_source_mappings": mappings(KINESIS, SQS)}),
        ],
        ids=["one-replica-streams", "sqs-only", "lease-table"],
    )
    def test_allowed_replica_counts(self, chart: helm_python.Chart, replicas: int, config: dict[str, Any]) -> None:
        """One replica with SQLite, SQS-only configurations, and a lease table render the count asked for."""
        assert render(chart, {"replicaCount": replicas, "config": config}).deployment["spec"]["replicas"] == replicas

    def test_pdb_follows_the_replica_count(self, chart: helm_python.Chart, default: Release) -> None:
        """No PDB for one replica; maxUnavailable 1 from two replicas on; minAvailable when asked."""
        assert default.all("PodDisruptionBudget") == []
        two = render(chart, {"replicaCount": 2}).one("PodDisruptionBudget")
        assert two["spec"]["maxUnavailable"] == 1
        assert two["spec"]["selector"]["matchLabels"] == default.deployment["spec"]["selector"]["matchLabels"]
        min_available = render(
            chart, {"replicaCount": 3, "podDisruptionBudget": {"maxUnavailable": None, "minAvailable": "50%"}}
        ).one("PodDisruptionBudget")
        assert min_available["spec"] == {"minAvailable": "50%", "selector": two["spec"]["selector"]}

    def test_pdb_with_both_bounds_fails(self, chart: helm_python.Chart) -> None:
        """maxUnavailable and minAvailable together are refused (Kubernetes allows one)."""
        values = {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1, "minAvailable": 1}}
        assert "either maxUnavailable or minAvailable" in render_error(chart, values)


# --------------------------------------------------------------------------------------------
# KEDA


def evaluate(node: Any, series: list[tuple[dict[str, str], float]]) -> Any:
    """Evaluate the PromQL subset the chart's queries use on instant samples (name in `__name__`).

    Returns a float for scalars, else a list of (labels, value). Enough Prometheus semantics to
    show what a query answers: selectors with = matchers, sum/max (by), / by a number, `or`,
    ceil, clamp_max, scalar, vector.
    """
    if isinstance(node, promql_parser.ParenExpr):
        return evaluate(node.expr, series)
    if isinstance(node, promql_parser.NumberLiteral):
        return node.val
    if isinstance(node, promql_parser.VectorSelector):
        wanted = {m.name: m.value for m in node.matchers.matchers}
        assert all(m.op == promql_parser.MatchOp.Equal for m in node.matchers.matchers)
        return [
            ({k: v for k, v in labels.items() if k != "__name__"}, value)
            for labels, value in series
            if labels["__name__"] == node.name and all(labels.get(k) == v for k, v in wanted.items())
        ]
    if isinstance(node, promql_parser.AggregateExpr):
        by = list(node.modifier.labels) if node.modifier is not None else []
        assert node.modifier is None or node.modifier.type == promql_parser.AggModifierType.By
        groups: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for labels, value in evaluate(node.expr, series):
            groups.setdefault(tuple((k, labels.get(k, "")) for k in by), []).append(value)
        combine = {"sum": sum, "max": max}[str(node.op)]
        return [(dict(key), float(combine(values))) for key, values in groups.items()]
    if isinstance(node, promql_parser.BinaryExpr):
        lhs, rhs = evaluate(node.lhs, series), evaluate(node.rhs, series)
        if str(node.op) == "/":
            assert isinstance(rhs, float)
            return [(labels, value / rhs) for labels, value in lhs]
        assert str(node.op) == "or"
        return lhs + [(labels, value) for labels, value in rhs if labels not in [lbl for lbl, _ in lhs]]
    assert isinstance(node, promql_parser.Call), type(node)
    args = [evaluate(arg, series) for arg in node.args]
    name = node.func.name
    if name == "ceil":
        return [(labels, float(math.ceil(value))) for labels, value in args[0]]
    if name == "clamp_max":
        return [(labels, min(value, args[1])) for labels, value in args[0]]
    if name == "scalar":
        return args[0][0][1] if len(args[0]) == 1 else math.nan
    assert name == "vector"
    return [({}, args[0])]


def desired_replicas(trigger: dict[str, Any], series: list[tuple[dict[str, str], float]], keda: dict[str, Any]) -> int:
    """What KEDA's HPA asks for from one Prometheus trigger: ceil(value / threshold) within min and max.

    KEDA reads the query's single label-less value (an empty answer is 0 with ignoreNullValues); an
    AverageValue target makes the HPA divide it by the threshold.
    """
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["ignoreNullValues"] == "true"
    answer = evaluate(promql_parser.parse(trigger["metadata"]["query"]), series)
    assert len(answer) <= 1, answer  # KEDA refuses a query that answers several series
    assert all(labels == {} for labels, _ in answer), answer
    value = answer[0][1] if answer else 0.0
    wanted = math.ceil(value / float(trigger["metadata"]["threshold"]))
    return int(min(max(wanted, keda["minReplicaCount"]), keda["maxReplicaCount"]))


def sample(name: str, value: float, pod: str, uuid: str = "m1", **labels: str) -> tuple[dict[str, str], float]:
    """One series of release `demo`'s pod `pod`, as a ServiceMonitor target would have it."""
    base = {"__name__": name, "namespace": NAMESPACE, "service": "demo-esm", "pod": pod}
    return base | {"event_source_mapping_uuid": uuid} | labels, value


@pytest.fixture(scope="module")
def scaled(chart: helm_python.Chart) -> dict[str, Any]:
    """The ScaledObject of a release with SQS and Kinesis mappings, at most 20 replicas."""
    values = keda_values(SQS, KINESIS, maxReplicaCount=20)
    values["keda"] |= {"sqs": {"messagesPerReplica": 100}, "streams": {"lagSecondsPerReplica": 60}}
    return render(chart, values).one("ScaledObject")


class TestKeda:
    """The ScaledObject scales on esm's own metrics, and never asks for more stream replicas than shards."""

    @staticmethod
    def trigger(scaled: dict[str, Any], name: str) -> dict[str, Any]:
        """The trigger named `name`."""
        (found,) = [t for t in scaled["spec"]["triggers"] if t["name"] == name]
        return found  # type: ignore[no-any-return]

    def test_scaled_object_shape(self, scaled: dict[str, Any]) -> None:
        """keda.sh/v1alpha1 ScaledObject on the Deployment, prometheus triggers with string metadata."""
        assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
        spec = scaled["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-esm"}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 20)
        assert [t["name"] for t in spec["triggers"]] == ["sqs-visible-backlog", "stream-reader-lag"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus"
            assert trigger["metadata"]["serverAddress"] == PROMETHEUS
            assert all(isinstance(v, str) for v in trigger["metadata"].values())
            promql_parser.parse(trigger["metadata"]["query"])  # valid PromQL

    def test_deployment_replicas_left_to_keda(self, chart: helm_python.Chart, full: Release) -> None:
        """With KEDA the Deployment has no `replicas` (KEDA's HPA owns it); without, it has replicaCount."""
        assert "replicas" not in full.deployment["spec"]
        assert render(chart, {"replicaCount": 2}).deployment["spec"]["replicas"] == 2

    def test_queries_select_this_release(self, scaled: dict[str, Any]) -> None:
        """Every selector of every query matches namespace and service of this release's ServiceMonitor targets."""
        for trigger in scaled["spec"]["triggers"]:
            selectors: list[Any] = []
            collect_selectors(promql_parser.parse(trigger["metadata"]["query"]), selectors)
            assert selectors
            for selector in selectors:
                matchers = {m.name: m.value for m in selector.matchers.matchers}
                assert matchers["namespace"] == NAMESPACE
                assert matchers["service"] == "demo-esm"

    def test_sqs_backlog_per_replica(self, scaled: dict[str, Any]) -> None:
        """ceil(visible backlog / messagesPerReplica), each mapping counted once however many replicas report it."""
        trigger = self.trigger(scaled, "sqs-visible-backlog")
        assert trigger["metadata"]["threshold"] == "100"
        spec = scaled["spec"]
        series = [sample("esm_sqs_queue_messages", 450, f"esm-{i}", state="visible") for i in range(3)]
        series += [sample("esm_sqs_queue_messages", 9999, f"esm-{i}", state="in_flight") for i in range(3)]
        assert desired_replicas(trigger, series, spec) == 5  # 450 visible, not 3 x 450
        series += [sample("esm_sqs_queue_messages", 300, "esm-0", uuid="m2", state="visible")]
        assert desired_replicas(trigger, series, spec) == 8  # 450 + 300
        assert desired_replicas(trigger, [], spec) == 1  # no data: the minimum

    def test_stream_replicas_never_exceed_open_shards(self, scaled: dict[str, Any]) -> None:
        """ceil(max lag / lagSecondsPerReplica), capped at the open shards reported (once per mapping)."""
        trigger = self.trigger(scaled, "stream-reader-lag")
        assert trigger["metadata"]["threshold"] == "1"
        spec = scaled["spec"]
        shards = [sample("esm_stream_open_shards", 4, f"esm-{i}") for i in range(3)]
        lag = [sample("esm_reader_behind_seconds", 30, "esm-0", shard="s-1")]
        assert desired_replicas(trigger, shards + lag, spec) == 1
        lag.append(sample("esm_reader_behind_seconds", 150, "esm-1", shard="s-2"))
        assert desired_replicas(trigger, shards + lag, spec) == 3  # ceil(150 / 60)
        lag.append(sample("esm_reader_behind_seconds", 86400, "esm-2", shard="s-3"))
        assert desired_replicas(trigger, shards + lag, spec) == 4  # 1440 wanted, 4 open shards (not 3 x 4)
        for lagging in (0, 10, 1e3, 1e6):
            for open_shards in (1, 2, 7):
                series = [sample("esm_stream_open_shards", open_shards, f"esm-{i}") for i in range(5)]
                series.append(sample("esm_reader_behind_seconds", lagging, "esm-0", shard="s-1"))
                assert desired_replicas(trigger, series, spec) <= max(open_shards, spec["minReplicaCount"])
        assert desired_replicas(trigger, lag, spec) == 1  # shards unknown: no scale-up

    def test_other_releases_do_not_count(self, scaled: dict[str, Any]) -> None:
        """Series of another release (another service or namespace) do not drive this one."""
        trigger = self.trigger(scaled, "stream-reader-lag")
        series = [
            sample("esm_stream_open_shards", 8, "other-0"),
            sample("esm_reader_behind_seconds", 9000, "other-0", shard="s-1"),
        ]
        series = [({**labels, "service": "other-esm"}, value) for labels, value in series]
        series += [({**labels, "namespace": "elsewhere"}, value) for labels, value in series]
        assert desired_replicas(trigger, series, scaled["spec"]) == 1

    def test_triggers_follow_the_mapping_kinds(self, chart: helm_python.Chart) -> None:
        """Only the triggers the configuration has mappings for, unless set explicitly."""
        sqs = render(chart, keda_values(SQS)).one("ScaledObject")
        assert [t["name"] for t in sqs["spec"]["triggers"]] == ["sqs-visible-backlog"]
        streams = render(chart, keda_values(DDB_STREAM)).one("ScaledObject")
        assert [t["name"] for t in streams["spec"]["triggers"]] == ["stream-reader-lag"]
        forced = render(chart, keda_values(SQS, streams={"enabled": True}, sqs={"enabled": False}))
        assert [t["name"] for t in forced.one("ScaledObject")["spec"]["triggers"]] == ["stream-reader-lag"]

    def test_metric_selector_override(self, chart: helm_python.Chart) -> None:
        """keda.prometheus.metricSelector replaces the ServiceMonitor-based matchers."""
        values = keda_values(SQS)
        values["keda"]["prometheus"]["metricSelector"] = 'kubernetes_namespace="esm"'
        (trigger,) = render(chart, values).one("ScaledObject")["spec"]["triggers"]
        assert '{state="visible",kubernetes_namespace="esm"}' in trigger["metadata"]["query"]

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"prometheus": {"serverAddress": ""}}, "keda.prometheus.serverAddress is required"),
            ({"minReplicaCount": 5, "maxReplicaCount": 2}, "must not be below keda.minReplicaCount"),
            ({"sqs": {"enabled": False}}, "keda.enabled needs a trigger"),
        ],
    )
    def test_unusable_keda_values_fail(self, chart: helm_python.Chart, change: dict[str, Any], message: str) -> None:
        """No Prometheus, min above max, or no trigger at all stop the render with the reason."""
        values = keda_values(SQS)
        values["keda"] |= change
        assert message in render_error(chart, values)


def collect_selectors(node: Any, found: list[Any]) -> None:
    """Every VectorSelector under `node`."""
    if isinstance(node, promql_parser.VectorSelector):
        found.append(node)
    for child in ("expr", "lhs", "rhs"):
        if hasattr(node, child):
            collect_selectors(getattr(node, child), found)
    for arg in getattr(node, "args", None) or []:
        collect_selectors(arg, found)


# --------------------------------------------------------------------------------------------
# Prometheus and Grafana


class TestObservability:
    """The metrics Service, ServiceMonitor, alert rules and dashboards."""

    def test_metrics_service(self, release: Release) -> None:
        """ClusterIP, port http-metrics to the container's `http`, selecting the Deployment's pods, unready ones too."""
        service = release.one("Service")
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["publishNotReadyAddresses"] is True
        (port,) = service["spec"]["ports"]
        assert (port["name"], port["targetPort"]) == ("http-metrics", "http")
        assert service["spec"]["selector"] == release.deployment["spec"]["selector"]["matchLabels"]
        pod_labels = release.deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()

    def test_service_monitor(self, full: Release) -> None:
        """Scrapes the Service's http-metrics port at /metrics, selecting it by its labels in the release namespace."""
        monitor = full.one("ServiceMonitor")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == "monitoring"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        spec = monitor["spec"]
        service = full.one("Service")
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] == service["spec"]["ports"][0]["name"]
        assert (endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == ("/metrics", "15s", "10s")
        assert endpoint["metricRelabelings"] == FULL_VALUES["serviceMonitor"]["metricRelabelings"]

    def test_prometheus_rule_is_the_alerts_file(self, full: Release) -> None:
        """The PrometheusRule's spec is files/alerts.yaml as parsed, with the additional labels."""
        alerts = FILES / "alerts.yaml"
        if not alerts.is_file():
            assert full.all("PrometheusRule") == []
            return
        rule = full.one("PrometheusRule")
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        assert rule["spec"] == yaml.safe_load(alerts.read_text())
        groups = rule["spec"]["groups"]
        assert groups, "a rules file has groups"
        for group in groups:  # what prometheus-operator's CRD requires of each group and rule
            assert isinstance(group["name"], str)
            for item in group["rules"]:
                assert isinstance(item["expr"], str)
                assert ("alert" in item) != ("record" in item), item
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert rule["metadata"]["namespace"] == "monitoring"

    def test_runbook_urls_follow_the_value(self, chart: helm_python.Chart) -> None:
        """prometheusRule.runbookBaseUrl replaces the base of every runbook_url; nothing else changes."""
        alerts = FILES / "alerts.yaml"
        base = "https://git.example.com/platform/esm/-/blob/v0.1.0/docs/runbooks.md"
        release = render(chart, {"prometheusRule": {"enabled": True, "runbookBaseUrl": base}})
        spec = release.one("PrometheusRule")["spec"]
        rules = [rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule]
        assert rules
        for rule in rules:
            assert rule["annotations"]["runbook_url"] == f"{base}#{github_anchor(rule['alert'])}", rule["alert"]
        expected = yaml.safe_load(alerts.read_text())
        for group in expected["groups"]:
            for rule in group["rules"]:
                if "runbook_url" in rule.get("annotations", {}):
                    url = rule["annotations"]["runbook_url"]
                    rule["annotations"]["runbook_url"] = base + url[url.index("#") :]
        assert spec == expected

    def test_runbook_base_url_defaults_to_the_file(self, chart: helm_python.Chart) -> None:
        """The default value is the base files/alerts.yaml links to, so the default render keeps the file's URLs."""
        base = chart.values["prometheusRule"]["runbookBaseUrl"]
        document = yaml.safe_load((FILES / "alerts.yaml").read_text())
        urls = [
            rule["annotations"]["runbook_url"]
            for group in document["groups"]
            for rule in group["rules"]
            if "runbook_url" in rule.get("annotations", {})
        ]
        assert urls
        assert all(url.startswith(f"{base}#") for url in urls)

    def test_a_runbook_url_off_the_base_fails_the_render(self, tmp_path: Path) -> None:
        """A rule in files/alerts.yaml whose runbook_url the value could not rebase stops the render."""
        copy_dir = tmp_path / "esm"
        shutil.copytree(CHART, copy_dir)
        alerts = copy_dir / "files" / "alerts.yaml"
        document = yaml.safe_load(alerts.read_text())
        rule = document["groups"][0]["rules"][0]
        rule["annotations"]["runbook_url"] = "https://example.com/elsewhere.md#" + rule["alert"].lower()
        alerts.write_text(yaml.safe_dump(document))
        with helm_python.Chart.load(copy_dir) as changed:
            message = render_error(changed, {"prometheusRule": {"enabled": True}})
        assert f"the runbook_url of {rule['alert']} does not start with" in message

    def test_dashboards_config_map_holds_every_dashboard_unchanged(self, full: Release) -> None:
        """Each files/dashboards/*.json is a key of the sidecar ConfigMap, byte for byte; nothing else is."""
        files = dashboard_files()
        maps = [o for o in full.all("ConfigMap") if o["metadata"]["name"].endswith("-dashboards")]
        if not files:
            assert maps == []
            return
        (dashboards,) = maps
        assert dashboards["data"] == {path.name: path.read_text() for path in files}
        for path in files:
            json.loads(dashboards["data"][path.name])
        meta = dashboards["metadata"]
        assert meta["labels"]["grafana_dashboard"] == "1"
        assert meta["annotations"] == {"grafana_folder": "esm"}
        assert meta["namespace"] == "monitoring"

    def test_dashboard_label_is_configurable(self, chart: helm_python.Chart) -> None:
        """The sidecar's label and value come from values; off by default."""
        values = {"grafanaDashboards": {"enabled": True, "label": "grafana.com/dashboard", "labelValue": "esm"}}
        maps = [o for o in render(chart, values).all("ConfigMap") if o["metadata"]["name"].endswith("-dashboards")]
        assert len(maps) == (1 if dashboard_files() else 0)
        for config_map in maps:
            assert config_map["metadata"]["labels"]["grafana.com/dashboard"] == "esm"
            assert "annotations" not in config_map["metadata"]


# --------------------------------------------------------------------------------------------
# helm test and NOTES


class TestHelmTest:
    """`helm test` runs `esm validate` on the configuration as mounted."""

    def test_hook_pod_runs_esm_validate(self, release: Release) -> None:
        """A test hook Pod: same image, ConfigMap volume, environment and security context as the daemon."""
        pod = release.test_pod
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never"
        (container,) = spec["containers"]
        assert [*container["command"], *container["args"]] == ["esm", "validate", "/etc/esm/config.yaml"]
        assert container["image"] == release.container["image"]
        assert container["securityContext"] == release.container["securityContext"]
        assert spec["securityContext"] == release.pod["securityContext"]
        assert container.get("env", []) == release.container["env"][1:]  # all but POD_NAME
        (volume,) = spec["volumes"]
        (config,) = [v for v in release.pod["volumes"] if v["name"] == "config"]
        assert volume == config
        assert container["volumeMounts"] == [{"name": "config", "mountPath": "/etc/esm", "readOnly": True}]

    def test_hook_pod_is_not_selected_by_the_deployment(self, release: Release) -> None:
        """Its labels miss the selector, so the ReplicaSet never adopts it and the PDB never counts it."""
        selector = release.deployment["spec"]["selector"]["matchLabels"]
        assert not selector.items() <= release.test_pod["metadata"]["labels"].items()

    def test_hook_can_be_disabled(self, chart: helm_python.Chart) -> None:
        """tests.enabled: false renders no hook."""
        assert render(chart, {"tests": {"enabled": False}}).all("Pod") == []


class TestNotes:
    """NOTES.txt tells how to reach esm and where its IAM policy comes from."""

    def test_notes(self, default: Release, full: Release) -> None:
        """Readiness, metrics, the IAM policy command; the IRSA role when one is annotated."""
        for release in (default, full):
            assert "/readyz" in release.notes
            assert "/metrics" in release.notes
            assert "esm iam-policy --config" in release.notes
            assert "helm test" in release.notes
        assert "arn:aws:iam::123456789012:role/esm (IRSA)" in full.notes
        assert "eks.amazonaws.com/role-arn" in default.notes
