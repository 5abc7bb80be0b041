"""`deal_history`: one row per version of a deal, observed by the sync or read back from its
changelog (`--backfill-history`).

How it grows, crash-safe and idempotent:

1. **In the load.** Every deal row a run loads also becomes a *candidate version* in
   `deal_history` (a table variant of the deals resource, in the same package): the tracked
   columns (`TRACKED`, plus the custom fields of `CUSTOM_TYPES`), keyed by `deal_id` and
   `valid_from` = the deal's `update_time` (when Pipedrive recorded that state), with
   `valid_to` null. dlt merges on that key, so a row read again (a boundary row, a retried
   chunk) is the same candidate; a first sync appends them with the deals into an empty
   table while every deal id is new (the runner repairs a re-run append job on that key).
2. **After the load** (`close_versions`, in one transaction): for every deal with more than one
   open row, candidates whose tracked values equal the version before them are dropped (the
   deal changed elsewhere: a title, a note count), and `valid_to` is set to the next version's
   `valid_from`. A run killed in between leaves open rows that the next run closes.

Older history comes from `/v1/deals/{id}/changelog` (`changelog_versions`): walking the
changes back from the deal's current values gives the value of every tracked standard field
before each change; those versions are candidates like the observed ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.destination.exceptions import DestinationUndefinedEntity

from .convert import iso_datetime_or_none
from .custom_fields import ColumnPlan
from .dlt_adapter import cursor_columns

HISTORY_TABLE = "deal_history"
KEY = ("deal_id", "valid_from")
# standard deal columns whose changes make a new version (and the times that describe it)
TRACKED: tuple[str, ...] = (
    "pipeline_id",
    "stage_id",
    "status",
    "value",
    "currency",
    "owner_id",
    "expected_close_date",
    "probability",
    "lost_reason",
    "is_deleted",
    "is_archived",
    "add_time",
    "stage_change_time",
    "close_time",
    "won_time",
    "lost_time",
)
# custom fields kept in the history: the ones deals are segmented and valued by (not free text;
# not multiple options either: a JSON column, which dlt's parquet loads into PostgreSQL cannot
# write into a table variant)
CUSTOM_TYPES = frozenset({"enum", "monetary", "double", "int", "user", "date"})
RECORDED_FROM = "recorded_from"  # 'sync' (observed) or 'changelog' (backfilled)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def tracked_custom_columns(plan: ColumnPlan | None) -> list[str]:
    """Output columns of the active custom fields the history keeps."""
    if plan is None:
        return []
    return [
        output.name
        for fp in plan.fields
        if fp.field.is_active and fp.field.field_type in CUSTOM_TYPES
        for output in fp.outputs
    ]


def column_hints(deal_hints: Mapping[str, Mapping[str, Any]], custom: Sequence[str]) -> list[Any]:
    """dlt column hints of the history table: its keys, then the deal columns it keeps."""
    hints: list[Any] = [
        {"name": "deal_id", "data_type": "bigint", "nullable": False},
        {"name": "valid_from", "data_type": "timestamp", "nullable": False},
        {"name": "valid_to", "data_type": "timestamp", "nullable": True},
        {"name": RECORDED_FROM, "data_type": "text", "nullable": True},
    ]
    for name in (*TRACKED, *custom):
        hint = deal_hints.get(name)
        if hint and hint.get("data_type"):
            hints.append({"name": name, "data_type": hint["data_type"], "nullable": True})
    return hints


def candidates(deals: pa.Table, custom: Sequence[str], recorded_from: str = "sync") -> pa.Table:
    """The candidate versions of a batch of deal rows (see the module docstring)."""
    if "id" not in deals.column_names or "update_time" not in deals.column_names:
        return pa.table({})
    keep = pc.and_(pc.is_valid(deals["id"]), pc.is_valid(deals["update_time"]))
    rows = deals.filter(keep)
    columns: dict[str, Any] = {
        "deal_id": rows["id"],
        "valid_from": rows["update_time"],
        "valid_to": pa.nulls(rows.num_rows, rows["update_time"].type),
        RECORDED_FROM: pa.array([recorded_from] * rows.num_rows, pa.string()),
    }
    for name in (*TRACKED, *custom):
        if name in rows.column_names and name not in columns:
            columns[name] = rows[name]
    return pa.table(columns)


# -- after the load -----------------------------------------------------------------------------
BOOKKEEPING = frozenset({*KEY, "valid_to", RECORDED_FROM, "_dlt_load_id", "_dlt_id"})
DIRTY_TABLE = "_deal_history_dirty"


def _cast_text(client: Any, expression: str) -> str:
    dialect = str(getattr(client.capabilities, "sqlglot_dialect", "") or "").lower()
    if dialect in ("postgres", "redshift"):
        return f"({expression})::text"
    return f"CAST({expression} AS VARCHAR)"


def _history_columns(client: Any) -> list[str] | None:
    """The history table's columns, or None when it does not exist yet."""
    try:
        with client.execute_query(
            f"SELECT * FROM {client.make_qualified_table_name(HISTORY_TABLE)} WHERE 1 = 0"
        ) as cursor:
            return cursor_columns(cursor)
    except DestinationUndefinedEntity:
        return None


def compared_columns(columns: Sequence[str], retired: Iterable[str] = ()) -> list[str]:
    """The columns whose change makes a new version: all but keys, bookkeeping and the
    columns of custom fields deleted in Pipedrive (no longer sent: their nulls are no change)."""
    skip = BOOKKEEPING | set(retired)
    return [c for c in columns if c not in skip and not c.endswith("__v_text")]


def close_versions(pipeline: Any, retired: Iterable[str] = ()) -> int:
    """Drop repeated candidates and close every superseded version; returns the deals fixed."""
    with pipeline.sql_client() as client:
        columns = _history_columns(client)
        if columns is None:
            return 0
        table = client.make_qualified_table_name(HISTORY_TABLE)
        dirty = client.make_qualified_table_name(DIRTY_TABLE)
        e = client.escape_column_name
        deal, start, end = e("deal_id"), e("valid_from"), e("valid_to")
        compared = compared_columns(columns, retired)
        window = f"(PARTITION BY {deal} ORDER BY {start})"
        same = " AND ".join(
            f"x.{e('p_' + str(n))} IS NOT DISTINCT FROM x.{e('c_' + str(n))}"
            for n in range(len(compared))
        )
        pairs = ", ".join(
            f"LAG({_cast_text(client, e(c))}) OVER {window} AS {e(f'p_{n}')},"
            f" {_cast_text(client, e(c))} AS {e(f'c_{n}')}"
            for n, c in enumerate(compared)
        )
        with client.begin_transaction():
            client.execute_sql(f"DROP TABLE IF EXISTS {dirty}")
            client.execute_sql(
                f"CREATE TABLE {dirty} AS SELECT {deal} FROM {table} WHERE {end} IS NULL"
                f" GROUP BY {deal} HAVING count(*) > 1"
            )
            found = client.execute_sql(f"SELECT count(*) FROM {dirty}")
            fixed = int(found[0][0]) if found else 0
            if fixed:
                if compared:
                    client.execute_sql(
                        f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM (SELECT {deal}, {start},"
                        f" ROW_NUMBER() OVER {window} AS {e('rn')}, {pairs} FROM {table}"
                        f" WHERE {deal} IN (SELECT {deal} FROM {dirty})) AS x"
                        f" WHERE x.{e('rn')} > 1 AND {same} AND x.{deal} = {table}.{deal}"
                        f" AND x.{start} = {table}.{start})"
                    )
                client.execute_sql(
                    f"UPDATE {table} SET {end} = n.{e('next_from')} FROM (SELECT {deal}, {start},"
                    f" LEAD({start}) OVER {window} AS {e('next_from')} FROM {table}"
                    f" WHERE {deal} IN (SELECT {deal} FROM {dirty})) AS n"
                    f" WHERE {table}.{deal} = n.{deal} AND {table}.{start} = n.{start}"
                    f" AND {table}.{end} IS DISTINCT FROM n.{e('next_from')}"
                )
            client.execute_sql(f"DROP TABLE {dirty}")
        return fixed


def record_flagged_deletions(pipeline: Any, now: datetime | None = None) -> int:
    """A new version (at `now`) for each deal the warehouse itself flagged deleted or removed
    after the load (id reconciliation), whose current version still says otherwise."""
    now = now or datetime.now(UTC)
    with pipeline.sql_client() as client:
        columns = _history_columns(client)
        if columns is None or "is_deleted" not in columns:
            return 0
        table = client.make_qualified_table_name(HISTORY_TABLE)
        deals = client.make_qualified_table_name("deals")
        e = client.escape_column_name
        kept = [c for c in columns if c not in BOOKKEEPING and c != "is_deleted"]
        listed = ", ".join(e(c) for c in kept)
        from_current = ", ".join(f"h.{e(c)}" for c in kept)
        current = f"h.{e('valid_to')} IS NULL AND h.{e('is_deleted')} IS NOT TRUE"
        with client.begin_transaction():
            client.execute_sql(
                f"INSERT INTO {table} ({e('deal_id')}, {e('valid_from')}, {e(RECORDED_FROM)},"
                f" {e('is_deleted')}{', ' + listed if listed else ''})"
                f" SELECT h.{e('deal_id')}, %s, 'sync', TRUE{', ' + from_current if kept else ''}"
                f" FROM {table} h LEFT JOIN {deals} d ON d.{e('id')} = h.{e('deal_id')}"
                f" WHERE {current} AND h.{e('valid_from')} < %s"
                f" AND (d.{e('id')} IS NULL OR d.{e('is_deleted')} IS TRUE)",
                now,
                now,
            )
            added = client.execute_sql(
                f"SELECT count(*) FROM {table} WHERE {e('valid_from')} = %s"
                f" AND {e('is_deleted')} IS TRUE AND {e('valid_to')} IS NULL",
                now,
            )
        count = int(added[0][0]) if added else 0
    if count:
        close_versions(pipeline)
    return count


# -- older history from the changelog --------------------------------------------------------------
# changelog field keys of tracked standard columns (the v1 changelog names a deal's owner user_id)
CHANGELOG_KEYS: Mapping[str, str] = {
    "user_id": "owner_id",
    **{name: name for name in TRACKED if name not in ("add_time", "is_archived")},
}
_CLOSE_TIMES = ("close_time", "won_time", "lost_time")


@dataclass(frozen=True)
class CustomColumn:
    """How a custom field's changelog values become its column's values."""

    column: str
    data_type: str
    labels: Mapping[str, str]  # option id → label (enum)
    field_type: str


@dataclass(frozen=True)
class Change:
    """One changelog entry of a tracked column, its old value in the column's type."""

    time: datetime
    column: str
    old: Any
    text: str | None  # the old value as the changelog wrote it


def parse_changes(
    entries: Iterable[Mapping[str, Any]],
    types: Mapping[str, str],
    custom: Mapping[str, CustomColumn] | None = None,
) -> list[Change]:
    """The tracked-column changes of changelog entries, oldest first."""
    changes = []
    for entry in entries:
        key = str(entry.get("field_key") or "")
        when = iso_datetime_or_none(entry.get("time"))
        if when is None:
            continue
        old = entry.get("old_value")
        text = None if old is None else str(old)
        if key in CHANGELOG_KEYS:
            column = CHANGELOG_KEYS[key]
            changes.append(Change(when, column, _typed(types.get(column, "text"), text), text))
        elif custom and key in custom:
            target = custom[key]
            changes.append(Change(when, target.column, _custom_value(target, text), text))
    changes.sort(key=lambda c: c.time)
    return changes


def _typed(kind: str, text: str | None) -> Any:
    """A changelog text value in a dlt type (None when it does not parse)."""
    if text is None or text == "":
        return None
    try:
        if kind == "bigint":
            return int(float(text))
        if kind == "double":
            return float(text)
        if kind == "bool":
            return text.strip().lower() in ("true", "1", "yes")
        if kind == "date":
            return date.fromisoformat(text.strip()[:10])
        if kind == "timestamp":
            return iso_datetime_or_none(text)
    except ValueError:
        return None
    return text


def _custom_value(target: CustomColumn, text: str | None) -> Any:
    """A custom field's changelog value as its column holds it: option ids become labels."""
    if text is None or text == "":
        return None
    if target.field_type == "enum":
        return target.labels.get(text.strip(), text)
    return _typed(target.data_type, text)


def changelog_versions(
    current: Mapping[str, Any],
    entries: Iterable[Mapping[str, Any]],
    types: Mapping[str, str],
    custom: Mapping[str, CustomColumn] | None = None,
) -> list[dict[str, Any]]:
    """The versions of a deal, oldest first, walked back from its `current` row (`id` and its
    tracked columns) through its changelog `entries`.

    The first version starts at the deal's `add_time`, each later one at a change's time (the
    state after every change of that instant). The last one carries the current values; the
    observed version at `update_time` repeats it and is dropped by `close_versions`. Times the
    changelog does not tell (when the stage changed before, when it closed) are left null.
    """
    changes = parse_changes(entries, types, custom)
    if not changes:
        return []
    by_time: dict[datetime, list[Change]] = {}
    for change in changes:
        by_time.setdefault(change.time, []).append(change)
    state = {name: value for name, value in current.items() if name != "id"}
    versions: list[dict[str, Any]] = []
    for when in sorted(by_time, reverse=True):
        versions.append({"valid_from": when, **state})
        group = by_time[when]
        for change in reversed(group):
            state[change.column] = change.old
        undone = {change.column for change in group}
        if "stage_id" in undone and "stage_change_time" not in undone:
            state["stage_change_time"] = None  # when it entered the stage before: unknown
        if "status" in undone:
            for column in _CLOSE_TIMES:
                if column not in undone:
                    state[column] = None
    start = current.get("add_time")
    first = min(by_time)
    if isinstance(start, datetime) and start < first:
        versions.append({"valid_from": start, **state})
    versions.reverse()
    return [{"deal_id": current.get("id"), **version} for version in versions]
