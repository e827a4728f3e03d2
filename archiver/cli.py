"""The ``eventvault`` command line.

Errors print one line, ``eventvault: error: ...``, and exit with the error's code: 2 for bad
arguments or configuration, 3 storage, 4 Kafka, 5 archive state, 6 replay refused by its
preflight, 7 records refused by the replay's target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from archiver import observe
from archiver.errors import ConfigError, EventVaultError
from archiver.runner import Archiver
from archiver.settings import Settings, load_settings
from archiver.show import parse_time
from archiver.storage import open_storage
from replay import cli as replay_cli


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, setting="arguments")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="eventvault", description="Archive Kafka topics to Parquet, "
                     "query them with DuckDB, replay them.")
    parser.add_argument("--config", type=Path, help="TOML settings file (default: "
                        "./eventvault.toml if present)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    arch = sub.add_parser("archive", help="archive topics into the configured storage")
    arch.add_argument("--once", action="store_true",
                      help="archive up to the end offsets seen at start, commit, exit 0")
    arch.add_argument("--topic", action="append", dest="topics", metavar="TOPIC",
                      help="topic to archive (repeatable; overrides archive.topics)")
    arch.add_argument("--topics-regex", help="archive every topic matching this regex")
    arch.add_argument("--storage-url", help="overrides storage.url")
    arch.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    arch.add_argument("--output", choices=["text", "json"], default="text",
                      help="format of the final summary on stdout")
    query = sub.add_parser("query", help="run DuckDB SQL over the archive: a view per topic "
                           "and `events` over all")
    query.add_argument("sql", nargs="?", help="the SQL to run")
    query.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    query.add_argument("--output", type=Path, metavar="PATH", help="write here, not stdout")
    query.add_argument("--storage-url", help="overrides storage.url")
    query.add_argument("--print-setup", action="store_true",
                       help="print the SQL that gives the plain duckdb CLI the same views")
    show = sub.add_parser("show", help="print a topic's archived records for people")
    show.add_argument("topic")
    show.add_argument("--start", type=parse_time, help="ISO time (UTC if no offset), inclusive")
    show.add_argument("--end", type=parse_time, help="ISO time, exclusive")
    show.add_argument("--partition", type=int, action="append", default=[])
    show.add_argument("--key", action="append", default=[],
                      help="UTF-8 key, or hex: followed by hex digits (repeatable)")
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--storage-url", help="overrides storage.url")
    replay_cli.add_parser(sub)
    return parser


def _show(args: argparse.Namespace) -> int:
    from archiver import query, show  # noqa: PLC0415  (duckdb loads only for this command)

    storage = _load(args).storage
    topics = open_storage(storage).topics()
    if args.topic not in topics:
        raise ConfigError(f"topic {args.topic} is not in the archive at {storage.url}",
                          setting="topic")
    sel = show.Selection(args.topic, args.start, args.end, tuple(args.partition),
                         tuple(show.parse_key(k) for k in args.key), args.limit)
    for row in query.fetch(storage, *show.selection_sql(sel), topics=topics):
        for line in show.render(row):
            print(line)
    return 0


def _load(args: argparse.Namespace, **updates: dict[str, Any]) -> Settings:
    """The settings, with a subcommand's overrides (``--storage-url`` and others) on top."""
    settings = load_settings(args.config)
    updates = {section: values for section, values in updates.items() if values}
    if getattr(args, "storage_url", None):
        updates["storage"] = {**updates.get("storage", {}), "url": args.storage_url}
    if not updates:
        return settings
    return load_settings(args.config, **{
        section: {**getattr(settings, section).model_dump(), **values}
        for section, values in updates.items()})


def _query(args: argparse.Namespace) -> int:
    from archiver import query  # noqa: PLC0415  (duckdb loads only for this command)

    settings = _load(args)
    if args.print_setup:
        print("\n".join(query.setup(settings.storage, for_print=True)))
        return 0
    if not args.sql:
        raise ConfigError("give the SQL to run, or --print-setup", setting="arguments")
    query.run(settings.storage, args.sql, args.format, args.output, settings.archive)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    archive: dict[str, Any] = {}
    if args.topics:
        archive["topics"] = args.topics
    if args.topics_regex:
        archive.update(topics_regex=args.topics_regex, topics=[])
    metrics = {"port": args.metrics_port} if args.metrics_port is not None else {}
    return _load(args, archive=archive, metrics=metrics)


def _archive(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not (settings.archive.topics or settings.archive.topics_regex):
        raise ConfigError("no topics to archive: give --topic, --topics-regex, archive.topics "
                          "or EVENTVAULT_ARCHIVE__TOPICS", setting="archive.topics")
    if settings.metrics.port is not None:
        observe.serve_metrics(settings.metrics.host, settings.metrics.port)
    storage = open_storage(settings.storage)
    observe.event("archive starting", storage=storage.url, once=args.once,
                  topics=settings.archive.topics or settings.archive.topics_regex,
                  group_id=settings.archive.group_id)
    summary = asyncio.run(Archiver(settings, storage, once=args.once,
                                   show_progress=True).run())
    if args.output == "json":
        print(json.dumps(asdict(summary), indent=2))
    else:
        print(f"archived {summary.records} records into {summary.files} files "
              f"({summary.bytes_written} bytes) in {summary.seconds:.1f}s -> {storage.url}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    return replay_cli.run(args, _load(args))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eventvault`` console script."""
    try:
        args = build_parser().parse_args(argv)
        observe.setup_logging(args.log_level)
        commands: dict[str, Callable[[argparse.Namespace], int]] = {
            "archive": _archive, "query": _query, "show": _show, "replay": _replay}
        return commands[args.command](args)
    except EventVaultError as exc:
        print(f"eventvault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader (head, less) went away: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
