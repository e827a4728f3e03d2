"""``eventvault query`` and ``eventvault show``: their arguments, and the runs they ask for.

DuckDB is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from eventvault.arguments import (
    add_storage_url,
    add_time_range,
    key_argument,
    natural_number,
    output_path,
    positive_int,
    settings_for,
    time_range,
)
from eventvault.errors import ConfigError
from eventvault.layout import file_refs, topic_prefix
from eventvault.query.selection import Selection, event_time_within, offset_ranges, select_files
from eventvault.query.show import render, show_sql
from eventvault.query.sql import file_urls
from eventvault.storage import open_storage

QUERY_HELP = ("Run DuckDB SQL over the archive. Each topic is a view named after it (quote "
              'it: "shop.orders"), `events` spans all topics, `maintenance_ledger` holds '
              "erasure and retention runs; views add key_text, value_text (NULL where not "
              "UTF-8) and value_json (NULL where not JSON). Filters on timestamp also prune "
              "the date/hour files read.")
SHOW_HELP = ("Print a topic's archived records in order, with partition, offset, time, key and "
             "headers, the value pretty-printed when it is JSON (hex otherwise). Times are "
             "event times, selected as replay selects them.")


def add_parsers(sub: Any) -> None:
    """The ``query`` and ``show`` subcommands' arguments."""
    query = sub.add_parser("query", description=QUERY_HELP, help="run DuckDB SQL over the "
                           "archive: a view per topic and `events` over all")
    query.add_argument("sql", nargs="?", help="the SQL to run (required unless --print-setup)")
    query.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table",
                       help="output format (parquet needs --output)")
    query.add_argument("--output", type=output_path, metavar="PATH",
                       help="write the result to this file (default: stdout)")
    add_storage_url(query)
    query.add_argument("--print-setup", action="store_true",
                       help="print the SQL that gives the plain duckdb CLI the same views")
    query.add_argument("--show-secrets", action="store_true",
                       help="with --print-setup: print the S3 secret access key (and session "
                       "token), not a placeholder")
    show = sub.add_parser("show", description=SHOW_HELP,
                          help="print a topic's archived records for people")
    show.add_argument("topic", help="the archived topic")
    add_time_range(show)
    show.add_argument("--partition", type=natural_number, action="append", default=[],
                      help="only this partition (repeatable; default: all)")
    show.add_argument("--key", type=key_argument, action="append", default=[],
                      help="only records with this key, UTF-8 or hex: followed by hex digits "
                      "(repeatable; default: any key)")
    show.add_argument("--limit", type=positive_int, default=50,
                      help="print at most this many records")
    add_storage_url(show)


def run_query(args: argparse.Namespace) -> int:
    """Run ``eventvault query``."""
    from eventvault.query import engine  # noqa: PLC0415  (duckdb loads only for this command)

    if args.show_secrets and not args.print_setup:
        raise ConfigError("--show-secrets goes with --print-setup", setting="arguments")
    if args.format == "parquet" and args.output is None and not args.print_setup:
        raise ConfigError("--format parquet needs --output PATH", setting="arguments")
    settings = settings_for(args)
    if args.print_setup:
        print("\n".join(engine.setup(settings.storage, for_print=True,
                                     show_secrets=args.show_secrets)))
        return 0
    if not args.sql:
        raise ConfigError("give the SQL to run, or --print-setup", setting="arguments")
    engine.run(settings.storage, args.sql, args.format, args.output, settings.archive)
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Run ``eventvault show``: the selected records, oldest first."""
    from eventvault.query import engine  # noqa: PLC0415  (duckdb loads only for this command)

    start_us, end_us = time_range(args.start, args.end)
    settings = settings_for(args)
    refs = file_refs(open_storage(settings.storage).list(topic_prefix(args.topic)))
    if not refs:
        raise ConfigError(f"topic {args.topic} is not in the archive at {settings.storage.url}",
                          setting="topic")
    selection = Selection(args.topic, start_us, end_us, partitions=tuple(args.partition),
                          keys=tuple(args.key))
    spec = settings.archive.event_time_spec(args.topic)
    record_time = spec.field is None
    files = select_files(refs, selection, record_time)
    chosen = [ref.key for refs_of_partition in files.values() for ref in refs_of_partition]
    if not chosen:
        return 0
    by_event_time = not record_time and selection.timed
    sql, params = show_sql(selection, file_urls(settings.storage, chosen),
                           offset_ranges(selection, files),
                           None if by_event_time else args.limit, record_time)
    con = engine.connect(settings.storage, topics=())
    try:
        rows = (row for batch in engine.record_batches(con, sql, params, 1024)
                for row in zip(*batch.to_pydict().values(), strict=True))
        if by_event_time:  # as replay selects them: by the event time the archiver computed
            rows = (r for r in rows if event_time_within(selection, spec, r[2], r[5]))
        for row in itertools.islice(rows, args.limit):
            for line in render(row):
                print(line)
    finally:
        con.close()
    return 0
