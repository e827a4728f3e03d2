"""``eventvault replay``: its arguments, and the run they ask for."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from eventvault.arguments import (
    add_storage_url,
    add_time_range,
    key_argument,
    natural_number,
    positive_number,
    settings_for,
    time_range,
)
from eventvault.errors import ConfigError
from eventvault.query.selection import Selection
from eventvault.replay.errors import PreflightError
from eventvault.replay.plan import Plan, Target
from eventvault.times import iso_time

_SELECTION = ("topic", "target", "start", "end", "partition", "from_offset", "to_offset", "key",
              "where", "partition_map")


def _offset(text: str) -> tuple[int | None, int]:
    """``N`` (every partition) or ``P:N`` (partition P)."""
    try:
        p, _, o = text.rpartition(":")
        partition, offset = (int(p) if p else None), int(o)
    except ValueError:
        partition = offset = -1
    if offset < 0 or (partition is not None and partition < 0):
        raise argparse.ArgumentTypeError(f"not an offset or PARTITION:OFFSET (whole numbers, 0 "
                                         f"or more): {text!r}")
    return partition, offset


def _pmap(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(a), int(b)) for a, b in (pair.split(":") for pair in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--partition-map wants SRC:DST,SRC:DST, got {text!r}") \
            from None


def add_parser(sub: Any) -> None:
    """The ``replay`` subcommand's arguments."""
    rep = sub.add_parser(
        "replay", help="stream archived records back onto a topic, exactly once",
        description="Produce a selection of the archive onto a topic in transactions, exactly "
        "once for read_committed consumers, resumable with --resume after a crash "
        "(docs/REPLAY.md). A preflight refuses what the target would reject or delete.")
    rep.add_argument("--topic", help="the archived source topic (required unless --resume)")
    rep.add_argument("--target", help="the topic to produce to, which must exist (may be the "
                     "source topic; required unless --resume)")
    add_time_range(rep)
    rep.add_argument("--partition", type=natural_number, action="append", default=[],
                     help="source partition (repeatable; default: all)")
    rep.add_argument("--from-offset", type=_offset, action="append", default=[],
                     metavar="[P:]N", help="first source offset, inclusive (repeatable; "
                     "default: the first archived)")
    rep.add_argument("--to-offset", type=_offset, action="append", default=[],
                     metavar="[P:]N", help="last source offset, exclusive (repeatable; "
                     "default: the last archived)")
    rep.add_argument("--key", type=key_argument, action="append", default=[],
                     help="key, UTF-8 or hex:... (repeatable; default: any key)")
    rep.add_argument("--where", help="DuckDB predicate over the archive's columns, "
                     "e.g. \"value_json->>'$.type' = 'OrderPaid'\" (default: every record)")
    rep.add_argument("--partitioning", choices=["preserve", "key", "map"], default="preserve",
                     help="target partition: the source's, by key hash, or --partition-map")
    rep.add_argument("--partition-map", type=_pmap, default=(), metavar="SRC:DST,...",
                     help="source to target partitions, with --partitioning map")
    rep.add_argument("--no-provenance", action="store_true",
                     help="do not add eventvault.replay.id / eventvault.source.* headers")
    rep.add_argument("--timestamp", choices=["original", "now"], default="original",
                     help="the records' timestamps: as archived, or the time of producing")
    rep.add_argument("--dry-run", action="store_true",
                     help="print what would be replayed and the preflight; produce nothing")
    rep.add_argument("--force", action="store_true",
                     help="replay despite retention or LogAppendTime warnings")
    rep.add_argument("--rate", type=positive_number,
                     help="at most this many records/s (default: unpaced)")
    rep.add_argument("--rate-bytes", type=positive_number,
                     help="at most this many key+value bytes/s (default: unpaced)")
    rep.add_argument("--resume", metavar="ID", help="go on with replay ID from its progress "
                     "(default: a new replay)")
    rep.add_argument("--output", choices=["text", "json"], default="text",
                     help="format of the report on stdout")
    add_storage_url(rep)


def _plan(args: argparse.Namespace) -> Plan:
    from eventvault.replay.prepare import new_id  # noqa: PLC0415

    if not args.topic or not args.target:
        raise ConfigError("replay needs --topic and --target (or --resume ID)",
                          setting="arguments")
    if (args.partitioning == "map") != bool(args.partition_map):
        raise ConfigError("--partition-map goes with --partitioning map, and only with it",
                          setting="--partition-map")
    start_us, end_us = time_range(args.start, args.end)
    selection = Selection(args.topic, start_us, end_us, tuple(args.partition),
                          tuple(args.from_offset), tuple(args.to_offset), tuple(args.key),
                          args.where)
    _refuse_empty_offsets(selection)
    target = Target(args.target, args.partitioning, args.partition_map,
                    not args.no_provenance, args.timestamp)
    started = datetime.now(UTC)
    return Plan(new_id(started), selection, target, started.isoformat())


def _refuse_empty_offsets(selection: Selection) -> None:
    """--from-offset at or past --to-offset selects nothing: refused, as --start after --end."""
    named = {p for p, _ in selection.from_offsets + selection.to_offsets if p is not None}
    for partition in [*sorted(named), -1]:  # -1: a partition no bound names
        lo, hi = selection.offset_range(partition)
        if hi is not None and lo >= hi:
            where = "" if partition < 0 else f" in partition {partition}"
            raise ConfigError(f"--from-offset {lo} is not before --to-offset {hi}{where} "
                              f"(--to-offset is exclusive)", setting="--from-offset")


def run(args: argparse.Namespace) -> int:
    """Run ``eventvault replay``; print the report."""
    from eventvault.replay.prepare import load_plan  # noqa: PLC0415
    from eventvault.replay.producer import Pacing  # noqa: PLC0415
    from eventvault.replay.runner import replay  # noqa: PLC0415
    from eventvault.storage import open_storage  # noqa: PLC0415

    settings = settings_for(args)
    if args.resume:
        given = [name for name in _SELECTION if getattr(args, name) not in (None, [], ())]
        if given:
            raise ConfigError(f"--resume replays the stored selection; drop --{given[0]}",
                              setting="--resume")
        plan = load_plan(open_storage(settings.storage), args.resume)
    else:
        plan = _plan(args)
    report = asyncio.run(replay(settings, plan, resume=bool(args.resume), dry_run=args.dry_run,
                                force=args.force, pacing=Pacing(args.rate, args.rate_bytes)))
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(_text(report)))
    fatal = [f["message"] for f in report["preflight"] if f["fatal"]]
    if fatal:  # a dry run that the replay would refuse
        raise PreflightError.of(fatal)
    return 0


def _time(us: int) -> str:
    return iso_time(us, "seconds").replace("+00:00", "Z")


def _text(report: dict[str, Any]) -> Iterator[str]:
    yield (f"replay {report['replay_id']}: {report['status']}, "
           f"{report['source_topic']} -> {report['target_topic']}")
    for s in report["to_replay"]:
        yield (f"  partition {s['partition']}: {s['records']} records, offsets "
               f"{s['first_offset']}..{s['last_offset']}, {_time(s['first_us'])} .. "
               f"{_time(s['last_us'])}, {s['bytes']} bytes")
    for f in report["preflight"]:
        yield f"  {'refused' if f['fatal'] else 'warning'}: {f['message']}"
    if report["status"] != "dry-run":
        this_run = report["this_run"]
        yield (f"  delivered {this_run['records']} records in {this_run['seconds']} s; "
               f"{report['records']} in all, {report['transactions']} transactions; "
               f"offset map: {report['offset_map']}")
