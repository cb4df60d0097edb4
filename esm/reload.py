"""Hot reload, the pure part: what differs between two configurations, per mapping and per section.

`diff_configs(old, new)` compares two validated files and sorts every mapping (by its UUID) into
added, removed, changed or unchanged. A mapping is *changed* when any of its own fields changed,
when the `functions` entry it invokes changed (or appeared/disappeared), or when a section its
runner is built from changed: `aws` for every mapping (the clients), `streams` for Kinesis and
DynamoDB Streams mappings. Sections that are opened once for the process (`http`, `state`, `dev`)
are reported in `needs_restart`: the daemon logs them and keeps their running value. `shutdown`,
`reload` and `filters_per_mapping` are read when they are needed (or only by validation), so they
apply at once and restart nothing.

`running_spec()` builds the configuration the daemon runs after a reload; `snapshot()` reads the
file once (its digest is what the watcher compares) and `parse_snapshot()` validates those very
bytes, so the content compared is the content applied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from esm.arns import SourceKind
from esm.config import Config, ConfigError, ConfigFile, MappingConfig, Problem, parse_config

__all__ = [
    "RESTART_SECTIONS",
    "SECTION_SCOPES",
    "ConfigDiff",
    "FileSnapshot",
    "diff_configs",
    "parse_snapshot",
    "running_spec",
    "snapshot",
]

Scope = Literal["all_mappings", "stream_mappings", "functions", "mappings", "restart", "live"]

SECTION_SCOPES: Mapping[str, Scope] = {
    "aws": "all_mappings",  # every runner's clients (and Lambda targets) are built from it
    "streams": "stream_mappings",  # the polling and retry delays of Kinesis and DynamoDB Streams runners
    "functions": "functions",  # a mapping is changed when the entry it invokes changed
    "event_source_mappings": "mappings",  # compared mapping by mapping
    "http": "restart",  # the server is bound once
    "state": "restart",  # the checkpoint store (and its lock) is opened once
    "dev": "restart",  # only read by `esm dev` when it starts the emulator
    "metrics": "all_mappings",  # the SQS runners read their queue-attributes interval when built
    "shutdown": "live",  # read at the moment a runner is stopped
    "reload": "live",  # read by the watcher before each check
    "filters_per_mapping": "live",  # a validation limit only
}
"""How a change of each top-level section of the file is applied."""

RESTART_SECTIONS = frozenset(s for s, scope in SECTION_SCOPES.items() if scope == "restart")
"""Sections whose change needs a restart: the running value stays until then."""


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What a reload changes. Mapping ids are `MappingConfig.uuid` values, in the new file's order."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    """Top-level sections whose value differs (in the order of the file model)."""
    needs_restart: tuple[str, ...] = ()
    """The subset of `sections` that cannot be applied without a restart."""
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """For each changed mapping, what made it change: its field names, `functions.NAME`, `aws`, `streams`."""

    @property
    def counts(self) -> dict[str, int]:
        """The number of mappings in each class (for the `config_reloaded` log line)."""
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
        }


def _mapping_reasons(old: ConfigFile, new: ConfigFile, before: MappingConfig, after: MappingConfig) -> list[str]:
    # Both have the same effective UUID (that is how they were paired): writing out the derived one changes nothing.
    reasons = [
        name for name in MappingConfig.model_fields if name != "UUID" and getattr(before, name) != getattr(after, name)
    ]
    if old.functions.get(before.FunctionName) != new.functions.get(after.FunctionName):
        reasons.append(f"functions.{after.FunctionName}")
    if old.aws != new.aws:
        reasons.append("aws")
    if after.source.kind is not SourceKind.SQS and old.streams != new.streams:
        reasons.append("streams")
    return reasons


def diff_configs(old: ConfigFile, new: ConfigFile) -> ConfigDiff:
    """The difference between the running file `old` and the new file `new` (both validated)."""
    before = {m.uuid: m for m in old.event_source_mappings}
    after = {m.uuid: m for m in new.event_source_mappings}
    added, changed, unchanged = [], [], []
    reasons: dict[str, tuple[str, ...]] = {}
    for uuid, m in after.items():
        if uuid not in before:
            added.append(uuid)
            continue
        why = _mapping_reasons(old, new, before[uuid], m)
        if why:
            changed.append(uuid)
            reasons[uuid] = tuple(why)
        else:
            unchanged.append(uuid)
    sections = tuple(name for name in ConfigFile.model_fields if getattr(old, name) != getattr(new, name))
    return ConfigDiff(
        added=tuple(added),
        removed=tuple(uuid for uuid in before if uuid not in after),
        changed=tuple(changed),
        unchanged=tuple(unchanged),
        sections=sections,
        needs_restart=tuple(s for s in sections if s in RESTART_SECTIONS),
        reasons=reasons,
    )


def running_spec(running: ConfigFile, old: ConfigFile, new: ConfigFile, diff: ConfigDiff) -> ConfigFile:
    """The configuration to run after applying `diff` (from file `old` to file `new`) to `running`.

    `running` may differ from the file it was loaded from (`esm dev` points `aws` at its emulator
    and fills in DynamoDB stream ARNs): a section the file did not change keeps its running value,
    and so does an unchanged mapping, and a section that needs a restart. Everything else is the
    new file's.
    """
    keep = {name for name in ConfigFile.model_fields if name not in diff.sections or name in diff.needs_restart}
    update: dict[str, object] = {name: getattr(running, name) for name in keep if name != "event_source_mappings"}
    current = {m.uuid: m for m in running.event_source_mappings}
    unchanged = set(diff.unchanged)
    update["event_source_mappings"] = [
        current[m.uuid] if m.uuid in unchanged and m.uuid in current else m for m in new.event_source_mappings
    ]
    return new.model_copy(update=update)


@dataclass(frozen=True, slots=True)
class FileSnapshot:
    """One read of the configuration file: the digest of its bytes, and the bytes or why they are missing."""

    digest: str | None
    data: bytes | None
    error: str = ""


def snapshot(path: Path) -> FileSnapshot:
    """Read the file once, through the path (so a swapped `..data` symlink is followed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileSnapshot(None, None, exc.strerror or str(exc))
    return FileSnapshot(hashlib.sha256(data).hexdigest(), data)


def parse_snapshot(path: Path, snap: FileSnapshot) -> Config:
    """Validate the bytes read as `load_config` would; raise ConfigError listing every problem (its texts)."""
    if snap.data is None:
        raise ConfigError(str(path), [Problem("<file>", snap.error)])
    try:
        text = snap.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), [Problem("<file>", "not UTF-8 text")]) from None
    return Config(path, parse_config(text, str(path)))
