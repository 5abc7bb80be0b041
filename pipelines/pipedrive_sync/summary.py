"""The end-of-run summary: rows per entity, requests, tokens, what was skipped or stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from .runner import RunResult


def summary_rows(result: RunResult) -> list[dict[str, object]]:
    """One dict per entity: rows, pages, requests, tokens, status, flagged deleted, message."""
    stats = list(result.metrics.by_label.items())
    rows = []
    for report in result.reports:
        mine = [s for label, s in stats if label.split("/")[0] == report.name]
        rows.append(
            {
                "entity": report.name,
                "rows": report.rows,
                "pages": report.pages,
                "requests": sum(s.requests for s in mine),
                "tokens": sum(s.tokens for s in mine),
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
