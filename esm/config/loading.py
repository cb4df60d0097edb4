"""Reading a configuration file: YAML, `${VAR}` expansion, validation, every problem at once.

`load_config()` is the entry point: it reads the file, expands `${VAR}` / `${VAR:-default}`,
validates the structure (pydantic) and then the cross-field rules, and raises `ConfigError`
listing *every* problem as `(path, reason)`; `esm validate` prints them as `FILE: path: reason`.
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

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, path: str, env: dict[str, str], problems: list[Problem]) -> Any:
    """Expand `${VAR}` / `${VAR:-default}` in every string value; `$$` is a literal `$`."""
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(path or "<root>", f"environment variable {name} is not set"))
            return ""

        return _VAR_RE.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}.{i}" if path else str(i), env, problems) for i, v in enumerate(node)]
    return node


def _loc(loc: Iterable[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(Problem(_loc(e["loc"]), msg))
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
        raw = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(file, [Problem("<root>", "the document is nested too deeply")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "<document>"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, [Problem(where, f"invalid YAML: {reason}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(file, [Problem("<root>", "the file must be a YAML mapping of sections")])
    problems: list[Problem] = []
    try:
        expanded = _expand(raw, "", dict(os.environ) if env is None else env, problems)
    except RecursionError:
        raise ConfigError(file, [Problem("<root>", "the document is nested too deeply")]) from None
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
