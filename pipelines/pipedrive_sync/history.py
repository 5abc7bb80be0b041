"""The `sync_runs` table: one row per entity per run, written to the warehouse after each run.

`status` reads it (last successful sync, outcome, staleness) and the runner reads it to decide
when the next id reconciliation is due. It is written after the post-load steps, so a row with
`reconciled = true` means the vanished rows really were flagged.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dlt

from .summary import entity_usage

if TYPE_CHECKING:
    from .runner import RunResult

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
]


def last_reconciled(pipeline: dlt.Pipeline) -> dict[str, datetime] | None:
    """entity → when its ids were last fully listed; None when no run was ever recorded."""
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(RUNS_TABLE)
            rows = client.execute_sql(
                f"SELECT entity, max(finished_at) FROM {table} WHERE reconciled GROUP BY entity"
            )
    except Exception:  # noqa: BLE001 - no dataset or no table yet: nothing recorded
        return None
    return {entity: _aware(when) for entity, when in rows or [] if when is not None}


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_rows(result: RunResult, started_at: datetime) -> list[dict[str, Any]]:
    """The rows describing one run, one per entity."""
    run_id = uuid.uuid4().hex
    finished = datetime.now(UTC)
    usage = entity_usage(result)
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
            }
        )
    return rows


def record_run(pipeline: dlt.Pipeline, result: RunResult, started_at: datetime) -> None:
    """Append this run's rows to `sync_runs` (a small load of its own)."""
    rows = run_rows(result, started_at)
    if not rows:
        return
    resource = dlt.resource(  # type: ignore[call-overload]
        rows, name=RUNS_TABLE, write_disposition="append", columns=COLUMNS
    )
    pipeline.run(resource)
