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

SETTINGS_HELP = """\
settings: the TOML file --config names, else the one EVENTVAULT_CONFIG names, else
./eventvault.toml if there is one; environment variables EVENTVAULT_<SECTION>__<KEY> (two
underscores, e.g. EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS; lists and tables as JSON) override the
file, and options override both. An unknown EVENTVAULT_* variable is an error.
exit codes: 0 done, 2 arguments or settings, 3 storage, 4 Kafka, 5 archive state, 6 replay
refused by its preflight, 7 records refused by a replay's target, 8 erasure or retention
incomplete, 1 anything else (see README.md)."""


class HelpFormatter(argparse.HelpFormatter):
    """Help that says each option's default and marks required options.

    A description or epilog written in lines keeps them; one written as one line is wrapped.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.required and action.option_strings:
            text += " (required)"
        default = action.default
        if "default" in text or default in (None, argparse.SUPPRESS) or \
                isinstance(action, argparse._HelpAction):
            return text
        if default is False:
            return f"{text} (default: off)"
        if default in ([], ()):
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ConfigError line (exit 2), not argparse's own.

    Its help says each option's default, and where settings come from.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("epilog", SETTINGS_HELP)
        super().__init__(*args, **kwargs)

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
    """A whole number, 1 or more (a limit)."""
    return _whole_number(text, 1)


def output_path(text: str) -> Path:
    """A file to write: its folder must exist, and it must not be a folder itself."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.absolute().parent} is not a directory")
    return path


def add_time_range(parser: argparse.ArgumentParser) -> None:
    """``--start`` and ``--end``: the event times ``show`` and ``replay`` select."""
    parser.add_argument("--start", type=time_argument,
                        help="event time, ISO-8601 (UTC if no offset), inclusive (default: the "
                        "oldest)")
    parser.add_argument("--end", type=time_argument,
                        help="event time, ISO-8601, exclusive (default: no end)")


def add_storage_url(parser: argparse.ArgumentParser) -> None:
    """The ``--storage-url`` option every archive-reading command takes."""
    parser.add_argument("--storage-url", metavar="URL", help="the archive: s3://bucket/prefix, "
                        "file:///path or a path (default: the storage.url setting, "
                        "file://./eventvault-archive unless set)")


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
    """A whole number, 0 or more (a partition, an offset)."""
    return _whole_number(text, 0)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"want a whole number, {least} or more, got {text!r}")
    return value


def time_range(start: datetime | None, end: datetime | None) -> tuple[int | None, int | None]:
    """``--start`` and ``--end`` as µs since the epoch; refused unless start is before end."""
    if start is not None and end is not None and start >= end:
        raise ConfigError(f"--start {start.isoformat()} is not before --end {end.isoformat()} "
                          f"(--end is exclusive)", setting="--start")
    return (None if start is None else micros(start)), (None if end is None else micros(end))
