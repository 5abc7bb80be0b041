"""`status` and `fields`: what the warehouse says about past runs and custom-field columns."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import duckdb
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .exit_codes import ConfigError
from .history import RUNS_TABLE
from .output import Format, plain_value
from .warehouse import has_table, quote_identifier

SUCCESS = ("ok", "partial")  # per-entity statuses meaning "this entity's data is current"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """`30m`, `2h`, `1d`, `1h30m`, `90s`, `1w` → timedelta; ConfigError otherwise."""
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise ConfigError(
            f"--max-age {text!r} is not a duration: use a number and a unit, e.g. 30m, 2h, 1d"
        )
    seconds = sum(float(n) * _UNITS[u.lower()] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"--max-age {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_age(age: timedelta | None) -> str:
    """`45s`, `12m`, `3h 5m`, `2d 4h`; `never` for None."""
    if age is None:
        return "never"
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


@dataclass
class EntityStatus:
    entity: str
    last_success: datetime | None
    age: timedelta | None
    rows: int | None  # rows in the table now (None: no such table)
    deleted: int | None  # of which flagged is_deleted
    last_run: datetime | None
    last_status: str | None
    last_exit_code: int | None
    last_message: str | None
    stale: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "last_success": plain_value(self.last_success),
            "age_seconds": None if self.age is None else round(self.age.total_seconds()),
            "rows": self.rows,
            "deleted": self.deleted,
            "last_run": plain_value(self.last_run),
            "last_status": self.last_status,
            "last_exit_code": self.last_exit_code,
            "last_message": self.last_message,
            "stale": self.stale,
        }


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        from sources.pipedrive.convert import iso_datetime  # the one ISO time parser

        return iso_datetime(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _table_counts(
    connection: duckdb.DuckDBPyConnection, table: str
) -> tuple[int | None, int | None]:
    if not has_table(connection, table):
        return None, None
    quoted = quote_identifier(table)
    columns = {
        row[0]
        for row in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog ="
            " current_database() AND table_schema = current_schema() AND table_name = ?",
            [table],
        ).fetchall()
    }
    deleted = "count(*) FILTER (WHERE is_deleted)" if "is_deleted" in columns else "NULL"
    total, flagged = connection.execute(f"SELECT count(*), {deleted} FROM {quoted}").fetchone()  # type: ignore[misc]
    return int(total), None if flagged is None else int(flagged)


def read_status(
    connection: duckdb.DuckDBPyConnection,
    entities: list[str] | None = None,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> list[EntityStatus]:
    """Per entity: last successful sync, rows now, the latest run's outcome, staleness.

    `entities` defaults to those of the most recent recorded run.
    """
    if not has_table(connection, RUNS_TABLE):
        raise ConfigError(
            "no sync has been recorded in this warehouse yet: run `pipedrive-sync run` first"
        )
    runs = quote_identifier(RUNS_TABLE)
    now = now or datetime.now(UTC)
    if not entities:
        from sources.pipedrive.entities import ENTITIES

        order = {e.name: i for i, e in enumerate(ENTITIES)}
        latest = connection.execute(
            f"SELECT entity FROM {runs} WHERE run_id = (SELECT arg_max(run_id, finished_at)"
            f" FROM {runs})"
        ).fetchall()
        entities = sorted((row[0] for row in latest), key=lambda e: (order.get(e, len(order)), e))
    success = ", ".join(f"'{s}'" for s in SUCCESS)
    per_entity = {
        row[0]: row[1:]
        for row in connection.execute(
            f"SELECT entity, max(finished_at) FILTER (WHERE status IN ({success})),"
            " max(finished_at), arg_max(status, finished_at), arg_max(exit_code, finished_at),"
            f" arg_max(message, finished_at) FROM {runs} GROUP BY entity"
        ).fetchall()
    }
    result = []
    for entity in entities:
        last_success, last_run, status, code, message = per_entity.get(entity, (None,) * 5)
        last_success = _aware(last_success)
        age = now - last_success if last_success else None
        rows, deleted = _table_counts(connection, entity)
        result.append(
            EntityStatus(
                entity=entity,
                last_success=last_success,
                age=age,
                rows=rows,
                deleted=deleted,
                last_run=_aware(last_run),
                last_status=status,
                last_exit_code=None if code is None else int(code),
                last_message=message,
                stale=max_age is not None and (age is None or age > max_age),
            )
        )
    return result


def stale_line(rows: list[EntityStatus], max_age: timedelta | None) -> str | None:
    """One line naming the stale entities, or None when all are fresh."""
    stale = [r for r in rows if r.stale]
    if not stale or max_age is None:
        return None
    named = ", ".join(
        f"{r.entity} ({'never synced' if r.age is None else format_age(r.age) + ' ago'})"
        for r in stale
    )
    return f"stale (no successful sync within {format_age(max_age)}): {named}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def print_status(
    rows: list[EntityStatus],
    fmt: Format,
    out: TextIO,
    console: Console,
    path: Path,
    dataset: str,
) -> None:
    if fmt is Format.json:
        for row in rows:
            out.write(json.dumps(row.as_dict(), ensure_ascii=False) + "\n")
        return
    if fmt is Format.csv:
        import csv

        writer = csv.writer(out, lineterminator="\n")
        names = list(EntityStatus.__dataclass_fields__)
        writer.writerow(names)
        for row in rows:
            record = row.as_dict()
            writer.writerow(["" if record.get(n) is None else record.get(n) for n in names])
        return
    table = Table(show_edge=False, pad_edge=False, title_justify="left")
    for column in ("entity", "last success", "age", "rows", "deleted", "last run"):
        table.add_column(
            column, justify="right" if column in ("age", "rows", "deleted") else "left"
        )
    for row in rows:
        outcome = row.last_status or "-"
        if row.last_exit_code not in (None, 0):
            outcome += f" (exit {row.last_exit_code})"
        if row.last_message:
            outcome += f": {row.last_message}"
        age = Text(format_age(row.age), style="red" if row.stale else "")
        table.add_row(
            row.entity,
            _when(row.last_success),
            age,
            "-" if row.rows is None else f"{row.rows:,}",
            "-" if row.deleted is None else f"{row.deleted:,}",
            Text(f"{outcome} at {_when(row.last_run)}" if row.last_run else outcome),
        )
    console.print(f"{path} (dataset {dataset})", markup=False, highlight=False)
    console.print(table)


def custom_fields_cursor(
    connection: duckdb.DuckDBPyConnection,
    entity: str | None,
    include_inactive: bool = False,
    with_options: bool = False,
) -> duckdb.DuckDBPyConnection:
    """The `custom_fields` mapping, optionally for one entity (singular or plural name)."""
    from sources.pipedrive.entities import ENTITIES

    if not has_table(connection, "custom_fields"):
        raise ConfigError(
            "no custom-field mapping in this warehouse yet: sync an entity with custom fields"
            " (deals, persons, organizations, products, activities) first"
        )
    conditions: list[str] = []
    params: list[Any] = []
    if entity:
        by_name = {e.name: e.singular for e in ENTITIES if e.singular}
        by_name.update({e.singular: e.singular for e in ENTITIES if e.singular})
        singular = by_name.get(entity.strip().lower())
        if singular is None:
            raise ConfigError(
                f"--entity {entity!r}: no such entity with custom fields;"
                f" known: {', '.join(sorted(set(by_name.values())))}"
            )
        conditions.append("entity = ?")
        params.append(singular)
    if not include_inactive:
        conditions.append("coalesce(is_active, TRUE)")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    options = ", options" if with_options else ""
    return connection.execute(
        f"SELECT entity, column_name, field_name, field_type, is_active, field_key{options}"
        f" FROM custom_fields {where} ORDER BY entity, column_name",
        params,
    )
