"""The end-of-run summary: rows per entity, requests, tokens, what was skipped or stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from .result import RunResult


def entity_of_label(label: str) -> str | None:
    """The entity an HTTP metrics label belongs to: list requests are labelled with the entity
    or stream key (`deals/archived` → deals, `callLogs` → call_logs, `deals/products` →
    deal_products); run-level calls (`users/me`, `dealFields`) belong to none."""
    from sources.pipedrive.entities import ENTITIES

    owners: dict[str, str] = {}
    for entity in ENTITIES:
        owners.setdefault(entity.name, entity.name)
        for stream in entity.streams:
            owners.setdefault(stream.key, entity.name)
    return owners.get(label)


def entity_usage(result: RunResult) -> dict[str, tuple[int, int]]:
    """entity → (API requests, API tokens) spent on its lists this run."""
    usage: dict[str, tuple[int, int]] = {}
    for label, stats in list(result.metrics.by_label.items()):
        entity = entity_of_label(label)
        if entity is None:
            continue
        requests, tokens = usage.get(entity, (0, 0))
        usage[entity] = (requests + stats.requests, tokens + stats.tokens)
    return usage


def summary_rows(result: RunResult) -> list[dict[str, object]]:
    """One dict per entity: rows, pages, requests, tokens, status, flagged deleted, message."""
    usage = entity_usage(result)
    rows = []
    for report in result.reports:  # in entity-table order
        requests, tokens = usage.get(report.name, (0, 0))
        rows.append(
            {
                "entity": report.name,
                "rows": report.rows,
                "pages": report.pages,
                "requests": requests,
                "tokens": tokens,
                "status": report.status,
                "vanished": result.vanished.get(report.name, 0),
                "message": report.message,
            }
        )
    return rows


def print_summary(result: RunResult, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    table = Table(title=None, show_edge=False, pad_edge=False)
    numeric = ("rows", "requests", "tokens")
    for column in ("entity", *numeric, "status"):
        table.add_column(column, justify="right" if column in numeric else "left")
    notes = []
    for row in summary_rows(result):
        status = str(row["status"])
        if row["vanished"]:
            status += f" ({row['vanished']} flagged deleted)"
        table.add_row(
            str(row["entity"]),
            f"{row['rows']:,}",
            f"{row['requests']:,}",
            f"{row['tokens']:,}",
            status,
        )
        if row["message"]:
            notes.append(f"{row['entity']}: {row['message']}")
    console.print(table)
    metrics = result.metrics
    console.print(
        f"{metrics.requests} API requests, {metrics.tokens} API tokens, "
        f"{metrics.retries} retries, {metrics.rate_limited} rate-limit waits; "
        f"{result.chunks} load(s) in {result.seconds:.1f}s"
        + (
            f"; {result.labels_rewritten} label rename(s) applied"
            if result.labels_rewritten
            else ""
        ),
        soft_wrap=True,
    )
    for note in notes:
        console.print(f"warning: {note}", markup=False)
