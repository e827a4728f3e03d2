"""What every subcommand's arguments share: the parser, argument types, settings overrides.

Each package's ``cli`` module adds its subcommand with these helpers; ``eventvault.cli`` builds
the top parser and dispatches.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from eventvault.errors import ConfigError
from eventvault.settings import Settings, load_settings
from eventvault.times import parse_time


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


def positive_int(text: str) -> int:
    """A whole number above 0."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {number})")
    return number


def output_path(text: str) -> Path:
    """A file to write: its folder must exist, and it must not be a folder itself."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.absolute().parent} is not a directory")
    return path


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
