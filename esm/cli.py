"""The `esm` command: run, dev, validate, schema, send, checkpoints, filter test, iam-policy (DESIGN.md §2).

Exit codes: 0 success, 2 invalid configuration or usage, 1 a runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from esm import __version__
from esm.config import Config, ConfigError, json_schema, load_config
from esm.filter_test import add_filter_parser, run_filter_test

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esm",
        description="Self-hosted AWS Lambda event source mappings with Lambda's exact semantics.",
    )
    p.add_argument("--version", action="version", version=f"esm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    run.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])

    dev = sub.add_parser("dev", help="run the daemon against an embedded AWS emulator (moto)")
    dev.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    dev.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    dev.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])

    val = sub.add_parser("validate", help="check configuration files; exit 2 if any is invalid")
    val.add_argument("files", nargs="+", metavar="FILE")
    val.add_argument(
        "--no-handlers",
        action="store_true",
        help="do not import the Python handlers (functions.*.handler), e.g. where their dependencies are missing",
    )

    sub.add_parser("schema", help="print the JSON Schema of the configuration file")
    iam = sub.add_parser("iam-policy", help="print the least-privilege IAM policy the configured mappings need")
    iam.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    iam.add_argument("--format", default="json", choices=["json", "yaml"], help="output format")
    add_filter_parser(sub)

    send = sub.add_parser("send", help="send a message to an SQS queue or a record to a Kinesis stream")
    send.add_argument("--config", "-c", required=True, help="configuration file (its aws: section is used)")
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--queue", help="queue name or ARN")
    target.add_argument("--stream", help="Kinesis stream name or ARN")
    send.add_argument("--partition-key", default="esm-send", help="PartitionKey (Kinesis)")
    send.add_argument("--group-id", help="MessageGroupId (FIFO queues)")
    send.add_argument("--count", type=int, default=1, help="send the body this many times")
    send.add_argument("body", help="message body")

    cps = sub.add_parser("checkpoints", help="list or move the stream checkpoints in the SQLite state file")
    cp_sub = cps.add_subparsers(dest="action", required=True, metavar="ACTION")
    cp_list = cp_sub.add_parser("list", help="show every stored checkpoint (works while the daemon runs)")
    cp_list.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    cp_list.add_argument("--mapping", metavar="UUID", help="only this mapping's checkpoints")
    cp_list.add_argument("--format", default="table", choices=["table", "json"], help="output format")
    cp_set = cp_sub.add_parser("set", help="move a shard's checkpoint while the daemon is stopped (replay, skip)")
    cp_set.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    cp_set.add_argument("--mapping", required=True, metavar="UUID", help="a Kinesis or DynamoDB Streams mapping")
    cp_set.add_argument("--shard", required=True, metavar="SHARD_ID", help="a shard id, or `all` for every shard")
    cp_set.add_argument(
        "--to",
        required=True,
        metavar="POSITION",
        help="a sequence number (that record is processed again), TRIM_HORIZON, LATEST, "
        "or a time: 2026-11-22T10:00:00Z or @EPOCH_SECONDS (Kinesis only)",
    )
    return p


def _validate(files: Sequence[str], *, handlers: bool = True) -> int:
    status = EXIT_OK
    for f in files:
        try:
            config = load_config(f)
        except ConfigError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            status = EXIT_CONFIG
            continue
        problems = _handler_problems(config) if handlers else []
        for problem in problems:
            print(f"{f}: {problem}", file=sys.stderr)
            status = EXIT_CONFIG
        if not problems:
            print(f"{f}: ok")
    return status


def _handler_problems(config: Config) -> list[str]:
    """Import every Python handler as `esm run` would; one `functions.NAME.handler: reason` per failure.

    The daemon refuses to start with a handler it cannot import: `esm validate` (and the Helm
    chart's `helm test`) says so first.
    """
    from esm.errors import InvokeFatalError
    from esm.targets.python import import_handler

    problems = []
    for name, fn in config.spec.functions.items():
        if fn.handler is None:
            continue
        try:
            import_handler(fn.handler, config.base_dir)
        except InvokeFatalError as exc:
            problems.append(f"functions.{name}.handler: {exc}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `esm` console script; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args.files, handlers=not args.no_handlers)
    if args.command == "filter":
        return run_filter_test(args)
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    if args.command == "checkpoints":
        from esm.checkpoints import run_checkpoints

        return run_checkpoints(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "iam-policy":
        from esm.iam import KMS_NOTE, policy_for

        policy = policy_for(config.spec)
        if args.format == "yaml":
            import yaml

            print(yaml.safe_dump(policy, sort_keys=False), end="")
        else:
            print(json.dumps(policy, indent=2))
        print(f"note: {KMS_NOTE}", file=sys.stderr)
        return EXIT_OK
    if args.command == "send":
        from esm.dev import send_messages

        if args.stream is not None:
            from esm.dev import put_records

            return asyncio.run(put_records(config, args.stream, args.body, args.count, args.partition_key))
        return asyncio.run(send_messages(config, args.queue, args.body, args.count, args.group_id))

    from esm.daemon import run_daemon
    from esm.logging import configure_logging

    configure_logging(args.log_level, args.log_format)
    if args.command == "dev":
        from esm.dev import run_dev

        return run_dev(config)
    return run_daemon(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
