"""The metric families: conventional names and labels, and every one documented in the README."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from esm.metrics import INVOKE_OUTCOMES, LEASE_EVENTS, Metrics
from tests.conftest import REPO_ROOT

_UNITS = (
    "_seconds",
    "_bytes",
    "_events",
    "_messages",
    "_shards",
    "_batches",
    "_info",
    "_up",
    "_held",
    "_target",
    "_state",
    "_successful",
)


def _families() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed family name (counters with `_total`) -> (type, label names)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    out = {}
    for value in vars(metrics).values():
        name, kind = getattr(value, "_name", None), getattr(value, "_type", None)
        if name and kind:
            out[f"{name}_total" if kind == "counter" else name] = (kind, tuple(value._labelnames))
    return out


def test_every_family_is_documented_in_the_readme() -> None:
    """The README's Observability table lists every family esm exports, and nothing else."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Observability") : readme.index("## Development")]
    documented = set(re.findall(r"^\| `(esm_[a-z_]+)` \|", section, flags=re.MULTILINE))
    assert documented == set(_families())


def test_names_and_labels_follow_prometheus_conventions() -> None:
    """esm_ prefix, snake case, a base unit or a count noun at the end, no unbounded label."""
    families = _families()
    assert len(families) >= 40
    for name, (kind, labels) in families.items():
        assert re.fullmatch(r"esm_[a-z]+(_[a-z]+)*", name), name
        base = name.removesuffix("_total")
        assert base.endswith(_UNITS) or kind == "counter", f"{name}: no unit or count noun at the end"
        assert not re.search(r"milli|micro|_ms$|kilo|mega", name), f"{name}: not a base unit"
        assert {"message_id", "messageId", "sequence_number", "request_id", "receipt_handle"}.isdisjoint(labels)


def test_label_values_filtered_on_exist_from_the_start() -> None:
    """Every invocation outcome and lease event of a mapping is a series at 0 before anything happens."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.for_mapping("u", "f", "kinesis")
    metrics.lease_mapping("u")
    labels = {"event_source_mapping_uuid": "u", "function_name": "f", "source": "kinesis"}
    for outcome in INVOKE_OUTCOMES:
        assert registry.get_sample_value("esm_invocations_total", {**labels, "outcome": outcome}) == 0
    for event in LEASE_EVENTS:
        assert (
            registry.get_sample_value("esm_lease_events_total", {"event_source_mapping_uuid": "u", "event": event}) == 0
        )
    assert registry.get_sample_value("esm_lease_unowned_shards", {"event_source_mapping_uuid": "u"}) == 0
