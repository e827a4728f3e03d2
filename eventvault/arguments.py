"""What every subcommand's arguments share: the parser, argument types, settings overrides.

Each package's ``cli`` module adds its subcommand with these helpers; ``eventvault.cli`` builds
the top parser and dispatches.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from eventvault.errors import ConfigError
from eventvault.settings import Settings, load_settings
from eventvault.times import micros, parse_time


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ConfigError line (exit 2), not argparse's own."""

    def error(self, message: str) -> NoReturn:
        """Raise the argument error as a ConfigError."""
        raise ConfigError(message, setting="arguments")


def time_argument(text: str) -> Any:
    """An ISO-8601 time argument (UTC unless it has an offset)."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_storage_url(parser: argparse.ArgumentParser) -> None:
    """The ``--storage-url`` option every archive-reading command takes."""
    parser.add_argument("--storage-url", help="overrides storage.url")


def settings_for(args: argparse.Namespace, **updates: dict[str, Any]) -> Settings:
    """The settings, with a subcommand's overrides (``--storage-url`` and others) on top."""
    config: Path | None = args.config
    settings = load_settings(config)
    updates = {section: values for section, values in updates.items() if values}
    if getattr(args, "storage_url", None):
        updates["storage"] = {**updates.get("storage", {}), "url": args.storage_url}
    if not updates:
        return settings
    return load_settings(config, **{
        section: {**getattr(settings, section).model_dump(), **values}
        for section, values in updates.items()})


def key_argument(text: str) -> bytes:
    """A ``--key`` argument: UTF-8 text, or ``hex:`` followed by hex digits."""
    if not text.startswith("hex:"):
        return text.encode()
    try:
        return bytes.fromhex(text[4:])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not hex: followed by pairs of hex digits") from None


def positive_number(text: str) -> float:
    """A number above zero (a rate)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"want a number above 0, got {text!r}")
    return value


def natural_number(text: str) -> int:
    """A whole number, 0 or more (a partition, an offset, a limit)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"want a whole number, 0 or more, got {text!r}")
    return value


def time_range(start: datetime | None, end: datetime | None) -> tuple[int | None, int | None]:
    """``--start`` and ``--end`` as µs since the epoch; refused unless start is before end."""
    if start is not None and end is not None and start >= end:
        raise ConfigError(f"--start {start.isoformat()} is not before --end {end.isoformat()} "
                          f"(--end is exclusive)", setting="--start")
    return (None if start is None else micros(start)), (None if end is None else micros(end))
