"""Printing result sets: a rich table for people, CSV or JSON lines for other programs."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TextIO
from uuid import UUID

from rich.console import Console
from rich.table import Table
from rich.text import Text

FETCH_BATCH = 1000


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def unique_names(names: Sequence[str]) -> list[str]:
    """Column names made unique (`id`, `id_2`, …) so JSON objects keep every column."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        result.append(name if count == 1 else f"{name}_{count}")
    return result


def plain_value(value: Any) -> Any:
    """A JSON-serializable version of a database value (times as ISO 8601, UTC offset kept)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain_value(v) for v in value]
    return str(value)


def text_value(value: Any) -> str:
    """How a value reads in a table cell or a CSV field (NULL is empty in CSV)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list | tuple):
        return json.dumps(plain_value(value), ensure_ascii=False)
    plain = plain_value(value)
    return plain if isinstance(plain, str) else str(plain)


def _batches(cursor: Any) -> Iterator[Sequence[Any]]:
    while True:
        rows = cursor.fetchmany(FETCH_BATCH)
        if not rows:
            return
        yield from rows


def _json_columns(description: Sequence[Any]) -> set[int]:
    """Positions of JSON-typed columns (DuckDB hands their values over as text)."""
    return {i for i, column in enumerate(description) if str(column[1]).upper() == "JSON"}


def write_csv(names: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    count = 0
    for row in rows:
        writer.writerow([text_value(v) for v in row])
        count += 1
    return count


def write_json_lines(
    names: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO, json_columns: set[int]
) -> int:
    keys = unique_names(names)
    count = 0
    for row in rows:
        record = {}
        for i, (key, value) in enumerate(zip(keys, row, strict=True)):
            if i in json_columns and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            record[key] = plain_value(value)
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def rich_table(
    names: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int] | None = None
) -> Table:
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    numeric = numeric or set()
    for i, name in enumerate(names):
        table.add_column(name, justify="right" if i in numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(
            *(Text("NULL", style="dim") if v is None else Text(text_value(v)) for v in row)
        )
    return table


def _too_wide(names: Sequence[str], width: int) -> bool:
    """Would a table squeeze its columns below their names' width? (then print records)."""
    return sum(max(len(name), 4) + 3 for name in names) > width


def print_records(names: Sequence[str], rows: Iterable[Sequence[Any]], console: Console) -> None:
    """One block per row, one `column  value` line per column (like psql's expanded mode)."""
    width = max((len(n) for n in names), default=0)
    for number, row in enumerate(rows, start=1):
        console.print(Text(f"-[ row {number} ]" + "-" * max(0, width - 6), style="dim"))
        for name, value in zip(names, row, strict=True):
            line = Text(name.ljust(width) + "  ", style="bold")
            line.append(
                "NULL" if value is None else text_value(value), style="dim" if value is None else ""
            )
            console.print(line, soft_wrap=True)


def _numeric_columns(description: Sequence[Any]) -> set[int]:
    numeric = ("INT", "DOUBLE", "FLOAT", "DECIMAL", "NUMERIC", "REAL")
    nested = ("[", "STRUCT", "MAP", "UNION")
    types = [str(c[1]).upper() for c in description]
    return {
        i
        for i, t in enumerate(types)
        if any(n in t for n in numeric) and not any(n in t for n in nested)
    }


def print_cursor(
    cursor: Any,
    fmt: Format,
    out: TextIO,
    console: Console,
    max_rows: int | None = None,
) -> int:
    """Print a DB-API cursor's result in `fmt`; returns the rows printed.

    A statement without a result (SET, CREATE…) prints nothing. `max_rows` limits the table
    format only (CSV and JSON stream every row); a note says how many more there were.
    """
    description = cursor.description
    if not description:
        return 0
    names = [c[0] for c in description]
    if fmt is Format.csv:
        return write_csv(names, _batches(cursor), out)
    if fmt is Format.json:
        return write_json_lines(names, _batches(cursor), out, _json_columns(description))
    limit = max_rows if max_rows and max_rows > 0 else None
    rows = cursor.fetchmany(limit + 1) if limit else cursor.fetchall()
    more = 0
    if limit and len(rows) > limit:
        rows = rows[:limit]
        more = sum(1 for _ in _batches(cursor)) + 1
    if _too_wide(names, console.width):
        print_records(names, rows, console)
    else:
        console.print(rich_table(names, rows, _numeric_columns(description)))
    summary = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
    if more:
        summary += f" shown, {more} more (use --max-rows, or --format csv|json for all)"
    console.print(summary, style="dim")
    return len(rows)
