"""`status --format openmetrics`: freshness, rows, tokens and outcomes for Prometheus.

Written for node_exporter's textfile collector (or any scraper of the text format). Times are
Unix timestamps, not ages, so a file that stops being rewritten still ages in the alert rule
(`time() - pipedrive_sync_last_success_timestamp_seconds`); an entity never synced
successfully reports 0, which every freshness rule catches.
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from .status import EntityStatus

PREFIX = "pipedrive_sync"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _timestamp(value: datetime | None) -> float:
    return round(value.timestamp(), 3) if value else 0.0


# name, help, value of an entity's status (None: not reported for it)
ENTITY_METRICS = (
    (
        "last_success_timestamp_seconds",
        "When the entity last synced successfully (0: never).",
        lambda r: _timestamp(r.last_success),
    ),
    ("stale", "1 when the entity is stale (see `status --max-age`).", lambda r: int(r.stale)),
    ("rows", "Rows in the entity's table now.", lambda r: r.rows),
    ("deleted_rows", "Rows flagged is_deleted.", lambda r: r.deleted),
    (
        "last_run_timestamp_seconds",
        "When the entity's latest recorded run finished.",
        lambda r: _timestamp(r.last_run) if r.last_run else None,
    ),
    (
        "last_exit_code",
        "Exit status of the entity's latest recorded run.",
        lambda r: r.last_exit_code,
    ),
    (
        "last_run_tokens",
        "API tokens the entity's latest recorded run spent.",
        lambda r: r.tokens_last_run,
    ),
    (
        "next_due_timestamp_seconds",
        "When the entity's next cadence (slow list, reconciliation, fields) is due.",
        lambda r: _timestamp(r.next_due) if r.next_due else None,
    ),
)


def write_openmetrics(
    rows: list[EntityStatus],
    dataset: str,
    out: TextIO,
    tokens_today: int | None,
    daily_budget: int | None,
) -> None:
    """Every entity's gauges, then the run-wide token gauges, then `# EOF`."""
    for name, help_text, value_of in ENTITY_METRICS:
        out.write(f"# TYPE {PREFIX}_{name} gauge\n# HELP {PREFIX}_{name} {help_text}\n")
        for row in rows:
            value = value_of(row)
            if value is not None:
                out.write(f"{PREFIX}_{name}{_labels(dataset=dataset, entity=row.entity)} {value}\n")
    dataset_label = _labels(dataset=dataset)
    gauges = [
        ("tokens_used_today", "API tokens this tool spent since 00:00 UTC.", tokens_today),
        ("daily_token_budget", "The company's daily API token budget (configured).", daily_budget),
    ]
    if daily_budget is not None and tokens_today is not None:
        gauges.append(
            (
                "daily_tokens_left",
                "The configured budget less what this tool spent today (other apps share it).",
                max(0, daily_budget - tokens_today),
            )
        )
    for name, help_text, value in gauges:
        if value is None:
            continue
        out.write(f"# TYPE {PREFIX}_{name} gauge\n# HELP {PREFIX}_{name} {help_text}\n")
        out.write(f"{PREFIX}_{name}{dataset_label} {value}\n")
    out.write("# EOF\n")
