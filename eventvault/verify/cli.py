"""``eventvault verify``: its arguments, the run, and the report on stdout.

Exit 0 when the archive is exact; 5 when it is not (each defect is listed); 2, 3 and 4 for
configuration, storage and Kafka errors, as every command. Unverifiable offsets (deleted by
Kafka between archived ones) make it not exact only in a gap longer than ``--unverifiable-gap``
offsets, or at all with ``--strict``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from eventvault.arguments import add_storage_url, settings_for
from eventvault.errors import ArchiveStateError, ConfigError
from eventvault.storage import open_storage
from eventvault.verify.check import UNVERIFIABLE_GAP, Report, verify
from eventvault.verify.compare import DEFECTS

_COLUMNS = ("partition", "files", "rows", "archived", "log start", "end", "committed",
            "expired", "unverifiable", "nonexistent", "pending", "defects")


def add_parser(sub: Any) -> None:
    """The ``verify`` subcommand's arguments."""
    parser = sub.add_parser(
        "verify", help="check that the archive holds every record of its topics exactly once",
        description="Compare the archive with Kafka and the archiver group's committed "
        "progress: missing, duplicated, misnamed, disordered, unreadable and misfiled files. "
        "Reads file footers and offset columns only. Offsets Kafka deleted between archived "
        "ones are unverifiable: counted, and a defect only in a gap longer than "
        "--unverifiable-gap (every one with --strict). Exit 0 when exact, 5 when not.")
    parser.add_argument("--topic", action="append", dest="topics", metavar="TOPIC",
                        help="topic to verify (repeatable; default: every topic in the "
                        "archive)")
    parser.add_argument("--group-id", help="the archiver's group (default: archive.group_id)")
    add_storage_url(parser)
    parser.add_argument("--unverifiable-gap", type=int, default=UNVERIFIABLE_GAP, metavar="N",
                        help="a gap between archived offsets that Kafka already deleted is a "
                        "defect when longer than N offsets; shorter ones are counted as "
                        f"unverifiable (default: {UNVERIFIABLE_GAP})")
    parser.add_argument("--strict", action="store_true",
                        help="every unverifiable offset is a defect (--unverifiable-gap 0)")
    parser.add_argument("--output", choices=["text", "json"], default="text",
                        help="format of the report on stdout (default: text)")


def run(args: argparse.Namespace) -> int:
    """Run ``eventvault verify``; raise ArchiveStateError (exit 5) when not exact."""
    settings = settings_for(args)
    storage = open_storage(settings.storage)
    topics = args.topics or list(storage.topics())
    if not topics:
        raise ConfigError(f"no topics in the archive at {storage.url}; give --topic",
                          setting="arguments")
    group_id = args.group_id or settings.archive.group_id
    if args.unverifiable_gap < 0:
        raise ConfigError("--unverifiable-gap must be 0 or more", setting="arguments")
    report = verify(settings, storage, topics, group_id, show_progress=args.output == "text",
                    gap_limit=0 if args.strict else args.unverifiable_gap)
    print(json.dumps(as_json(report), indent=2) if args.output == "json" else render(report))
    if not report.exact:
        kinds: dict[str, int] = {}
        for defect in report.defects:
            kinds[defect.kind] = kinds.get(defect.kind, 0) + 1
        found = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        raise ArchiveStateError(f"archive at {storage.url} is not exact: {found}; "
                                "see the report on stdout", defects=kinds)
    return 0


def as_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data, with ``exact`` on top."""
    return {"exact": report.exact, **asdict(report)}


def render(report: Report) -> str:
    """The report as a table, then one line per defect, then the verdict."""
    rows = [_COLUMNS]
    for p in report.partitions:
        archived = f"{p.archived[0]}..{p.archived[1]}" if p.archived else "-"
        rows.append((f"{p.topic}[{p.partition}]", str(p.files), str(p.rows), archived,
                     _text(p.log_start), _text(p.end), _text(p.committed), str(p.expired),
                     str(p.unverifiable), str(p.nonexistent), str(p.pending), str(len(p.defects))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    for d in report.defects:
        where = f"{d.topic}[{d.partition}]" if d.partition is not None else d.topic
        span = f" offsets {d.first}..{d.last} ({d.count})" if d.last is not None else ""
        lines.append(f"{d.kind}: {where}{span} {d.key or ''} {d.detail}".replace("  ", " "))
    if report.removed:
        gone = len(report.removed)
        lines.append(f"{gone} file{'s' if gone > 1 else ''} removed while verifying (retention "
                     f"or erasure meanwhile), left out: {', '.join(report.removed[:5])}"
                     f"{', ...' if gone > 5 else ''}")
    count = len(report.defects)
    verdict = "exact" if report.exact else f"NOT EXACT: {count} defect{'s' if count > 1 else ''}"
    kinds = sorted({d.kind for d in report.defects})
    lines += [f"  {kind}: {DEFECTS[kind]}" for kind in kinds]
    lines.append(f"{verdict} ({report.files} files, group {report.group_id}, "
                 f"{report.bytes_read} bytes read, {report.seconds:.1f}s)")
    return "\n".join(lines)


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)
