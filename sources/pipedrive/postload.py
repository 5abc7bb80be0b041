"""Steps that run in the warehouse after a load: flag vanished rows, rewrite renamed labels.

Both are idempotent and derive what to do from the warehouse itself (plus this run's complete
id listings), so a crash between the load and these steps is repaired by the next run.
Plain SQL through dlt's sql_client, so they work on any SQL destination dlt supports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.common.pipeline import SupportsPipeline
from dlt.common.schema.utils import new_table
from dlt.destinations.exceptions import DatabaseException, DatabaseUndefinedRelation

from .dlt_adapter import create_or_extend_tables, cursor_columns, job_client_for

ID_BATCH = 1000
# table → tables holding copies of its columns, rewritten along with it
DERIVED_TABLES: dict[str, tuple[str, ...]] = {"deals": ("deal_history",)}


def _sql_client(pipeline: SupportsPipeline) -> Any:
    return pipeline.sql_client()  # type: ignore[attr-defined]


def _table_exists(client: Any, table: str) -> bool:
    """Whether the dataset has `table` (any other error, e.g. a lost connection, raises)."""
    try:
        client.execute_sql(f"SELECT 1 FROM {client.make_qualified_table_name(table)} WHERE 1 = 0")
    except DestinationUndefinedEntity:
        return False
    return True


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _batches(values: Sequence[Any], size: int = ID_BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def mark_vanished(
    pipeline: SupportsPipeline,
    table: str,
    primary_key: str,
    current_ids: set[Any],
    *,
    hard: bool = False,
) -> int:
    """Flag (or delete) rows whose id is no longer among `current_ids`; returns how many.

    `current_ids` must come from a complete listing of the entity, or live rows would be lost.
    """
    with _sql_client(pipeline) as client:
        if not _table_exists(client, table):
            return 0
        qualified = client.make_qualified_table_name(table)
        pk = client.escape_column_name(primary_key)
        deleted = client.escape_column_name("is_deleted")
        rows = client.execute_sql(f"SELECT {pk} FROM {qualified} WHERE {deleted} IS NOT TRUE")
        stored = {row[0] for row in rows or []}
        normalized = {str(i) for i in current_ids}
        return _flag_rows(
            client, table, primary_key, {i for i in stored if str(i) not in normalized}, hard
        )


def mark_deleted(
    pipeline: SupportsPipeline,
    table: str,
    primary_key: str,
    ids: set[Any],
    *,
    hard: bool = False,
) -> int:
    """Flag (or delete) the rows of these ids, deleted in Pipedrive; returns how many changed."""
    if not ids:
        return 0
    with _sql_client(pipeline) as client:
        if not _table_exists(client, table):
            return 0
        return _flag_rows(client, table, primary_key, ids, hard)


def _flag_rows(client: Any, table: str, primary_key: str, ids: set[Any], hard: bool) -> int:
    """Flag `is_deleted` on (or delete) the rows of these ids; returns how many changed."""
    qualified = client.make_qualified_table_name(table)
    pk = client.escape_column_name(primary_key)
    deleted = client.escape_column_name("is_deleted")
    changed = 0
    for batch in _batches(sorted(ids, key=str)):
        listed = ", ".join(_literal(i) for i in batch)
        found = client.execute_sql(
            f"SELECT count(*) FROM {qualified} WHERE {pk} IN ({listed})"
            + ("" if hard else f" AND {deleted} IS NOT TRUE")
        )
        changed += int(found[0][0]) if found else 0
        if hard:
            client.execute_sql(f"DELETE FROM {qualified} WHERE {pk} IN ({listed})")
        else:
            client.execute_sql(
                f"UPDATE {qualified} SET {deleted} = TRUE"
                f" WHERE {pk} IN ({listed}) AND {deleted} IS NOT TRUE"
            )
    return changed


def apply_label_changes(pipeline: SupportsPipeline, changes_table: str) -> int:
    """Rewrite renamed option labels in already-loaded rows; returns the number applied.

    Pending changes are rows of `changes_table` with `applied_at` null, loaded atomically with
    the data. Each is applied and marked in one transaction, in detection order.
    """
    with _sql_client(pipeline) as client:
        if not _table_exists(client, changes_table):
            return 0
        qualified = client.make_qualified_table_name(changes_table)
        pending = client.execute_sql(
            f"SELECT _dlt_id, table_name, column_name, field_type, old_label, new_label"
            f" FROM {qualified} WHERE applied_at IS NULL ORDER BY detected_at, _dlt_load_id"
        )
        applied = 0
        for row_id, table, column, field_type, old, new in pending or []:
            # tables that copy the column (a deal's history) show the new label too
            copies = [t for t in DERIVED_TABLES.get(table, ()) if _column_exists(client, t, column)]
            with client.begin_transaction():
                for name in (table, *copies):
                    _rewrite_label(client, name, column, field_type, old, new)
                client.execute_sql(
                    f"UPDATE {qualified} SET applied_at = CURRENT_TIMESTAMP WHERE _dlt_id = %s",
                    row_id,
                )
            applied += 1
        return applied


def _rewrite_label(
    client: Any, table: str, column: str, field_type: str, old: str, new: str
) -> None:
    target = client.make_qualified_table_name(table)
    col = client.escape_column_name(column)
    if field_type == "set":
        old_json = orjson.dumps(old).decode()
        new_json = orjson.dumps(new).decode()
        text = _cast_text(client, col)
        replaced = f"REPLACE({text}, %s, %s)"
        client.execute_sql(
            f"UPDATE {target} SET {col} = {_cast_json(client, replaced)}"
            f" WHERE {text} <> {replaced}",
            old_json,
            new_json,
            old_json,
            new_json,
        )
    else:
        client.execute_sql(f"UPDATE {target} SET {col} = %s WHERE {col} = %s", new, old)


def _dialect(client: Any) -> str:
    return str(getattr(client.capabilities, "sqlglot_dialect", "") or "").lower()


def _cast_text(client: Any, expression: str) -> str:
    if _dialect(client) in ("postgres", "redshift"):
        return f"{expression}::text"
    return f"CAST({expression} AS VARCHAR)"


def _cast_json(client: Any, expression: str) -> str:
    dialect = _dialect(client)
    if dialect in ("postgres", "redshift"):
        return f"({expression})::jsonb"
    if dialect == "duckdb":
        return f"CAST({expression} AS JSON)"
    if dialect == "snowflake":
        return f"PARSE_JSON({expression})"
    return expression


RETIRED_PREFIX = "_retired__"


def retired_columns(pipeline_state: Any) -> dict[str, list[str]]:
    """table → columns of custom fields deleted in Pipedrive, from the source's dlt state."""
    from .entities import ENTITIES
    from .sync_state import committed_field_states, source_state

    tables = {e.singular: e.name for e in ENTITIES if e.singular}
    result: dict[str, list[str]] = {}
    for singular, entry in committed_field_states(source_state(pipeline_state)):
        for columns in entry.retired.values():
            if singular in tables:
                result.setdefault(tables[singular], []).extend(columns)
    return result


def _backup_name(table: str, column: str) -> str:
    return f"{RETIRED_PREFIX}{table}__{column}"[:63]


def _column_exists(client: Any, table: str, column: str) -> bool:
    """Whether `table` exists and has `column` (read from the destination's catalog)."""
    if not _table_exists(client, table):
        return False
    with client.execute_query(
        f"SELECT * FROM {client.make_qualified_table_name(table)} WHERE 1 = 0"
    ) as cursor:
        names = {name.lower() for name in cursor_columns(cursor)}
    return column.lower() in names


def backup_retired(pipeline: SupportsPipeline, retired: dict[str, list[str]]) -> int:
    """Snapshot the values of newly retired columns before a load can overwrite them with nulls.

    Idempotent: a column already backed up is left alone. Returns how many were backed up.
    """
    if not any(retired.values()):
        return 0
    created = 0
    with _sql_client(pipeline) as client:
        for table, columns in retired.items():
            for column in columns:
                backup = _backup_name(table, column)
                if _table_exists(client, backup) or not _column_exists(client, table, column):
                    continue
                col = client.escape_column_name(column)
                client.execute_sql(
                    f"CREATE TABLE {client.make_qualified_table_name(backup)} AS"
                    f" SELECT id, {col} FROM {client.make_qualified_table_name(table)}"
                    f" WHERE {col} IS NOT NULL"
                )
                created += 1
    return created


def restore_retired(pipeline: SupportsPipeline, retired: dict[str, list[str]]) -> int:
    """Put back values of deleted fields that a reload of their rows overwrote with nulls."""
    if not any(retired.values()):
        return 0
    restored = 0
    with _sql_client(pipeline) as client:
        for table, columns in retired.items():
            target = client.make_qualified_table_name(table)
            for column in columns:
                backup = _backup_name(table, column)
                if not _table_exists(client, backup):
                    continue
                col = client.escape_column_name(column)
                source = client.make_qualified_table_name(backup)
                client.execute_sql(
                    f"UPDATE {target} SET {col} = b.{col} FROM {source} AS b"
                    f" WHERE {target}.id = b.id AND {target}.{col} IS NULL"
                )
                restored += 1
    return restored


def heal_destination_schema(pipeline: Any, schema: Any = None) -> list[str]:
    """Before a load: create the tables a pending package writes into that the destination
    lacks, and add the columns existing tables lack; returns the tables healed.

    dlt records a schema version as migrated after creating only the tables that one load
    carried, and skips migrating whenever it finds that version again. Whatever recorded it
    (an earlier load of the same schema, a crash, a table first emitted mid-run or in a later
    chunk), the next load into a table it did not create fails, and so does every retry. So
    each pending package is checked against its own schema (the one it is loaded with), table
    by table, in the destination itself. `schema` checks only the existing tables against it.
    """
    if schema is not None:
        return _heal_against(pipeline, schema, frozenset())
    packages = _pending_packages(pipeline)
    if not packages:
        return _heal_against(pipeline, pipeline.default_schema, frozenset())
    healed: set[str] = set()
    for package_schema, loading in packages:
        healed.update(_heal_against(pipeline, package_schema, loading))
    return sorted(healed)


def add_planned_columns(pipeline: Any, planned: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Add to existing tables the columns of fields no row holds a value of yet; returns the
    tables extended. dlt's schema learns them with their first value (and finds them there)."""
    if not planned or not pipeline.default_schema_name:
        return []
    schema = pipeline.default_schema.clone()
    for table, columns in planned.items():
        if table in schema.tables:
            schema.update_table(new_table(table, columns=list(columns.values())))
    return _heal_against(pipeline, schema, frozenset())


def _pending_packages(pipeline: Any) -> list[tuple[Any, frozenset[str]]]:
    """(schema, tables with jobs to load) of every normalized package not loaded yet."""
    packages = []
    for load_id in pipeline.list_normalized_load_packages():
        info = pipeline.get_load_package_info(load_id)
        jobs = [*info.jobs.get("new_jobs", ()), *info.jobs.get("started_jobs", ())]
        packages.append((info.schema, frozenset(job.job_file_info.table_name for job in jobs)))
    return packages


def _heal_against(pipeline: Any, schema: Any, loading: frozenset[str]) -> list[str]:
    """Tables of `schema` behind it in the destination (missing ones only if in `loading`)."""
    with job_client_for(pipeline, schema) as client:  # the DDL is generated from `schema`
        if not hasattr(client, "get_storage_tables") or not client.is_storage_initialized():
            return []
        names = set(schema.data_table_names()) | (loading & set(schema.tables))
        lagging: list[str] = []
        for table, stored in client.get_storage_tables(sorted(names)):
            if not stored and table not in loading:
                continue  # not written by a pending load: created when data comes
            known = {name.lower() for name in stored}
            wanted = [
                name
                for name, column in schema.get_table_columns(table).items()
                if column.get("data_type") and name.lower() not in known
            ]
            if wanted:
                lagging.append(table)
        if lagging:
            create_or_extend_tables(client, lagging)
        return lagging


def delete_rows_of_load(pipeline: SupportsPipeline, tables: Sequence[str], load_id: str) -> int:
    """Remove what a load that never completed appended to `tables`; returns the rows deleted.

    A package set aside after some of its jobs committed left their rows behind; what it held
    is read again, so appended rows would otherwise be there twice.
    """
    deleted = 0
    with _sql_client(pipeline) as client:
        for table in tables:
            if not _table_exists(client, table):
                continue
            qualified = client.make_qualified_table_name(table)
            column = client.escape_column_name("_dlt_load_id")
            found = client.execute_sql(
                f"SELECT count(*) FROM {qualified} WHERE {column} = %s", load_id
            )
            count = int(found[0][0]) if found else 0
            if count:
                client.execute_sql(f"DELETE FROM {qualified} WHERE {column} = %s", load_id)
                deleted += count
    return deleted


def empty_tables(pipeline: SupportsPipeline, tables: Sequence[str]) -> frozenset[str]:
    """Those of `tables` that do not exist or hold no row in the destination."""
    if not tables:
        return frozenset()
    empty = set()
    with _sql_client(pipeline) as client:
        for table in tables:
            try:
                rows = client.execute_sql(
                    f"SELECT 1 FROM {client.make_qualified_table_name(table)} LIMIT 1"
                )
            except DatabaseUndefinedRelation:
                rows = None
            except DatabaseException:  # cannot tell: merging is always right
                continue
            if not rows:
                empty.add(table)
    return frozenset(empty)


def drop_duplicate_ids(
    pipeline: SupportsPipeline,
    tables: Sequence[str],
    id_column: str = "id",
    key_columns: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, int]:
    """Keep one row per id (the newest by `update_time`, where the table has it) in each
    table; `key_columns` names the tables keyed otherwise. Returns the keys repaired.

    A first sync appends into empty tables; dlt re-runs a load job that a kill interrupted
    after its insert committed, so the next run checks for (and removes) the repeated rows.
    """
    repaired: dict[str, int] = {}
    with _sql_client(pipeline) as client:
        for table in tables:
            if not _table_exists(client, table):
                continue
            keys = tuple((key_columns or {}).get(table, (id_column,)))
            count = _repeat_keys(client, table, keys)
            if count:
                _keep_one_per_key(client, table, keys)
                repaired[table] = count
    return repaired


def _repeated(client: Any, table: str, keys: Sequence[str]) -> str:
    key = ", ".join(client.escape_column_name(k) for k in keys)
    name = client.make_qualified_table_name(table)
    return f"SELECT {key} FROM {name} GROUP BY {key} HAVING count(*) > 1"


def _repeat_keys(client: Any, table: str, keys: Sequence[str]) -> int:
    found = client.execute_sql(f"SELECT count(*) FROM ({_repeated(client, table, keys)}) AS d")
    return int(found[0][0]) if found else 0


def _same_key(client: Any, keys: Sequence[str], left: str, right: str) -> str:
    return " AND ".join(
        f"{left}.{client.escape_column_name(k)} = {right}.{client.escape_column_name(k)}"
        for k in keys
    )


def _keep_one_per_key(client: Any, table: str, keys: Sequence[str]) -> None:
    name = client.make_qualified_table_name(table)
    keep = client.make_qualified_table_name(f"_dedupe__{table}")
    with client.execute_query(f"SELECT * FROM {name} WHERE 1 = 0") as cursor:
        names = cursor_columns(cursor)
    columns = ", ".join(client.escape_column_name(c) for c in names)
    partition = ", ".join(client.escape_column_name(k) for k in keys)
    newest = "update_time" if "update_time" in names else keys[-1]  # else: the same version
    order = client.escape_column_name(newest)
    with client.begin_transaction():
        client.execute_sql(f"DROP TABLE IF EXISTS {keep}")
        client.execute_sql(
            f"CREATE TABLE {keep} AS SELECT {columns} FROM (SELECT {columns},"
            f" ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order} DESC) AS dedupe_rn"
            f" FROM {name} AS t WHERE EXISTS (SELECT 1 FROM ({_repeated(client, table, keys)})"
            f" AS r WHERE {_same_key(client, keys, 'r', 't')})) AS ranked WHERE dedupe_rn = 1"
        )
        client.execute_sql(
            f"DELETE FROM {name} AS d WHERE EXISTS"
            f" (SELECT 1 FROM {keep} AS k WHERE {_same_key(client, keys, 'k', 'd')})"
        )
        client.execute_sql(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {keep}")
        client.execute_sql(f"DROP TABLE {keep}")
