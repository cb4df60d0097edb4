"""A real Prometheus scrapes a running esm that processes traffic on moto (issue 6).

One `esm run` process (module fixture) runs every kind of mapping the dashboards and alerts speak
of: an SQS queue with partial batch failures and a redrive policy, two Kinesis mappings (one with
an on-failure SQS destination and bisection, one that drops), a DynamoDB stream with tumbling
windows, the streams sharing the DynamoDB lease table, and a mapping whose queue does not exist.
A real Prometheus 2.42 (Debian's `prometheus`, installed by `.ci/run`) scrapes it every second
and loads the alert rules. Then:

- `promtool check metrics` is clean on the daemon's real `/metrics`;
- every query of every dashboard panel returns data from Prometheus;
- every alert rule loads and evaluates without error in the real server.

When the `prometheus` or `promtool` binary is missing, the tests fail and say which package to
install (the project has no skipped tests: a check that cannot run is reported, not hidden).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ACCOUNT, REGION, REPO_ROOT, unique
from tests.observability.promql import dashboard_queries, substitute_grafana_vars

pytestmark = pytest.mark.e2e

DASHBOARDS = sorted((REPO_ROOT / "deploy" / "helm" / "esm" / "files" / "dashboards").glob("*.json"))
ALERTS = REPO_ROOT / "deploy" / "helm" / "esm" / "files" / "alerts.yaml"
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval is at least four scrape intervals (here 1 s)

_HANDLERS = '''
import base64


def handle(event, context):
    """SQS: report the messages whose body is "fail"; Kinesis: raise if any record says "fail"."""
    records = event["Records"]
    if records and records[0].get("eventSource") == "aws:sqs":
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records if r["body"] == "fail"]}
    if any(base64.b64decode(r["kinesis"]["data"]) == b"fail" for r in records):
        raise RuntimeError("a record says fail")
    return None


def window(event, context):
    """Tumbling windows: count the records of the window in its state."""
    state = event.get("state") or {}
    return {"state": {"records": state.get("records", 0) + len(event["Records"])}}
'''


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"`{binary}` is not installed, so this check cannot run: install Debian's Prometheus "
            "(`apt-get install --no-install-recommends prometheus`; `.ci/run` does it on CI machines)"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback http only
        return str(response.read().decode())


def _wait(predicate: Callable[[], bool], what: str, within: float = 60.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what}: not within {within} s\n{tail}")
        time.sleep(0.2)


@dataclass
class Scenario:
    """The running daemon and the Prometheus that scrapes it."""

    metrics_url: str
    prometheus_url: str
    workdir: Path
    missing_queue_arn: str

    def metrics(self) -> str:
        return _get(self.metrics_url)

    def sample_sum(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels` (0 if none)."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            body = _get(url)
        except urllib.error.HTTPError as exc:  # 400 with Prometheus' own error text
            body = exc.read().decode()
        answer: dict[str, Any] = json.loads(body)
        return answer


def _aws(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _resources(endpoint: str) -> dict[str, str]:
    """Create the queues, streams and table the mappings read; returns their ARNs by role."""
    sqs, kinesis, ddb = _aws("sqs", endpoint), _aws("kinesis", endpoint), _aws("dynamodb", endpoint)
    names = {k: unique(f"prom-{k}") for k in ("orders", "dlq", "failures", "events", "table", "missing")}
    arn = {k: f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names[k]}" for k in ("orders", "dlq", "failures", "missing")}
    sqs.create_queue(QueueName=names["dlq"])
    sqs.create_queue(QueueName=names["failures"])
    redrive = json.dumps({"deadLetterTargetArn": arn["dlq"], "maxReceiveCount": 2})
    orders = sqs.create_queue(
        QueueName=names["orders"], Attributes={"VisibilityTimeout": "2", "RedrivePolicy": redrive}
    )["QueueUrl"]
    kinesis.create_stream(StreamName=names["events"], ShardCount=1)
    arn["events"] = kinesis.describe_stream_summary(StreamName=names["events"])["StreamDescriptionSummary"]["StreamARN"]
    table = ddb.create_table(
        TableName=names["table"],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    arn["table_stream"] = table["TableDescription"]["LatestStreamArn"]
    arn["orders_url"], arn["table"], arn["events_name"] = orders, names["table"], names["events"]
    return arn


def _traffic(endpoint: str, arn: dict[str, str]) -> None:
    """What the mappings process: successes and failures on every source."""
    sqs, kinesis, ddb = _aws("sqs", endpoint), _aws("kinesis", endpoint), _aws("dynamodb", endpoint)
    bodies = [f"order-{i}" for i in range(18)] + ["fail", "fail"]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=arn["orders_url"],
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])],
        )
    records = [f"event-{i}".encode() for i in range(12)] + [b"fail"]
    kinesis.put_records(StreamName=arn["events_name"], Records=[{"Data": d, "PartitionKey": "k"} for d in records])
    for i in range(6):
        ddb.put_item(TableName=arn["table"], Item={"id": {"S": f"item-{i}"}})


def _config(endpoint: str, arn: dict[str, str], port: int) -> dict[str, Any]:
    stream = {"StartingPosition": "TRIM_HORIZON", "MaximumRetryAttempts": 0, "BatchSize": 5}
    return {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "http": {"listen": f"127.0.0.1:{port}"},
        "state": {"dynamodb": {"table": unique("prom-leases"), "failover_time": 3}},
        "metrics": {"queue_attributes_interval": 1},
        "streams": {"idle_poll_interval": 0.2, "window_close_delay": 0.5},
        "shutdown": {"grace_period": 5},
        "functions": {
            "fn": {"handler": "prom_handlers:handle", "timeout": 1},
            "audit": {"handler": "prom_handlers:handle", "timeout": 1},
            "win": {"handler": "prom_handlers:window", "timeout": 5},
        },
        "event_source_mappings": [
            {
                "EventSourceArn": arn["orders"],
                "FunctionName": "fn",
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
            {
                "EventSourceArn": arn["events"],
                "FunctionName": "fn",
                "BisectBatchOnFunctionError": True,
                "DestinationConfig": {"OnFailure": {"Destination": arn["failures"]}},
                **stream,
            },
            {"EventSourceArn": arn["events"], "FunctionName": "audit", **stream},
            {"EventSourceArn": arn["table_stream"], "FunctionName": "win", "TumblingWindowInSeconds": 1, **stream},
            {"EventSourceArn": arn["missing"], "FunctionName": "fn"},
        ],
    }


@pytest.fixture(scope="module")
def scenario(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    prometheus = _require("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    arn = _resources(moto_endpoint)
    esm_port, prom_port = _free_port(), _free_port()
    (workdir / "prom_handlers.py").write_text(_HANDLERS)
    config = workdir / "esm.yaml"
    config.write_text(yaml.safe_dump(_config(moto_endpoint, arn, esm_port), sort_keys=False))
    (workdir / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [{"job_name": "esm", "static_configs": [{"targets": [f"127.0.0.1:{esm_port}"]}]}],
            }
        )
    )
    esm_log, prom_log = workdir / "esm.log", workdir / "prometheus.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with esm_log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "esm", "run", "--config", str(config), "--log-format", "json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    with prom_log.open("wb") as out:
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    s = Scenario(f"http://127.0.0.1:{esm_port}/metrics", f"http://127.0.0.1:{prom_port}", workdir, arn["missing"])
    try:
        _wait(lambda: "esm_build_info" in s.metrics(), "esm serves /metrics", log=esm_log)
        _wait(lambda: _get(f"{s.prometheus_url}/-/ready").startswith("Prometheus"), "Prometheus ready", log=prom_log)
        _wait(lambda: bool(s.query("up")["data"]["result"]), "Prometheus scrapes esm", log=prom_log)
        _traffic(moto_endpoint, arn)
        fn = {"function_name": "fn"}
        _wait(lambda: s.sample_sum("esm_deleted_events_total", **fn) >= 18, "SQS successes deleted", log=esm_log)
        delivered = "esm_on_failure_destination_delivered_events_total"
        _wait(lambda: s.sample_sum(delivered) >= 1, "a record sent to the destination", log=esm_log)
        _wait(lambda: s.sample_sum("esm_dropped_events_total") >= 1, "a record dropped", log=esm_log)
        _wait(lambda: s.sample_sum("esm_tumbling_windows_closed_total") >= 1, "a window closed", log=esm_log)
        _wait(lambda: s.sample_sum("esm_source_errors_total") >= 1, "the missing queue's errors", log=esm_log)
        # Enough scrapes after the traffic for rates over RATE_INTERVAL to see it.
        time.sleep(4)
        yield s
    finally:
        for process in (server, daemon):
            process.terminate()
        for process in (server, daemon):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_promtool_check_metrics_is_clean(scenario: Scenario) -> None:
    """`promtool check metrics` finds nothing in a real scrape after SQS and stream traffic."""
    promtool = _require("promtool")
    exposition = scenario.metrics()
    for family in ("esm_sqs_queue_messages", "esm_iterator_age_seconds", "esm_leases_held", "esm_build_info"):
        assert f"\n{family}{{" in exposition, f"{family} missing from the scrape"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=[d.stem for d in DASHBOARDS])
def test_every_dashboard_query_returns_data(scenario: Scenario, dashboard: Path) -> None:
    """Each panel's queries, as Grafana would send them, return at least one series."""
    queries = dashboard_queries(dashboard)
    assert queries, f"{dashboard.name} has no queries"
    empty, failed = [], []
    for title, expr in queries:
        promql = substitute_grafana_vars(expr, rate_interval=RATE_INTERVAL)
        answer = scenario.query(promql)
        if answer.get("status") != "success":
            failed.append(f"{title}: {promql}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            empty.append(f"{title}: {promql}")
    assert not failed, "queries Prometheus rejected:\n" + "\n".join(failed)
    assert not empty, "queries that returned no data:\n" + "\n".join(empty)


def test_alert_rules_load_and_evaluate(scenario: Scenario) -> None:
    """Prometheus loaded every alert of the rules file, and each evaluates without error."""
    expected = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert expected, "no alert rules"

    def evaluated() -> bool:
        rules = json.loads(_get(f"{scenario.prometheus_url}/api/v1/rules"))["data"]["groups"]
        seen = {r["name"]: r for g in rules for r in g["rules"] if r["type"] == "alerting"}
        return set(seen) == expected and all(r.get("lastEvaluation", "").startswith("20") for r in seen.values())

    _wait(evaluated, "every alert rule evaluated", within=30)
    rules = json.loads(_get(f"{scenario.prometheus_url}/api/v1/rules"))["data"]["groups"]
    unhealthy = [f"{r['name']}: {r.get('lastError')}" for g in rules for r in g["rules"] if r["health"] != "ok"]
    assert not unhealthy, "rules that failed to evaluate:\n" + "\n".join(unhealthy)


def test_the_missing_queue_is_seen_by_prometheus(scenario: Scenario) -> None:
    """The mapping whose queue does not exist shows as down, with its errors counted by code."""
    down = scenario.query('esm_mapping_up{source="sqs"} == 0')["data"]["result"]
    assert len(down) == 1
    unhealthy = scenario.query('esm_mapping_state{state="unhealthy"} == 1')["data"]["result"]
    assert [u["metric"]["event_source_mapping_uuid"] for u in unhealthy] == [
        down[0]["metric"]["event_source_mapping_uuid"]
    ]
    info = scenario.query(
        'esm_mapping_info * on(event_source_mapping_uuid) group_left() (esm_mapping_state{state="unhealthy"} == 1)'
    )["data"]["result"]
    assert [i["metric"]["event_source_arn"] for i in info] == [scenario.missing_queue_arn]
    running = scenario.query('esm_mapping_state{state="running"} == 1')["data"]["result"]
    assert len(running) == 4  # the SQS queue, two Kinesis mappings and the DynamoDB stream
    errors = scenario.query("sum by (code) (esm_source_errors_total)")["data"]["result"]
    assert {e["metric"]["code"] for e in errors} >= {"AWS.SimpleQueueService.NonExistentQueue"}
