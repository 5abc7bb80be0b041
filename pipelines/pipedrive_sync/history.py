"""The `sync_runs` table: one row per entity per run, written to the warehouse after each run.

`status` reads it (last successful sync, outcome, staleness) and the runner reads it to decide
when the next id reconciliation is due. It is written after the post-load steps, so a row with
`reconciled = true` means the vanished rows really were flagged.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dlt
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.destinations.exceptions import DatabaseException

from sources.pipedrive.postload import heal_destination_schema

from .summary import entity_usage

if TYPE_CHECKING:
    from .result import RunResult

RUNS_TABLE = "sync_runs"
COLUMNS: list[dict[str, Any]] = [
    {"name": "run_id", "data_type": "text", "nullable": False},
    {"name": "entity", "data_type": "text", "nullable": False},
    {"name": "started_at", "data_type": "timestamp"},
    {"name": "finished_at", "data_type": "timestamp"},
    {"name": "status", "data_type": "text"},
    {"name": "rows", "data_type": "bigint"},
    {"name": "pages", "data_type": "bigint"},
    {"name": "requests", "data_type": "bigint"},
    {"name": "tokens", "data_type": "bigint"},
    {"name": "flagged_deleted", "data_type": "bigint"},
    {"name": "reconciled", "data_type": "bool"},
    {"name": "exit_code", "data_type": "bigint"},
    {"name": "message", "data_type": "text"},
    {"name": "company_id", "data_type": "bigint"},
    {"name": "company_domain", "data_type": "text"},
]


def last_reconciled(pipeline: dlt.Pipeline) -> dict[str, datetime] | None:
    """entity → when its ids were last fully listed, or, never yet, when its first recorded
    run started (a first sync reads every id, even one that took several interrupted runs);
    None when no run was ever recorded."""
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(RUNS_TABLE)
            rows = client.execute_sql(
                "SELECT entity, max(CASE WHEN reconciled THEN finished_at END), min(started_at)"
                f" FROM {table} GROUP BY entity"
            )
    except DestinationUndefinedEntity:  # no dataset or no table yet: nothing recorded
        return None
    return {
        entity: _aware(reconciled or first)
        for entity, reconciled, first in rows or []
        if (reconciled or first) is not None
    }


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        from sources.pipedrive.convert import iso_datetime  # the one ISO time parser

        return iso_datetime(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_rows(result: RunResult, started_at: datetime) -> list[dict[str, Any]]:
    """The rows describing one run, one per entity."""
    run_id = uuid.uuid4().hex
    finished = datetime.now(UTC)
    usage = entity_usage(result)
    company = result.company
    rows = []
    for report in result.reports:
        requests, tokens = usage.get(report.name, (0, 0))
        rows.append(
            {
                "run_id": run_id,
                "entity": report.name,
                "started_at": started_at,
                "finished_at": finished,
                "status": report.status,
                "rows": report.rows,
                "pages": report.pages,
                "requests": requests,
                "tokens": tokens,
                "flagged_deleted": result.vanished.get(report.name, 0),
                "reconciled": bool(report.reconciled or report.full_read) and report.status == "ok",
                "exit_code": result.code,
                "message": report.message or None,
                "company_id": company.id if company else None,
                "company_domain": company.domain if company else None,
            }
        )
    return rows


def runs_table() -> Any:
    """A resource that only creates `sync_runs` (no rows), so that a first sync's own load
    creates it and `record_run` can insert into it directly."""

    def create() -> Any:
        yield dlt.mark.materialize_table_schema()

    columns = [*COLUMNS, {"name": "_dlt_load_id", "data_type": "text", "nullable": False}]
    columns.append({"name": "_dlt_id", "data_type": "text", "nullable": False, "unique": True})
    return dlt.resource(  # type: ignore[call-overload]
        create, name=RUNS_TABLE, write_disposition="append", columns=columns
    )


def record_run(pipeline: dlt.Pipeline, result: RunResult, started_at: datetime) -> None:
    """Append this run's rows to `sync_runs`.

    Once the table exists with every column, the rows go in with one INSERT: a load of its
    own costs dlt about half a second, every run. The first run (or a new column) loads them
    through dlt, which creates or migrates the table.
    """
    rows = run_rows(result, started_at)
    if not rows:
        return
    load_id = result.load_ids[-1] if result.load_ids else f"{time.time():.7f}"
    if _insert_directly(pipeline, rows, load_id):
        return
    resource = dlt.resource(  # type: ignore[call-overload]
        rows, name=RUNS_TABLE, write_disposition="append", columns=COLUMNS
    )
    pipeline.extract(resource)
    pipeline.normalize()
    heal_destination_schema(pipeline)  # the table may be known to dlt, yet missing
    pipeline.load()


def _insert_directly(
    pipeline: dlt.Pipeline, rows: list[dict[str, Any]], load_id: str | None
) -> bool:
    table = pipeline.default_schema.tables.get(RUNS_TABLE) if pipeline.default_schema_name else None
    if table is None:
        return False
    names = [column["name"] for column in COLUMNS]
    if not set(names) <= set(table.get("columns", {})):
        return False
    try:
        with pipeline.sql_client() as client:
            columns = [*names, "_dlt_load_id", "_dlt_id"]
            quoted = ", ".join(client.escape_column_name(c) for c in columns)
            placeholders = ", ".join(["%s"] * len(columns))
            sql = (
                f"INSERT INTO {client.make_qualified_table_name(RUNS_TABLE)} ({quoted})"
                f" VALUES ({placeholders})"
            )
            with client.begin_transaction():
                for row in rows:
                    values = [row[n] for n in names]
                    client.execute_sql(sql, *values, load_id, uuid.uuid4().hex[:14])
    except DatabaseException:  # e.g. the table was dropped by hand: dlt recreates it
        return False
    return True
