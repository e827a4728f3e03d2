"""Time pruning: ``timestamp`` filters also become ``date``/``hour`` filters DuckDB prunes by.

DuckDB skips Hive partitions only for predicates on the partition columns. For a topic whose
event time is the record timestamp, every record of a file in hour H has a timestamp within
[H, H + 1 h), and records without a usable time are in the null partition (``date`` NULL).
So a top-level conjunct ``timestamp >= X`` implies
``date IS NULL OR (date, hour) >= (UTC date of X, UTC hour of X)``, and ``timestamp < X``
implies the same with ``<=`` and X minus one microsecond. Adding implied predicates to a
WHERE clause never changes a result; it only lets DuckDB skip the files of other hours.

Pure functions over the JSON syntax tree of DuckDB's ``json_serialize_sql``; the adapter
(eventvault.query.engine) parses and prints. Recognised forms: ``=``, ``<``, ``<=``, ``>``, ``>=``
(either side) and ``BETWEEN`` between a ``timestamp`` column and an expression without
columns, subqueries or parameters, in the WHERE clause of a SELECT whose FROM names archive
views. Anything else is left as written.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventvault.query.sql import quote_literal

Node = dict[str, Any]
Parse = Callable[[str], Node]  # one SELECT statement's SQL -> its "node"
Evaluate = Callable[[Node], "tuple[str, int] | None"]  # a constant SELECT node -> its one row

_LOWER = {"COMPARE_GREATERTHAN", "COMPARE_GREATERTHANOREQUALTO"}
_UPPER = {"COMPARE_LESSTHAN", "COMPARE_LESSTHANOREQUALTO"}
_FLIP = {"COMPARE_GREATERTHAN": "COMPARE_LESSTHAN", "COMPARE_LESSTHAN": "COMPARE_GREATERTHAN",
         "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
         "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
         "COMPARE_EQUAL": "COMPARE_EQUAL"}
_NOT_CONSTANT = {"COLUMN_REF", "SUBQUERY", "PARAMETER", "STAR", "LAMBDA", "WINDOW"}
_UTC = "timezone('UTC', {x})"
_HOUR = "(CAST({u} AS DATE), hour({u}))"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Views:
    """Archive views that time pruning applies to.

    ``kept`` maps a lower-case view name to the topics it spans whose event time is not the
    record timestamp; their files are never pruned by ``timestamp`` (only ``events`` spans
    several topics). A view absent from the map is not pruned at all.
    """

    kept: Mapping[str, tuple[str, ...]]


def views_for(topics: Sequence[str], record_time: Callable[[str], bool]) -> Views:
    """The prunable views of an archive holding ``topics``."""
    kept: dict[str, tuple[str, ...]] = {t.lower(): () for t in topics if record_time(t)}
    others = tuple(t for t in topics if not record_time(t))
    if len(others) < len(topics):
        kept["events"] = others
    return Views(kept)


def _walk(node: object) -> Iterator[Node]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _constant(node: Node) -> bool:
    return not any(n.get("class") in _NOT_CONSTANT for n in _walk(node))


def _conjuncts(where: Node) -> list[Node]:
    if where.get("type") == "CONJUNCTION_AND":
        return [c for child in where["children"] for c in _conjuncts(child)]
    return [where]


def _timestamp_of(node: Node, bindings: Mapping[str, str], alone: str | None) -> str | None:
    """The binding whose ``timestamp`` column ``node`` is, if it is one."""
    if node.get("class") != "COLUMN_REF":
        return None
    names = [n.lower() for n in node["column_names"]]
    if names == ["timestamp"]:
        return alone
    if len(names) == 2 and names[1] == "timestamp" and names[0] in bindings:
        return str(names[0])
    return None


def _bounds(conjunct: Node, bindings: Mapping[str, str],
            alone: str | None) -> Iterator[tuple[str, str, Node]]:
    """(binding, comparison type as ``column OP value``, value) for one conjunct."""
    if conjunct.get("class") == "BETWEEN":
        who = _timestamp_of(conjunct["input"], bindings, alone)
        if who and _constant(conjunct["lower"]) and _constant(conjunct["upper"]):
            yield who, "COMPARE_GREATERTHANOREQUALTO", conjunct["lower"]
            yield who, "COMPARE_LESSTHANOREQUALTO", conjunct["upper"]
        return
    kind = conjunct.get("type")
    if conjunct.get("class") != "COMPARISON" or kind not in _FLIP:
        return
    for column, value, op in ((conjunct["left"], conjunct["right"], kind),
                              (conjunct["right"], conjunct["left"], _FLIP[kind])):
        who = _timestamp_of(column, bindings, alone)
        if who and _constant(value):
            yield who, op, value


def _kept_sql(kept: tuple[str, ...]) -> str:
    """``q.topic IN (...)``: the topics whose files time bounds must not rule out."""
    return "q.topic IN (" + ", ".join(map(quote_literal, kept)) + ")"


def _template(op: str, kept: tuple[str, ...]) -> str:
    """The implied predicate for ``timestamp OP x`` over binding ``q``, as SQL."""
    x = "CAST(x AS TIMESTAMPTZ)"
    if op == "COMPARE_LESSTHAN":
        x += " - INTERVAL 1 MICROSECOND"
    hour = _HOUR.format(u=_UTC.format(x=x))
    parts = [_kept_sql(kept)] if kept else []
    parts.append("q.date IS NULL")
    if op in _LOWER or op == "COMPARE_EQUAL":
        parts.append(f"(q.date, q.hour) >= {hour}")
    if op in _UPPER or op == "COMPARE_EQUAL":
        parts.append(f"(q.date, q.hour) <= {hour}")
    if op == "COMPARE_EQUAL":
        parts[-2:] = [f"({parts[-2]} AND {parts[-1]})"]
    return "SELECT 1 WHERE " + " OR ".join(parts)


def _substitute(tree: Node, binding: str, value: Node | None) -> Node:
    """``tree`` with column ``x`` replaced by ``value`` and ``q.c`` by ``binding.c``."""
    for node in _walk(tree):
        if node.get("class") != "COLUMN_REF":
            continue
        names = node["column_names"]
        if names == ["x"] and value is not None:
            node.clear()
            node.update(copy.deepcopy(value))
        elif names[0] == "q":
            node["column_names"] = [binding, names[1]]
    return tree


def _implied(parse: Parse, op: str, kept: tuple[str, ...], binding: str, value: Node) -> Node:
    return _substitute(parse(_template(op, kept))["where_clause"], binding, value)


def _hour_of(parse: Parse, evaluate: Evaluate, op: str, value: Node) -> tuple[str, int] | None:
    x = "CAST(x AS TIMESTAMPTZ)" + (" - INTERVAL 1 MICROSECOND" if op == "COMPARE_LESSTHAN"
                                    else "")
    u = _UTC.format(x=x)
    return evaluate(_substitute(parse(f"SELECT CAST(CAST({u} AS DATE) AS VARCHAR), hour({u})"),
                                "", value))


def _closed_range(parse: Parse, evaluate: Evaluate, kept: tuple[str, ...], binding: str,
                  bounds: list[tuple[str, Node]]) -> Node | None:
    """Plain ``date``/``hour`` conjuncts for a range bounded on both sides (None: not one).

    With a lower bound from 1970 on and an upper bound before year 10000, no record of the
    null partition can match, and simple comparisons with literals let DuckDB prune at the
    lowest cost.
    """
    lows = [_hour_of(parse, evaluate, op, v) for op, v in bounds
            if op in _LOWER or op == "COMPARE_EQUAL"]
    highs = [_hour_of(parse, evaluate, op, v) for op, v in bounds
             if op in _UPPER or op == "COMPARE_EQUAL"]
    if not lows or not highs or None in lows or None in highs:
        return None
    lo, hi = max(h for h in lows if h), min(h for h in highs if h)
    if not (_ISO_DATE.match(lo[0]) and _ISO_DATE.match(hi[0]) and lo[0] >= "1970-01-01"):
        return None
    text = f"q.date BETWEEN DATE '{lo[0]}' AND DATE '{hi[0]}'"
    if lo[0] == hi[0]:
        text += f" AND q.hour BETWEEN {lo[1]} AND {hi[1]}"
    else:
        text += (f" AND (q.date > DATE '{lo[0]}' OR q.hour >= {lo[1]})"
                 f" AND (q.date < DATE '{hi[0]}' OR q.hour <= {hi[1]})")
    if kept:
        text = f"{_kept_sql(kept)} OR ({text})"
    return _substitute(parse(f"SELECT 1 WHERE {text}")["where_clause"], binding, None)


def _from_items(ref: Node) -> Iterator[Node]:
    if ref.get("type") == "JOIN":
        yield from _from_items(ref["left"])
        yield from _from_items(ref["right"])
    else:
        yield ref


def _bindings(select: Node, views: Views, ctes: set[str]) -> tuple[dict[str, str], int]:
    """Archive-view bindings (lower-case name -> view) of a SELECT, and its FROM item count."""
    items = list(_from_items(select.get("from_table") or {}))
    out = {}
    for item in items:
        table = str(item.get("table_name", "")).lower()
        if (item.get("type") == "BASE_TABLE" and not item.get("schema_name")
                and not item.get("catalog_name") and table in views.kept
                and table not in ctes):
            out[(item.get("alias") or item["table_name"]).lower()] = table
    return out, len(items)


def _prune_select(select: Node, views: Views, ctes: set[str], parse: Parse,
                  evaluate: Evaluate) -> bool:
    where = select.get("where_clause")
    bindings, count = _bindings(select, views, ctes)
    if not where or not bindings:
        return False
    alone = next(iter(bindings)) if count == 1 and len(bindings) == 1 else None
    found: dict[str, list[tuple[str, Node]]] = {}
    for conjunct in _conjuncts(where):
        for who, op, value in _bounds(conjunct, bindings, alone):
            found.setdefault(who, []).append((op, value))
    added = []
    for who, bounds in found.items():
        kept = views.kept[bindings[who]]
        closed = _closed_range(parse, evaluate, kept, who, bounds)
        added += [closed] if closed else [_implied(parse, op, kept, who, value)
                                          for op, value in bounds]
    if not added:
        return False
    select["where_clause"] = {"class": "CONJUNCTION", "type": "CONJUNCTION_AND", "alias": "",
                              "query_location": where.get("query_location", 0),
                              "children": [where, *added]}
    return True


def prune(statement: Node, views: Views, parse: Parse, evaluate: Evaluate) -> bool:
    """Add implied ``date``/``hour`` predicates throughout one parsed statement, in place.

    Returns whether anything was added.
    """
    ctes = {str(entry["key"]).lower() for node in _walk(statement)
            for entry in (node.get("cte_map") or {}).get("map", [])}
    selects = [n for n in _walk(statement) if n.get("type") == "SELECT_NODE"]
    changed = [_prune_select(s, views, ctes, parse, evaluate) for s in selects]
    return any(changed)
