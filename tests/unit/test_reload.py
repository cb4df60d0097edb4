"""Hot reload's pure part: which mappings and sections a new configuration file changes (issue #5).

Each row of the table starts from one base configuration (an SQS mapping `orders` and a Kinesis
mapping `clicks`, each with its own function), applies an edit, and names what `diff_configs`
must report.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from esm.config import ConfigError, ConfigFile, MappingConfig, load_config
from esm.reload import (
    RESTART_SECTIONS,
    SECTION_SCOPES,
    ConfigDiff,
    diff_configs,
    parse_snapshot,
    running_spec,
    snapshot,
)

QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders"
QUEUE_2 = "arn:aws:sqs:us-east-1:123456789012:refunds"
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"

BASE: dict[str, Any] = {
    "aws": {"region": "us-east-1"},
    "state": {"sqlite": "./state.db"},
    "functions": {
        "orders": {"handler": "handlers.orders:handle", "timeout": 3},
        "clicks": {"handler": "handlers.clicks:handle"},
    },
    "event_source_mappings": [
        {"EventSourceArn": QUEUE, "FunctionName": "orders", "BatchSize": 5},
        {"EventSourceArn": STREAM, "FunctionName": "clicks", "StartingPosition": "TRIM_HORIZON"},
    ],
}
ORDERS = MappingConfig(EventSourceArn=QUEUE, FunctionName="orders").uuid
CLICKS = MappingConfig(EventSourceArn=STREAM, FunctionName="clicks").uuid
REFUNDS = MappingConfig(EventSourceArn=QUEUE_2, FunctionName="orders").uuid
ORDERS_BY_LAMBDA = MappingConfig(EventSourceArn=QUEUE, FunctionName="billing").uuid


def spec(raw: dict[str, Any]) -> ConfigFile:
    """A validated configuration from a dictionary."""
    return ConfigFile.model_validate(raw)


def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A deep copy of BASE with `edit` applied."""
    raw = copy.deepcopy(BASE)
    edit(raw)
    return raw


def set_path(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets one value, creating missing dictionaries on the way."""

    def edit(raw: dict[str, Any]) -> None:
        node: Any = raw
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node[path[-1]] = value

    return edit


def add_refunds(raw: dict[str, Any]) -> None:
    raw["event_source_mappings"].append({"EventSourceArn": QUEUE_2, "FunctionName": "orders"})


def drop_clicks(raw: dict[str, Any]) -> None:
    raw["event_source_mappings"].pop(1)
    del raw["functions"]["clicks"]


def swap_order(raw: dict[str, Any]) -> None:
    raw["event_source_mappings"].reverse()


def orders_to_lambda(raw: dict[str, Any]) -> None:
    raw["event_source_mappings"][0]["FunctionName"] = "billing"


def orders_keeps_uuid_new_function(raw: dict[str, Any]) -> None:
    raw["event_source_mappings"][0]["UUID"] = ORDERS
    raw["event_source_mappings"][0]["FunctionName"] = "clicks"


def unused_function(raw: dict[str, Any]) -> None:
    raw["functions"]["spare"] = {"url": "http://spare.example/invoke"}


def nothing(raw: dict[str, Any]) -> None:
    pass


def with_given_uuid(raw: dict[str, Any]) -> None:
    raw["event_source_mappings"][0]["UUID"] = ORDERS


# (id, edit, added, removed, changed -> reasons, unchanged, changed sections, needs restart)
CASES: list[
    tuple[str, Callable[[dict[str, Any]], None], set[str], set[str], dict[str, set[str]], set[str], set[str], set[str]]
] = [
    ("identical", nothing, set(), set(), {}, {ORDERS, CLICKS}, set(), set()),
    ("order of mappings only", swap_order, set(), set(), {}, {ORDERS, CLICKS}, {"event_source_mappings"}, set()),
    ("a mapping added", add_refunds, {REFUNDS}, set(), {}, {ORDERS, CLICKS}, {"event_source_mappings"}, set()),
    ("a mapping removed", drop_clicks, set(), {CLICKS}, {}, {ORDERS}, {"event_source_mappings", "functions"}, set()),
    (
        "a field of one mapping",
        set_path("event_source_mappings", 0, "BatchSize", value=7),
        set(),
        set(),
        {ORDERS: {"BatchSize"}},
        {CLICKS},
        {"event_source_mappings"},
        set(),
    ),
    (
        "a mapping disabled",
        set_path("event_source_mappings", 1, "Enabled", value=False),
        set(),
        set(),
        {CLICKS: {"Enabled"}},
        {ORDERS},
        {"event_source_mappings"},
        set(),
    ),
    (
        "the derived UUID written out",
        with_given_uuid,
        set(),
        set(),
        {},
        {ORDERS, CLICKS},
        {"event_source_mappings"},
        set(),
    ),
    (
        "the function a mapping uses",
        set_path("functions", "orders", "timeout", value=5),
        set(),
        set(),
        {ORDERS: {"functions.orders"}},
        {CLICKS},
        {"functions"},
        set(),
    ),
    ("a function no mapping uses", unused_function, set(), set(), {}, {ORDERS, CLICKS}, {"functions"}, set()),
    (
        "another function (derived UUID changes: removed and added)",
        orders_to_lambda,
        {ORDERS_BY_LAMBDA},
        {ORDERS},
        {},
        {CLICKS},
        {"event_source_mappings"},
        set(),
    ),
    (
        "another function under a given UUID",
        orders_keeps_uuid_new_function,
        set(),
        set(),
        {ORDERS: {"FunctionName", "functions.clicks"}},
        {CLICKS},
        {"event_source_mappings"},
        set(),
    ),
    (
        "aws: every mapping",
        set_path("aws", "endpoint_url", value="http://127.0.0.1:5000"),
        set(),
        set(),
        {ORDERS: {"aws"}, CLICKS: {"aws"}},
        set(),
        {"aws"},
        set(),
    ),
    (
        "streams: stream mappings only",
        set_path("streams", "idle_poll_interval", value=1.0),
        set(),
        set(),
        {CLICKS: {"streams"}},
        {ORDERS},
        {"streams"},
        set(),
    ),
    (
        "http needs a restart",
        set_path("http", "listen", value="127.0.0.1:9200"),
        set(),
        set(),
        {},
        {ORDERS, CLICKS},
        {"http"},
        {"http"},
    ),
    (
        "state needs a restart",
        set_path("state", "sqlite", value="./other.db"),
        set(),
        set(),
        {},
        {ORDERS, CLICKS},
        {"state"},
        {"state"},
    ),
    (
        "dev needs a restart",
        set_path("dev", "port", value=5000),
        set(),
        set(),
        {},
        {ORDERS, CLICKS},
        {"dev"},
        {"dev"},
    ),
    (
        "shutdown applies at once",
        set_path("shutdown", "grace_period", value=3),
        set(),
        set(),
        {},
        {ORDERS, CLICKS},
        {"shutdown"},
        set(),
    ),
    (
        "reload applies at once",
        set_path("reload", "interval", value=10),
        set(),
        set(),
        {},
        {ORDERS, CLICKS},
        {"reload"},
        set(),
    ),
    (
        "filters_per_mapping is a validation limit",
        set_path("filters_per_mapping", value=10),
        set(),
        set(),
        {},
        {ORDERS, CLICKS},
        {"filters_per_mapping"},
        set(),
    ),
]


class TestDiffConfigs:
    """`diff_configs` sorts every mapping by UUID and names the sections that changed."""

    @pytest.mark.parametrize(
        ("edit", "added", "removed", "changed", "unchanged", "sections", "restart"),
        [c[1:] for c in CASES],
        ids=[c[0] for c in CASES],
    )
    def test_table(
        self,
        edit: Callable[[dict[str, Any]], None],
        added: set[str],
        removed: set[str],
        changed: dict[str, set[str]],
        unchanged: set[str],
        sections: set[str],
        restart: set[str],
    ) -> None:
        """Each edit of the base configuration yields exactly the expected classes and reasons."""
        diff = diff_configs(spec(BASE), spec(edited(edit)))
        assert set(diff.added) == added
        assert set(diff.removed) == removed
        assert {u: set(r) for u, r in diff.reasons.items()} == changed
        assert set(diff.changed) == set(changed)
        assert set(diff.unchanged) == unchanged
        assert set(diff.sections) == sections
        assert set(diff.needs_restart) == restart

    def test_every_mapping_lands_in_exactly_one_class(self) -> None:
        """Added, changed and unchanged partition the new file's mappings; removed are the old ones left."""
        diff = diff_configs(spec(BASE), spec(edited(lambda r: (add_refunds(r), drop_clicks(r)))))
        assert diff.counts == {"added": 1, "removed": 1, "changed": 0, "unchanged": 1}

    def test_from_and_to_an_empty_file(self) -> None:
        """Starting with no mappings adds them all; emptying the file removes them all."""
        assert set(diff_configs(ConfigFile(), spec(BASE)).added) == {ORDERS, CLICKS}
        assert set(diff_configs(spec(BASE), ConfigFile()).removed) == {ORDERS, CLICKS}

    def test_every_section_of_the_file_is_classified(self) -> None:
        """A new top-level section must say how a change of it is applied (or the daemon would guess)."""
        assert set(SECTION_SCOPES) == set(ConfigFile.model_fields)
        assert {"http", "state", "dev"} == RESTART_SECTIONS


class TestRunningSpec:
    """`running_spec` keeps what the file did not change, and the running value of restart-only sections."""

    def test_new_values_apply_and_restart_sections_keep_the_running_value(self) -> None:
        """BatchSize and grace period come from the new file; http stays as it runs."""
        old = spec(BASE)
        new = spec(
            edited(
                lambda r: (
                    set_path("event_source_mappings", 0, "BatchSize", value=7)(r),
                    set_path("http", "listen", value="127.0.0.1:9200")(r),
                    set_path("shutdown", "grace_period", value=3)(r),
                )
            )
        )
        result = running_spec(old, old, new, diff_configs(old, new))
        assert result.event_source_mappings[0].BatchSize == 7
        assert result.shutdown.grace_period == 3
        assert result.http == old.http

    def test_running_overrides_of_unchanged_parts_survive(self) -> None:
        """Like `esm dev`: an `aws` section and a mapping rewritten at start stay while the file keeps them."""
        old = spec(BASE)
        running = old.model_copy(
            update={
                "aws": old.aws.model_copy(update={"endpoint_url": "http://127.0.0.1:5000"}),
                "event_source_mappings": [
                    old.event_source_mappings[0].model_copy(update={"Tags": {"rewritten": "yes"}}),
                    old.event_source_mappings[1],
                ],
            }
        )
        new = spec(edited(add_refunds))
        result = running_spec(running, old, new, diff_configs(old, new))
        assert result.aws.endpoint_url == "http://127.0.0.1:5000"
        assert result.event_source_mappings[0].Tags == {"rewritten": "yes"}
        assert [m.uuid for m in result.event_source_mappings] == [ORDERS, CLICKS, REFUNDS]


class TestSnapshot:
    """The watcher reads the file once: the digest it compares and the bytes it applies are the same."""

    def test_digest_follows_a_symlink_swap(self, tmp_path: Path) -> None:
        """Swapping `..data` atomically (as the kubelet does) changes what the path reads."""
        for name, batch in (("..2026_a", 5), ("..2026_b", 6)):
            (tmp_path / name).mkdir()
            (tmp_path / name / "config.yaml").write_text(
                yaml.safe_dump(edited(set_path("event_source_mappings", 0, "BatchSize", value=batch)))
            )
        (tmp_path / "..data").symlink_to("..2026_a")
        (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
        path = tmp_path / "config.yaml"
        first = snapshot(path)
        (tmp_path / "..data_tmp").symlink_to("..2026_b")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        second = snapshot(path)
        assert first.digest != second.digest
        assert parse_snapshot(path, second).spec.event_source_mappings[0].BatchSize == 6

    def test_problems_are_those_esm_validate_prints(self, tmp_path: Path) -> None:
        """An invalid file raises ConfigError with exactly `load_config`'s lines."""
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(edited(set_path("event_source_mappings", 0, "BatchSize", value=0))))
        with pytest.raises(ConfigError) as parsed:
            parse_snapshot(path, snapshot(path))
        with pytest.raises(ConfigError) as loaded:
            load_config(path)
        assert parsed.value.lines() == loaded.value.lines()
        assert parsed.value.lines()[0].startswith(f"{path}: event_source_mappings.0.BatchSize: ")

    def test_a_missing_file_is_a_problem_not_a_crash(self, tmp_path: Path) -> None:
        """A file that cannot be read has no digest and is reported like `esm validate` reports it."""
        path = tmp_path / "gone.yaml"
        snap = snapshot(path)
        assert snap.digest is None
        with pytest.raises(ConfigError) as exc:
            parse_snapshot(path, snap)
        assert exc.value.lines() == [f"{path}: <file>: No such file or directory"]

    def test_not_utf8(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are reported with load_config's text."""
        path = tmp_path / "latin1.yaml"
        path.write_bytes(b"aws: {region: \xe9}\n")
        with pytest.raises(ConfigError) as exc:
            parse_snapshot(path, snapshot(path))
        assert exc.value.lines() == [f"{path}: <file>: not UTF-8 text"]


def test_config_diff_defaults_are_empty() -> None:
    """An empty diff has nothing in any class."""
    assert ConfigDiff().counts == {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
