"""``eventvault erase`` and ``eventvault retention``: their arguments, and the runs they ask for."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventvault.arguments import add_storage_url, settings_for
from eventvault.errors import ConfigError
from eventvault.storage import open_storage


def add_parsers(sub: Any) -> None:
    """The ``erase`` and ``retention`` subcommands' arguments."""
    erase = sub.add_parser(
        "erase", help="erase data subjects from the archive, every object version included",
        description="Erase data subjects (GDPR Art. 17) from every archived topic configured "
        "in erasure.topics: files holding them are rewritten under the same name, their other "
        "versions deleted, the result verified and written to the PII-free ledger. Without "
        "requests, re-checks the open ones (late records). See docs/ERASURE.md.")
    erase.add_argument("--request-id", help="the request's id (with --subject; default: "
                       "re-check the open requests)")
    erase.add_argument("--subject", action="append", default=[],
                       help="a subject id to erase (repeatable; with --request-id)")
    erase.add_argument("--requests", type=Path, metavar="FILE",
                       help='JSON list of {"request_id": ..., "subject" or "subjects": ...} '
                       "('-': standard input), so that ids stay out of shell history (default: "
                       "none)")
    erase.add_argument("--dry-run", action="store_true",
                       help="find and count, write nothing (default: erase)")
    erase.add_argument("--output", choices=["text", "json"], default="text",
                       help="format of the summary on stdout")
    add_storage_url(erase)
    retention = sub.add_parser(
        "retention", help="delete whole hours older than each topic's retention.keep_days",
        description="Delete, by event time, whole date/hour partitions older than "
        "retention.keep_days[topic] with every object version; topics without a limit are kept "
        "forever. See docs/ERASURE.md.")
    retention.add_argument("--dry-run", action="store_true",
                           help="list what would be deleted, delete nothing")
    retention.add_argument("--output", choices=["text", "json"], default="text",
                           help="format of the summary on stdout")
    add_storage_url(retention)


def _asked(args: argparse.Namespace) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if args.subject or args.request_id:
        if not (args.subject and args.request_id):
            raise ConfigError("--request-id and --subject go together", setting="arguments")
        items.append({"request_id": args.request_id, "subjects": args.subject})
    if args.requests:
        text = sys.stdin.read() if str(args.requests) == "-" else _read(args.requests)
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--requests {args.requests} is not JSON: {exc}",
                              setting="--requests") from None
        if not isinstance(loaded, list):
            raise ConfigError(f"--requests {args.requests} must hold a JSON list",
                              setting="--requests")
        items += loaded
    return items


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"--requests {path}: {exc.strerror}", setting="--requests") from None


def run_erase(args: argparse.Namespace) -> int:
    """Run ``eventvault erase``; print the summary."""
    from eventvault.maintenance import report  # noqa: PLC0415
    from eventvault.maintenance.erase import run_erasure, submissions  # noqa: PLC0415
    from eventvault.maintenance.ledger import new_run_id  # noqa: PLC0415

    settings = settings_for(args)
    asked = submissions(_asked(args))
    now = datetime.now(UTC)
    summary = asyncio.run(run_erasure(settings, open_storage(settings.storage), asked, now,
                                      new_run_id(now), args.dry_run))
    summary.pop("ledger")
    _print(args, summary, report.text)
    return 0


def run_retention(args: argparse.Namespace) -> int:
    """Run ``eventvault retention``; print the summary."""
    from eventvault.maintenance.ledger import new_run_id  # noqa: PLC0415
    from eventvault.maintenance.retention import Retention, plan_all, text  # noqa: PLC0415

    settings = settings_for(args)
    now = datetime.now(UTC)
    retention = Retention(settings, open_storage(settings.storage), now, new_run_id(now),
                          args.dry_run)
    plans = asyncio.run(plan_all(retention))
    outcomes = [] if args.dry_run else [
        retention.delete_hour(p.topic, h.hour, h.files)
        for p in plans for h in p.hours if h.waiting is None]
    _print(args, retention.finish(plans, outcomes), text)
    return 0


def _print(args: argparse.Namespace, summary: dict[str, Any], render: Any) -> None:
    if args.output == "json":
        print(json.dumps(summary, indent=2, default=str))
    else:
        print("\n".join(render(summary)))
