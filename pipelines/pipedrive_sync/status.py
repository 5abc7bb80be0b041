"""`status` and `fields`: what the warehouse says about past runs and custom-field columns."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .exit_codes import ConfigError
from .history import RUNS_TABLE
from .output import Format, plain_value
from .warehouse import Reader

if TYPE_CHECKING:
    from .settings import RunSettings

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
class Cadence:
    """Something a run does only now and then: when it last happened and is due next."""

    what: str  # e.g. "archived list (deals_archived)", "id reconciliation", "field definitions"
    last: datetime | None
    next: datetime | None  # None: not scheduled (never ran and no clock started yet)

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "last": plain_value(self.last), "next": plain_value(self.next)}


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
    tokens_last_run: int | None = None  # API tokens the entity's latest run spent
    cadences: list[Cadence] = field(default_factory=list)

    @property
    def next_due(self) -> datetime | None:
        dates = [c.next for c in self.cadences if c.next is not None]
        return min(dates) if dates else None

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
            "tokens_last_run": self.tokens_last_run,
            "next_due": plain_value(self.next_due),
            "cadences": [c.as_dict() for c in self.cadences],
        }


CSV_FIELDS = (
    "entity",
    "last_success",
    "age_seconds",
    "rows",
    "deleted",
    "last_run",
    "last_status",
    "last_exit_code",
    "last_message",
    "stale",
    "tokens_last_run",
    "next_due",
)


def _aware(value: Any) -> datetime | None:
    from sources.pipedrive.convert import aware_datetime  # the one ISO time parser

    return aware_datetime(value)


def _table_counts(reader: Reader, table: str, columns: set[str]) -> tuple[int, int | None]:
    deleted = "count(CASE WHEN is_deleted THEN 1 END)" if "is_deleted" in columns else "NULL"
    total, flagged = reader.rows(f"SELECT count(*), {deleted} FROM {reader.table(table)}")[0]
    return int(total), None if flagged is None else int(flagged)


def check_entities(names: list[str]) -> list[str]:
    """`status --entities`: every name must be an entity this tool syncs (else exit 78)."""
    from sources.pipedrive.entities import ENTITY_BY_NAME

    unknown = [n for n in names if n not in ENTITY_BY_NAME]
    if unknown:
        raise ConfigError(
            f"--entities: unknown {', '.join(unknown)}; known: {', '.join(ENTITY_BY_NAME)}"
        )
    return list(dict.fromkeys(names))


@dataclass
class _Runs:
    """What `sync_runs` says per entity."""

    last_success: dict[str, datetime] = field(default_factory=dict)
    first_run: dict[str, datetime] = field(default_factory=dict)
    last_reconciled: dict[str, datetime] = field(default_factory=dict)
    latest: dict[str, tuple[Any, ...]] = field(
        default_factory=dict
    )  # run, status, code, msg, tokens


def _read_runs(reader: Reader) -> _Runs:
    runs = reader.table(RUNS_TABLE)
    success = ", ".join(reader.literal(s) for s in SUCCESS)
    result = _Runs()
    for entity, succeeded, first, reconciled in reader.rows(
        f"SELECT entity, max(CASE WHEN status IN ({success}) THEN finished_at END),"
        " min(started_at), max(CASE WHEN reconciled THEN finished_at END)"
        f" FROM {runs} GROUP BY entity"
    ):
        for target, value in (
            (result.last_success, succeeded),
            (result.first_run, first),
            (result.last_reconciled, reconciled),
        ):
            if value is not None:
                target[entity] = _aware(value)  # type: ignore[assignment]
    for entity, finished, status, code, message, tokens in reader.rows(
        f"SELECT r.entity, r.finished_at, r.status, r.exit_code, r.message, r.tokens FROM {runs} r"
        f" JOIN (SELECT entity, max(finished_at) AS last FROM {runs} GROUP BY entity) l"
        " ON r.entity = l.entity AND r.finished_at = l.last"
    ):
        result.latest[entity] = (_aware(finished), status, code, message, tokens)
    return result


def synced_entities(reader: Reader, runs: _Runs, tables: dict[str, set[str]]) -> list[str]:
    """Every entity ever synced into the warehouse: recorded in `sync_runs`, or with a table."""
    from sources.pipedrive.entities import ENTITIES

    return [e.name for e in ENTITIES if e.name in runs.latest or e.name in tables]


def read_status(
    reader: Reader,
    entities: list[str] | None = None,
    max_age: timedelta | None = None,
    now: datetime | None = None,
    settings: RunSettings | None = None,
) -> list[EntityStatus]:
    """Per entity: last successful sync, rows now, the latest run's outcome, staleness, and
    when its cadences ran and are due.

    `entities` defaults to every entity ever synced into the warehouse. An entity without any
    successful run is stale, whatever `max_age`; with `max_age`, so is one whose last
    success is older.
    """
    from sources.pipedrive.entities import ENTITIES

    candidates = [e.name for e in ENTITIES]
    tables = reader.columns([RUNS_TABLE, *candidates])
    if RUNS_TABLE not in tables and not (set(tables) & set(candidates)):
        raise ConfigError(
            "no sync has been recorded in this warehouse yet: run `pipedrive-sync run` first"
        )
    runs = _read_runs(reader) if RUNS_TABLE in tables else _Runs()
    now = now or datetime.now(UTC)
    wanted = entities or synced_entities(reader, runs, tables)
    cadences = read_cadences(reader, runs, settings) if settings is not None else {}
    result = []
    for entity in wanted:
        last_success = runs.last_success.get(entity)
        age = now - last_success if last_success else None
        rows, deleted = (
            _table_counts(reader, entity, tables[entity]) if entity in tables else (None, None)
        )
        last_run, status, code, message, tokens = runs.latest.get(entity, (None,) * 5)
        result.append(
            EntityStatus(
                entity=entity,
                last_success=last_success,
                age=age,
                rows=rows,
                deleted=deleted,
                last_run=last_run,
                last_status=status,
                last_exit_code=None if code is None else int(code),
                last_message=message,
                stale=age is None or (max_age is not None and age > max_age),
                tokens_last_run=None if tokens is None else int(tokens),
                cadences=cadences.get(entity, []),
            )
        )
    return result


def _committed_state(reader: Reader) -> dict[str, Any]:
    """The source state the warehouse committed last (cursors, cadence times)."""
    from sources.pipedrive.dlt_adapter import STATE_TABLE, decode_state
    from sources.pipedrive.sync_state import source_state

    if STATE_TABLE not in reader.columns([STATE_TABLE]):
        return {}
    rows = reader.rows(
        f"SELECT state FROM {reader.table(STATE_TABLE)} ORDER BY created_at DESC LIMIT 1"
    )
    if not rows:
        return {}
    state = decode_state(rows[0][0])
    return source_state(state)


def read_cadences(reader: Reader, runs: _Runs, settings: RunSettings) -> dict[str, list[Cadence]]:
    """entity → its cadences: slow lists, id reconciliation, field definitions."""
    from sources.pipedrive.entities import ENTITIES, Strategy
    from sources.pipedrive.sync_state import committed_field_states, committed_stream

    state = _committed_state(reader)
    fields = dict(committed_field_states(state))
    options = settings.options
    result: dict[str, list[Cadence]] = {}
    for entity in ENTITIES:
        found: list[Cadence] = []
        for stream in entity.streams:
            interval = options.refresh_interval(entity.name, stream.refresh_every)
            if stream.refresh_every is None or interval is None:
                continue
            last = committed_stream(state, entity.name, stream.key).read_at
            main = stream.key == entity.name or len(entity.streams) == 1
            label = "list" if main else f"list {stream.key}"
            found.append(Cadence(label, last, last + interval if last else None))
        if entity.strategy is Strategy.UPDATED_SINCE and entity.name in runs.first_run:
            last = runs.last_reconciled.get(entity.name)
            start = last or runs.first_run[entity.name]
            found.append(Cadence("id reconciliation", last, start + settings.reconcile_interval))
        entry = fields.get(entity.singular) if entity.has_custom_fields else None
        fetched = entry.fetched_at if entry else None
        if fetched is not None:
            found.append(Cadence("field definitions", fetched, fetched + options.fields_refresh))
        result[entity.name] = found
    return result


def stale_line(rows: list[EntityStatus], max_age: timedelta | None) -> str | None:
    """One line naming the stale entities, or None when all are fresh."""
    stale = [r for r in rows if r.stale]
    if not stale:
        return None
    named = ", ".join(
        f"{r.entity} ({'no successful sync yet' if r.age is None else format_age(r.age) + ' ago'})"
        for r in stale
    )
    within = f" within {format_age(max_age)}" if max_age is not None else ""
    return f"stale (no successful sync{within}): {named}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_status(
    rows: list[EntityStatus],
    fmt: Format,
    out: TextIO,
    console: Console,
    where: str,
    metrics: Any = None,
) -> None:
    if fmt is Format.json:
        for row in rows:
            out.write(json.dumps(row.as_dict(), ensure_ascii=False) + "\n")
        return
    if fmt is Format.csv:
        import csv

        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for row in rows:
            record = row.as_dict()
            writer.writerow([_csv_value(record[name]) for name in CSV_FIELDS])
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
    console.print(where, markup=False, highlight=False)
    console.print(table)
    _print_cadences(rows, console)


def _print_cadences(rows: list[EntityStatus], console: Console) -> None:
    scheduled = [(row.entity, c) for row in rows for c in row.cadences]
    if not scheduled:
        return
    table = Table(show_edge=False, pad_edge=False, title="Cadences", title_justify="left")
    for column in ("entity", "what", "last", "next"):
        table.add_column(column)
    for entity, cadence in scheduled:
        table.add_row(
            entity,
            cadence.what,
            _when(cadence.last),
            _when(cadence.next) if cadence.next else "next run",
        )
    console.print()
    console.print(table)


def custom_fields_sql(
    reader: Reader,
    entity: str | None,
    include_inactive: bool = False,
    with_options: bool = False,
) -> str:
    """SQL of the `custom_fields` mapping, optionally for one entity (singular or plural)."""
    from sources.pipedrive.entities import ENTITIES

    if "custom_fields" not in reader.columns(["custom_fields"]):
        raise ConfigError(
            "no custom-field mapping in this warehouse yet: sync an entity with custom fields"
            " (deals, persons, organizations, products, activities) first"
        )
    conditions: list[str] = []
    if entity:
        by_name = {e.name: e.singular for e in ENTITIES if e.singular}
        by_name.update({e.singular: e.singular for e in ENTITIES if e.singular})
        singular = by_name.get(entity.strip().lower())
        if singular is None:
            raise ConfigError(
                f"--entity {entity!r}: no such entity with custom fields;"
                f" known: {', '.join(sorted(set(by_name.values())))}"
            )
        conditions.append(f"entity = {reader.literal(singular)}")
    if not include_inactive:
        conditions.append("coalesce(is_active, TRUE)")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    options = ", options" if with_options else ""
    return (
        f"SELECT entity, column_name, field_name, field_type, is_active, field_key{options}"
        f" FROM {reader.table('custom_fields')}{where} ORDER BY entity, column_name"
    )


def tokens_today(reader: Reader, now: datetime | None = None) -> int | None:
    """API tokens the runs recorded since 00:00 UTC spent (None: nothing recorded)."""
    if RUNS_TABLE not in reader.columns([RUNS_TABLE]):
        return None
    midnight = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    since = reader.literal(midnight.strftime("%Y-%m-%d %H:%M:%S+00:00"))
    rows = reader.rows(
        f"SELECT sum(tokens) FROM {reader.table(RUNS_TABLE)}"
        f" WHERE finished_at >= CAST({since} AS TIMESTAMP WITH TIME ZONE)"
    )
    total = rows[0][0] if rows else None
    return int(total or 0)
