"""Analytics-ready views in the synced dataset, recreated after every run.

* `deals_enriched` — every deal (all its columns, custom fields included) with the names of
  its pipeline, stage, owner (when a `users` table exists), organization and person.
* `open_pipeline_summary` — per pipeline, stage and currency: open deals, their total value
  and their weighted value (deal probability, else the stage's, else 100 %).

Plain SQL through dlt's `sql_client`, valid on DuckDB and PostgreSQL (and written to stay
portable to the other SQL destinations). A view is only created when the tables it needs
exist, and each run recreates it so new custom-field columns appear in `deals_enriched`.
A view that cannot be created is logged as a warning: views never fail a sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sources.pipedrive.dlt_adapter import cursor_columns

logger = logging.getLogger(__name__)

DEALS_ENRICHED = "deals_enriched"
OPEN_PIPELINE_SUMMARY = "open_pipeline_summary"
VIEWS = (DEALS_ENRICHED, OPEN_PIPELINE_SUMMARY)
SOURCE_TABLES = ("deals", "pipelines", "stages", "users", "organizations", "persons")
# destinations that bind a view's table names in the view's own schema: unqualified names
# there keep the view valid whatever the file's catalog is called when it is opened later
# (SQLite, through SQLAlchemy, allows a view to name only tables of its own database file)
UNQUALIFIED_DESTINATIONS = ("duckdb", "motherduck")


@dataclass
class ViewContext:
    """What the view builders need: which tables and columns exist, and how to quote."""

    columns: dict[str, list[str]]  # table → lowercased column names (existing tables only)
    table: Callable[[str], str]  # table name → reference usable inside a view body
    column: Callable[[str], str]  # column name → escaped identifier

    def has(self, table: str, *columns: str) -> bool:
        present = self.columns.get(table)
        return present is not None and all(c in present for c in columns)


def _join_names(ctx: ViewContext) -> list[tuple[str, str, str, str]]:
    """(alias, table, deal column, name column alias) for every join the warehouse allows."""
    candidates = [
        ("p", "pipelines", "pipeline_id", "pipeline_name"),
        ("s", "stages", "stage_id", "stage_name"),
        ("u", "users", "owner_id", "owner_name"),
        ("o", "organizations", "org_id", "organization_name"),
        ("pe", "persons", "person_id", "person_name"),
    ]
    return [c for c in candidates if ctx.has(c[1], "id", "name") and ctx.has("deals", c[2])]


def _free_name(wanted: str, taken: set[str]) -> str:
    """`wanted`, or `wanted_2`, `wanted_3`… when a deal column (a custom field) has it."""
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}_{n}"
    taken.add(name)
    return name


def deals_enriched_sql(ctx: ViewContext) -> str | None:
    if not ctx.has("deals", "id"):
        return None
    c = ctx.column
    taken = set(ctx.columns["deals"])
    selects = ["d.*"]
    joins = []
    for alias, table, deal_column, name_column in _join_names(ctx):
        selects.append(f"{alias}.{c('name')} AS {c(_free_name(name_column, taken))}")
        joins.append(
            f"LEFT JOIN {ctx.table(table)} {alias} ON {alias}.{c('id')} = d.{c(deal_column)}"
        )
    return "\n".join(
        [
            "SELECT " + ",\n       ".join(selects),
            f"FROM {ctx.table('deals')} d",
            *joins,
        ]
    )


def open_pipeline_summary_sql(ctx: ViewContext) -> str | None:
    needed = ctx.has("deals", "pipeline_id", "stage_id", "status", "value", "currency")
    if not (needed and ctx.has("stages", "id", "name") and ctx.has("pipelines", "id", "name")):
        return None
    c = ctx.column
    probability = [f"d.{c('probability')}"] if ctx.has("deals", "probability") else []
    if ctx.has("stages", "deal_probability"):
        probability.append(f"s.{c('deal_probability')}")
    weight = f"coalesce({', '.join([*probability, '100'])})"
    has_order = ctx.has("stages", "order_nr")
    stage_order = f"s.{c('order_nr')}" if has_order else "CAST(NULL AS BIGINT)"
    open_only = [f"d.{c('status')} = 'open'"]
    for flag in ("is_deleted", "is_archived"):
        if ctx.has("deals", flag):
            open_only.append(f"NOT coalesce(d.{c(flag)}, FALSE)")
    keys = [f"d.{c('pipeline_id')}", f"p.{c('name')}", f"d.{c('stage_id')}", f"s.{c('name')}"]
    keys += [stage_order] if has_order else []
    keys.append(f"d.{c('currency')}")
    return f"""SELECT d.{c("pipeline_id")} AS {c("pipeline_id")},
       p.{c("name")} AS {c("pipeline_name")},
       d.{c("stage_id")} AS {c("stage_id")},
       s.{c("name")} AS {c("stage_name")},
       {stage_order} AS {c("stage_order_nr")},
       d.{c("currency")} AS {c("currency")},
       count(*) AS {c("open_deals")},
       sum(d.{c("value")}) AS {c("total_value")},
       sum(d.{c("value")} * {weight} / 100) AS {c("weighted_value")}
FROM {ctx.table("deals")} d
LEFT JOIN {ctx.table("stages")} s ON s.{c("id")} = d.{c("stage_id")}
LEFT JOIN {ctx.table("pipelines")} p ON p.{c("id")} = d.{c("pipeline_id")}
WHERE {" AND ".join(open_only)}
GROUP BY {", ".join(keys)}"""


BUILDERS: dict[str, Callable[[ViewContext], str | None]] = {
    DEALS_ENRICHED: deals_enriched_sql,
    OPEN_PIPELINE_SUMMARY: open_pipeline_summary_sql,
}


def _columns(client: Any, table: str) -> list[str] | None:
    """Column names of a table, or None when it does not exist."""
    try:
        query = f"SELECT * FROM {client.make_qualified_table_name(table)} WHERE 1 = 0"
        with client.execute_query(query) as cursor:
            return [name.lower() for name in cursor_columns(cursor)]
    except Exception:  # noqa: BLE001 - "no such table" differs by destination
        return None


def _destination_name(pipeline: Any) -> str:
    destination = getattr(pipeline, "destination", None)
    kind = str(getattr(destination, "destination_type", "") or "")
    return kind.rsplit(".", 1)[-1]


def view_context(pipeline: Any, client: Any) -> ViewContext:
    columns = {}
    for table in SOURCE_TABLES:
        found = _columns(client, table)
        if found is not None:
            columns[table] = found
    dialect = str(getattr(client.capabilities, "sqlglot_dialect", "") or "")
    if _destination_name(pipeline) in UNQUALIFIED_DESTINATIONS or dialect == "sqlite":
        table_ref: Callable[[str], str] = client.escape_column_name
    else:
        table_ref = client.make_qualified_table_name
    return ViewContext(columns=columns, table=table_ref, column=client.escape_column_name)


def _replace_view(client: Any, name: str, body: str) -> None:
    qualified = client.make_qualified_table_name(name)
    try:
        client.execute_sql(f"CREATE OR REPLACE VIEW {qualified} AS\n{body}")
    except Exception:  # noqa: BLE001 - e.g. PostgreSQL refuses a changed column list
        client.execute_sql(f"DROP VIEW IF EXISTS {qualified}")
        client.execute_sql(f"CREATE VIEW {qualified} AS\n{body}")


def drop_views(pipeline: Any) -> None:
    """Drop the views (before a refresh drops their tables: PostgreSQL would refuse)."""
    try:
        with pipeline.sql_client() as client:
            if not client.has_dataset():
                return
            for name in VIEWS:
                client.execute_sql(f"DROP VIEW IF EXISTS {client.make_qualified_table_name(name)}")
    except Exception as exc:  # noqa: BLE001 - the drop that follows reports real problems
        logger.warning("views not dropped: %s", _first_line(exc))


def create_views(pipeline: Any) -> list[str]:
    """(Re)create every view whose tables exist; returns the names created."""
    created: list[str] = []
    try:
        with pipeline.sql_client() as client:
            ctx = view_context(pipeline, client)
            for name, build in BUILDERS.items():
                body = build(ctx)
                if body is None:
                    continue
                try:
                    _replace_view(client, name, body)
                except Exception as exc:  # noqa: BLE001 - a view never fails the sync
                    logger.warning("view %s not created: %s", name, _first_line(exc))
                    continue
                created.append(name)
    except Exception as exc:  # noqa: BLE001
        logger.warning("views not created: %s", _first_line(exc))
    return created


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
