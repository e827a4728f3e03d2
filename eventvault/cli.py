"""The ``eventvault`` command line: parses the arguments and dispatches to each package's command.

Errors print one line, ``eventvault: error: ...``, and exit with the error's code: 2 for bad
arguments or configuration, 3 storage, 4 Kafka, 5 archive state (``verify``: not exact), 6
replay refused by its preflight, 7 records refused by the replay's target, 8 erasure or
retention incomplete (a verification failed, a deadline passed), 1 otherwise; 130 on Ctrl-C.
README.md lists each command's codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from eventvault import observe
from eventvault.archiver import cli as archive_command
from eventvault.arguments import Parser
from eventvault.errors import EventVaultError
from eventvault.maintenance import cli as maintenance_commands
from eventvault.query import cli as query_commands
from eventvault.replay import cli as replay_command
from eventvault.verify import cli as verify_command

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "archive": archive_command.run, "query": query_commands.run_query,
    "show": query_commands.run_show, "replay": replay_command.run,
    "erase": maintenance_commands.run_erase, "retention": maintenance_commands.run_retention,
    "verify": verify_command.run}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="eventvault", description="Archive Kafka topics to Parquet, "
                    "query them with DuckDB, replay them, erase data subjects and apply "
                    "retention. `eventvault COMMAND --help` describes each command.")
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="TOML settings file (default: the file EVENTVAULT_CONFIG names, "
                        "else ./eventvault.toml if present)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the least severe JSON log lines written to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    archive_command.add_parser(sub)
    query_commands.add_parsers(sub)
    replay_command.add_parser(sub)
    maintenance_commands.add_parsers(sub)
    verify_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eventvault`` console script."""
    try:
        args = build_parser().parse_args(argv)
        observe.setup_logging(args.log_level)
        return COMMANDS[args.command](args)
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
