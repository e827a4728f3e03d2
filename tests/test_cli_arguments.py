"""Argument errors are exit 2 in every command; exit codes, options, defaults and where settings
come from are documented (README, --help)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from eventvault.cli import COMMANDS, build_parser
from tests.cliutil import run_cli
from tests.kafkautil import REPO

ARGUMENT_ERRORS = [
    ([], "the following arguments are required: command"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["--log-level", "LOUD", "query", "select 1"], "argument --log-level"),
    (["--config", "/nonexistent.toml", "query", "select 1"], "--config"),
    (["query"], "give the SQL to run"),
    (["query", "--format", "xml", "select 1"], "argument --format"),
    (["query", "--format", "parquet", "select 1"], "--format parquet needs --output"),
    (["query", "--output", "/nonexistent/out.csv", "--format", "csv", "select 1"],
     "argument --output"),
    (["query", "--output", "/", "select 1"], "argument --output: / is a directory"),
    (["show"], "the following arguments are required: topic"),
    (["show", "t", "--partition", "x"], "argument --partition"),
    (["show", "t", "--limit", "-1"], "argument --limit: want a whole number, 1 or more"),
    (["show", "t", "--limit", "0"], "argument --limit: want a whole number, 1 or more"),
    (["show", "t", "--start", "yesterday"], "argument --start"),
    (["replay"], "replay needs --topic and --target"),
    (["replay", "--topic", "a"], "replay needs --topic and --target"),
    (["replay", "--topic", "a", "--target", "b", "--partition-map", "0:1"], "--partition-map"),
    (["replay", "--resume", "X", "--topic", "a"], "drop --topic"),
    (["replay", "--topic", "a", "--target", "b", "--from-offset", "x"], "--from-offset"),
    (["replay", "--topic", "a", "--target", "b", "--partitioning", "random"],
     "argument --partitioning"),
    (["erase", "--request-id", "r"], "--request-id and --subject go together"),
    (["erase", "--requests", "/nonexistent.json"], "--requests"),
    (["retention", "--bogus"], "unrecognized arguments: --bogus"),
    (["archive", "--metrics-port", "x"], "argument --metrics-port"),
    (["archive", "--once", "--output", "yaml"], "argument --output"),
]


@pytest.mark.parametrize(("args", "needle"), ARGUMENT_ERRORS,
                         ids=[" ".join(a) or "nothing" for a, _ in ARGUMENT_ERRORS])
def test_argument_errors_are_one_line_exit_2(tmp_path: Path, args: list[str],
                                             needle: str) -> None:
    res = run_cli(*args, env={"EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/archive"},
                  cwd=tmp_path, timeout=60)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("eventvault: error: "), res.stderr
    assert needle in lines[0]
    assert res.stdout == ""
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_readme_lists_every_commands_exit_codes() -> None:
    readme = (REPO / "README.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| ([\d, ]+) \|$", readme, re.MULTILINE))
    assert set(table) == set(COMMANDS)
    for command, codes in table.items():
        listed = {int(code) for code in codes.split(",")}
        assert {0, 1, 2, 3} <= listed, command  # any command can meet these
    assert {6, 7} <= {int(c) for c in table["replay"].split(",")}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {"eventvault": top, **sub.choices}


def test_every_parser_is_in_the_help() -> None:
    assert set(_parsers()) == {"eventvault", *COMMANDS}


@pytest.mark.parametrize("name", ["eventvault", *COMMANDS])
def test_help_describes_every_option_and_its_default(name: str) -> None:
    parser = _parsers()[name]
    text = " ".join(parser.format_help().split())  # argparse wraps lines anywhere
    assert parser.description, f"{name} has no description"
    for where in ("EVENTVAULT_CONFIG", "./eventvault.toml", "EVENTVAULT_<SECTION>__<KEY>",
                  "two underscores", "exit codes"):
        assert where in text, f"{name}'s help does not say {where}"
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help, f"{name} {label} has no help"
        default = action.default
        if action.required or "default" in action.help or "required" in action.help:
            continue  # a positional, or said in words
        assert default is not None, f"{name} {label}: the help says nothing of its default"
        shown = {False: "off", (): "none"}.get(default if default not in ([],) else (),
                                                default)
        assert f"default: {shown}" in text, f"{name} {label}: default {default!r} not shown"
