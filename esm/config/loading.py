"""Reading a configuration file: YAML, `${VAR}` expansion, validation, every problem at once.

`load_config()` is the entry point: it reads the file, expands `${VAR}` / `${VAR:-default}`,
validates the structure (pydantic) and then the cross-field rules, and raises `ConfigError`
listing *every* problem as `(path, reason)`; `esm validate` prints them as `FILE: path: reason`.

Bad input is a problem, never a crash or a hang: YAML errors name their line and column (control
characters included), a key given twice in one mapping is an error (YAML requires unique keys; a
second `functions:` would otherwise replace the first without a word), and a document whose
aliases expand to more than `MAX_VALUES` values (a "billion laughs" file) is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from esm.config.models import Config, ConfigError, ConfigFile, FunctionConfig, MappingConfig, Problem
from esm.config.rules import filter_criteria_problems, function_problems, mapping_problems, state_problems

__all__ = ["load_config", "parse_config"]

# `$$`, a `${VAR}` / `${VAR:-default}` reference, or a `${` that starts neither (an error).
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")

MAX_VALUES = 100_000
"""The most values (mappings, lists and scalars) a configuration may have once its YAML aliases
are expanded; far above any real file, far below what makes validation hang."""

_BAD_REFERENCE = (
    "invalid ${...} reference: write ${VAR} or ${VAR:-default} (VAR: letters, digits, _), or $$ for a literal $"
)


class _TooLarge(Exception):
    """The document expands to more than MAX_VALUES values."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that appears twice in one mapping (YAML 1.2 §3.2.1.1).

    Keys brought in by a merge (`<<: *defaults`) may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    """One YAML error as `line L, column C: invalid YAML: reason`, on one line."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: PyYAML gives an offset, not a mark
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return Problem(
            f"line {line}, column {column}", f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        )
    mark = getattr(exc, "problem_mark", None)
    reason = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    if context and reason.startswith("but "):  # PyYAML splits "expected X, but found Y" in two
        reason = f"{context}, {reason}"
    elif context and reason == "found unexpected end of stream" and getattr(exc, "context_mark", None) is not None:
        mark = getattr(exc, "context_mark", None)  # the end of the file says nothing: name where the scalar starts
        reason = f"{context}, {reason}"
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "<document>"
    return Problem(where, f"invalid YAML: {reason}")


def _expand(node: Any, path: str, env: dict[str, str], problems: list[Problem], budget: list[int]) -> Any:
    """Expand `${VAR}` / `${VAR:-default}` in every string value; `$$` is a literal `$`.

    `budget` holds the values still allowed; _TooLarge is raised when they run out.
    """
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            if m.group(0) == "${":
                problems.append(Problem(path or "<root>", _BAD_REFERENCE))
                return m.group(0)
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(path or "<root>", f"environment variable {name} is not set"))
            return ""

        return _VAR_RE.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, problems, budget) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}.{i}" if path else str(i), env, problems, budget) for i, v in enumerate(node)]
    return node


def _loc(loc: Iterable[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _problem(loc: tuple[int | str, ...], msg: str) -> Problem:
    if loc and loc[-1] == "[key]":  # pydantic's marker for a dictionary key that is not allowed
        return Problem(_loc(loc[:-1]), f"invalid key: {msg}")
    return Problem(_loc(loc), msg)


def _yaml_kind(value: Any) -> str:
    """What a YAML value is, in YAML's words (for messages)."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif e["type"] in ("model_type", "dict_type"):
            # pydantic says "a valid dictionary or instance of FunctionConfig": name the YAML shape instead.
            msg = f"must be a mapping of keys to values, not {_yaml_kind(e['input'])}"
        out.append(_problem(e["loc"], msg))
    return out


def _partial_problems(raw: dict[str, Any]) -> Iterator[Problem]:
    """Cross-field problems of the mappings that are valid on their own, when others are not.

    So that `esm validate` reports every problem in one run, not only the structural ones.
    """
    entries = raw.get("event_source_mappings")
    functions = raw.get("functions")
    if not isinstance(entries, list):
        return
    names = set(functions) if isinstance(functions, dict) else set()
    valid = []
    for i, entry in enumerate(entries):
        try:
            valid.append((i, MappingConfig.model_validate(entry)))
        except ValidationError:
            continue
    yield from mapping_problems(valid, names)


def _valid_functions(raw: dict[str, Any]) -> dict[str, FunctionConfig]:
    """The `functions` entries that are valid on their own (for cross-field checks on a broken file)."""
    functions = raw.get("functions")
    valid: dict[str, FunctionConfig] = {}
    if isinstance(functions, dict):
        for name, entry in functions.items():
            try:
                valid[str(name)] = FunctionConfig.model_validate(entry)
            except ValidationError:
                continue
    return valid


def parse_config(text: str, file: str, env: dict[str, str] | None = None) -> ConfigFile:
    """Validate configuration text; raise ConfigError with every problem (file is for messages)."""
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is yaml.SafeLoader with unique keys
    except RecursionError:
        raise ConfigError(file, [Problem("<root>", "the document is nested too deeply")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, [_yaml_problem(exc, text)]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(file, [Problem("<root>", "the file must be a YAML mapping of sections")])
    problems: list[Problem] = []
    try:
        expanded = _expand(raw, "", dict(os.environ) if env is None else env, problems, [MAX_VALUES])
    except RecursionError:
        raise ConfigError(file, [Problem("<root>", "the document is nested too deeply")]) from None
    except _TooLarge:
        reason = f"the document has more than {MAX_VALUES} values once its YAML aliases are expanded"
        raise ConfigError(file, [Problem("<root>", reason)]) from None
    try:
        spec = ConfigFile.model_validate(expanded)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        problems.extend(_partial_problems(expanded))
        problems.extend(function_problems(_valid_functions(expanded)))
        raise ConfigError(file, problems) from None
    problems.extend(function_problems(spec.functions))
    problems.extend(mapping_problems(list(enumerate(spec.event_source_mappings)), set(spec.functions)))
    problems.extend(filter_criteria_problems(spec))
    problems.extend(state_problems(spec))
    if problems:
        raise ConfigError(file, problems)
    return spec


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate a configuration file; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("<file>", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [Problem("<file>", "not UTF-8 text")]) from None
    return Config(p, parse_config(text, str(path), env))
