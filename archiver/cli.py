"""``eventvault archive``: its arguments, and the run they ask for."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from typing import Any

from eventvault import observe
from eventvault.arguments import add_storage_url, settings_for
from eventvault.errors import ConfigError
from eventvault.settings import Settings
from eventvault.storage import open_storage


def add_parser(sub: Any) -> None:
    """The ``archive`` subcommand's arguments."""
    arch = sub.add_parser(
        "archive", help="archive topics into the configured storage",
        description="Archive Kafka topics into time-partitioned Parquet files, exactly once "
        "(docs/EXACTLY_ONCE.md). Runs until SIGTERM/SIGINT, then finishes uploads, commits and "
        "exits 0; with --once, stops at the end offsets seen at start.")
    arch.add_argument("--once", action="store_true",
                      help="archive up to the end offsets seen at start, commit, exit 0")
    arch.add_argument("--topic", action="append", dest="topics", metavar="TOPIC",
                      help="topic to archive (repeatable; default: the archive.topics "
                      "setting)")
    arch.add_argument("--topics-regex", metavar="REGEX",
                      help="archive every topic matching this regex (default: the "
                      "archive.topics_regex setting)")
    add_storage_url(arch)
    arch.add_argument("--metrics-port", type=int, metavar="PORT",
                      help="serve Prometheus metrics on this port (default: the metrics.port "
                      "setting; none unless set)")
    arch.add_argument("--output", choices=["text", "json"], default="text",
                      help="format of the final summary on stdout")
    arch.add_argument("--resume-from-archive", action="store_true",
                      help="first, for partitions whose committed offset was lost (expired), "
                      "commit the offset after their highest archived offset, if `eventvault "
                      "verify` finds no other defect in them (docs/EXACTLY_ONCE.md)")


def _settings(args: argparse.Namespace) -> Settings:
    archive: dict[str, Any] = {}
    if args.topics:
        archive["topics"] = args.topics
    if args.topics_regex:
        archive.update(topics_regex=args.topics_regex, topics=[])
    metrics = {"port": args.metrics_port} if args.metrics_port is not None else {}
    return settings_for(args, archive=archive, metrics=metrics)


def run(args: argparse.Namespace) -> int:
    """Run ``eventvault archive``; print the summary."""
    from eventvault.archiver.runner import Archiver  # noqa: PLC0415  (aiokafka on demand)

    settings = _settings(args)
    if not (settings.archive.topics or settings.archive.topics_regex):
        raise ConfigError("no topics to archive: give --topic, --topics-regex, archive.topics "
                          "or EVENTVAULT_ARCHIVE__TOPICS", setting="archive.topics")
    if settings.metrics.port is not None:
        observe.serve_metrics(settings.metrics.host, settings.metrics.port)
    storage = open_storage(settings.storage)
    if args.resume_from_archive:
        from eventvault.archiver.recovery import resume_from_archive  # noqa: PLC0415

        resume_from_archive(settings, storage)
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
