"""The configuration file: YAML parsed once into frozen pydantic models (DESIGN.md §2).

Mapping entries take `CreateEventSourceMapping`'s parameter names, per-source defaults, ranges,
cross-parameter rules and AWS's own error texts (ESM-SPEC.md §1.1), so an
`AWS::Lambda::EventSourceMapping` `Properties` block pastes in unchanged.

- `esm.config.models`: the frozen models (`ConfigFile` and its sections) and the JSON Schema;
- `esm.config.rules`: the cross-parameter rules with AWS's texts;
- `esm.config.loading`: `load_config()` / `parse_config()`, `${VAR}` expansion, every problem at once.
"""

from esm.config.loading import load_config, parse_config
from esm.config.models import (
    AwsConfig,
    Config,
    ConfigError,
    ConfigFile,
    DevConfig,
    DevQueue,
    FunctionConfig,
    HttpConfig,
    MappingConfig,
    Problem,
    RetryDelayConfig,
    ShutdownConfig,
    StateConfig,
    StreamsConfig,
    json_schema,
)
from esm.config.rules import check_visibility_timeout

__all__ = [
    "AwsConfig",
    "Config",
    "ConfigError",
    "ConfigFile",
    "DevConfig",
    "DevQueue",
    "FunctionConfig",
    "HttpConfig",
    "MappingConfig",
    "Problem",
    "RetryDelayConfig",
    "ShutdownConfig",
    "StateConfig",
    "StreamsConfig",
    "check_visibility_timeout",
    "json_schema",
    "load_config",
    "parse_config",
]
