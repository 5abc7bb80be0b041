"""Analytics-ready views in the synced dataset, recreated after every run.

* `deals_enriched` — every deal (all its columns, custom fields included) with the names of
  its pipeline, stage, owner (when a `users` table exists), organization and person.
* `open_pipeline_summary` — per pipeline, stage and currency: open deals, their total value
  and their weighted value (deal probability, else the stage's, else 100 %).
* `deal_stage_history` — from `deal_history`: one row per stay of a deal in a stage (entered,
  left, days, how it left: next / earlier stage, other pipeline, won, lost, deleted, archived).
* `stage_velocity` — per pipeline and stage: deals entered, median and p80 days in the stage,
  share moved on to a later stage and share won.
* `pipeline_daily` — per day, pipeline, stage and currency: open deals and their value at the
  end of the day, reconstructed from `deal_history`.
* `win_rate_monthly` — per month of closing, pipeline and owner: won, lost, win rate.

Money is never summed across currencies: every view with a value groups by currency.

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
DEAL_STAGE_HISTORY = "deal_stage_history"
STAGE_VELOCITY = "stage_velocity"
PIPELINE_DAILY = "pipeline_daily"
WIN_RATE_MONTHLY = "win_rate_monthly"
# in creation order (a view may read the ones before it); dropped in reverse
VIEWS = (
    DEALS_ENRICHED,
    OPEN_PIPELINE_SUMMARY,
    DEAL_STAGE_HISTORY,
    STAGE_VELOCITY,
    PIPELINE_DAILY,
    WIN_RATE_MONTHLY,
)
HISTORY = "deal_history"
SOURCE_TABLES = ("deals", "pipelines", "stages", "users", "organizations", "persons", HISTORY)
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


def _open_deal(c: Callable[[str], str], ctx: ViewContext, alias: str, table: str) -> str:
    """Whether a deal row is open in its pipeline: status open, not deleted, not archived."""
    conditions = [f"{alias}.{c('status')} = 'open'"]
    for flag in ("is_deleted", "is_archived"):
        if ctx.has(table, flag):
            conditions.append(f"{alias}.{c(flag)} IS NOT TRUE")
    return "(" + " AND ".join(conditions) + ")"


def deals_enriched_sql(ctx: ViewContext) -> str | None:
    if not ctx.has("deals", "id"):
        return None
    c = ctx.column
    taken = set(ctx.columns["deals"])
    selects = ["d.*"]
    joins = []
    for alias, table, deal_column, name_column in _join_names(ctx):
        selects.append(f"{alias}.{c('name')} AS {c(_free_name(name_column, taken))}")
        if table == "stages" and ctx.has("stages", "order_nr"):
            selects.append(f"s.{c('order_nr')} AS {c(_free_name('stage_order_nr', taken))}")
        joins.append(
            f"LEFT JOIN {ctx.table(table)} {alias} ON {alias}.{c('id')} = d.{c(deal_column)}"
        )
    if ctx.has("deals", "status"):
        selects.append(f"{_open_deal(c, ctx, 'd', 'deals')} AS {c(_free_name('is_open', taken))}")
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


# -- stage analytics, from deal_history ---------------------------------------------------------
STAY_COLUMNS = ("deal_id", "valid_from", "pipeline_id", "stage_id", "status", "value", "currency")


def _days_between(start: str, end: str) -> str:
    return (
        f"CAST((EXTRACT(EPOCH FROM {end}) - EXTRACT(EPOCH FROM {start})) / 86400.0"
        " AS DOUBLE PRECISION)"
    )


def _utc_date(expression: str) -> str:
    return f"CAST({expression} AT TIME ZONE 'UTC' AS DATE)"


def _optional(ctx: ViewContext, alias: str, column: str, kind: str) -> str:
    """`alias.column`, or a typed NULL when the history lacks that column."""
    c = ctx.column
    return f"{alias}.{c(column)}" if ctx.has(HISTORY, column) else f"CAST(NULL AS {kind})"


def _timeline_ctes(ctx: ViewContext) -> str:
    """CTEs `versions` (each deal version with `effective_from` / `effective_to`: when its
    state began and ended, as exactly as Pipedrive tells) and `stays` (consecutive versions in
    one stage and open/closed state, with what came next).

    A state began at the version's `valid_from` (when the sync saw it, or the changelog time),
    unless Pipedrive's own times say more exactly: `stage_change_time` for a stage entered,
    `won_time` / `lost_time` for a deal closed — when they fall after the version before. A
    deal's first version began when it entered that stage (its `stage_change_time`, else its
    `add_time`).
    """
    c = ctx.column
    ts = "TIMESTAMP WITH TIME ZONE"
    is_open = _open_deal(c, ctx, "h", HISTORY)
    window = f"(PARTITION BY h.{c('deal_id')} ORDER BY h.{c('valid_from')})"

    def within(expression: str) -> str:
        return f"{expression} <= valid_from AND (prev_from IS NULL OR {expression} > prev_from)"

    return f"""versions_raw AS (
  SELECT h.{c("deal_id")} AS deal_id, h.{c("valid_from")} AS valid_from,
         h.{c("pipeline_id")} AS pipeline_id, h.{c("stage_id")} AS stage_id,
         h.{c("status")} AS status, h.{c("value")} AS value, h.{c("currency")} AS currency,
         {_optional(ctx, "h", "owner_id", "BIGINT")} AS owner_id,
         {_optional(ctx, "h", "is_deleted", "BOOLEAN")} AS is_deleted,
         {_optional(ctx, "h", "is_archived", "BOOLEAN")} AS is_archived,
         {_optional(ctx, "h", "add_time", ts)} AS add_time,
         {_optional(ctx, "h", "stage_change_time", ts)} AS stage_change_time,
         {_optional(ctx, "h", "won_time", ts)} AS won_time,
         {_optional(ctx, "h", "lost_time", ts)} AS lost_time,
         {is_open} AS is_open,
         LAG(h.{c("valid_from")}) OVER {window} AS prev_from,
         LAG(h.{c("pipeline_id")}) OVER {window} AS prev_pipeline,
         LAG(h.{c("stage_id")}) OVER {window} AS prev_stage,
         LAG({is_open}) OVER {window} AS prev_open
  FROM {ctx.table(HISTORY)} h
),
versions_marked AS (
  SELECT v.*,
         CASE WHEN prev_from IS NULL OR prev_pipeline IS DISTINCT FROM pipeline_id
                   OR prev_stage IS DISTINCT FROM stage_id OR prev_open IS DISTINCT FROM is_open
              THEN 1 ELSE 0 END AS starts,
         CASE WHEN NOT is_open AND status = 'won' AND {within("won_time")} THEN won_time
              WHEN NOT is_open AND status = 'lost' AND {within("lost_time")} THEN lost_time
              WHEN is_open AND {within("stage_change_time")} THEN stage_change_time
              WHEN is_open AND prev_from IS NULL AND add_time <= valid_from THEN add_time
              ELSE valid_from END AS began
  FROM versions_raw v
),
versions_started AS (
  SELECT m.*, CASE WHEN starts = 1 THEN began ELSE valid_from END AS effective_from,
         SUM(starts) OVER (PARTITION BY deal_id ORDER BY valid_from
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS stay_nr
  FROM versions_marked m
),
versions AS (
  SELECT s.*, LEAD(effective_from) OVER (PARTITION BY deal_id ORDER BY valid_from)
         AS effective_to
  FROM versions_started s
),
stays_first AS (
  SELECT deal_id, stay_nr, pipeline_id, stage_id, status, is_open, is_deleted, is_archived,
         value, currency, owner_id, effective_from AS entered_at
  FROM versions WHERE starts = 1
),
stays AS (
  SELECT f.*,
         LEAD(entered_at) OVER n AS left_at, LEAD(status) OVER n AS next_status,
         LEAD(is_deleted) OVER n AS next_deleted, LEAD(is_archived) OVER n AS next_archived,
         LEAD(pipeline_id) OVER n AS next_pipeline, LEAD(stage_id) OVER n AS next_stage
  FROM stays_first f
  WINDOW n AS (PARTITION BY deal_id ORDER BY stay_nr)
)"""


def _has_history(ctx: ViewContext) -> bool:
    return ctx.has(HISTORY, *STAY_COLUMNS)


def deal_stage_history_sql(ctx: ViewContext) -> str | None:
    if not _has_history(ctx):
        return None
    c = ctx.column
    has_stages = ctx.has("stages", "id", "name", "order_nr")
    has_pipelines = ctx.has("pipelines", "id", "name")
    has_deals = ctx.has("deals", "id", "status")
    stage_name = f"s.{c('name')}" if has_stages else "CAST(NULL AS VARCHAR)"
    order = f"s.{c('order_nr')}" if has_stages else "CAST(NULL AS BIGINT)"
    next_order = f"ns.{c('order_nr')}" if has_stages else "CAST(NULL AS BIGINT)"
    joins = []
    if has_stages:
        joins.append(f"LEFT JOIN {ctx.table('stages')} s ON s.{c('id')} = st.stage_id")
        joins.append(f"LEFT JOIN {ctx.table('stages')} ns ON ns.{c('id')} = st.next_stage")
    if has_pipelines:
        joins.append(f"LEFT JOIN {ctx.table('pipelines')} p ON p.{c('id')} = st.pipeline_id")
    if has_deals:
        joins.append(f"LEFT JOIN {ctx.table('deals')} d ON d.{c('id')} = st.deal_id")
    now = "CURRENT_TIMESTAMP"
    return f"""WITH {_timeline_ctes(ctx)}
SELECT st.deal_id AS {c("deal_id")},
       st.pipeline_id AS {c("pipeline_id")},
       {f"p.{c('name')}" if has_pipelines else "CAST(NULL AS VARCHAR)"} AS {c("pipeline_name")},
       st.stage_id AS {c("stage_id")},
       {stage_name} AS {c("stage_name")},
       {order} AS {c("stage_order_nr")},
       st.entered_at AS {c("entered_at")},
       st.left_at AS {c("left_at")},
       {_days_between("st.entered_at", f"coalesce(st.left_at, {now})")} AS {c("days_in_stage")},
       CAST(CASE WHEN st.left_at IS NULL THEN NULL
            WHEN st.next_deleted IS TRUE OR st.next_status = 'deleted' THEN 'deleted'
            WHEN st.next_status = 'won' THEN 'won'
            WHEN st.next_status = 'lost' THEN 'lost'
            WHEN st.next_archived IS TRUE THEN 'archived'
            WHEN st.next_pipeline IS DISTINCT FROM st.pipeline_id THEN 'other pipeline'
            WHEN {next_order} > {order} THEN 'next stage'
            WHEN {next_order} < {order} THEN 'earlier stage'
            ELSE 'other stage' END AS VARCHAR) AS {c("left_by")},
       st.left_at IS NULL AS {c("is_current")},
       st.value AS {c("value")},
       st.currency AS {c("currency")},
       st.owner_id AS {c("owner_id")},
       {f"d.{c('status')}" if has_deals else "CAST(NULL AS VARCHAR)"} AS {c("deal_status")}
FROM stays st
{chr(10).join(joins)}
WHERE st.is_open"""


def stage_velocity_sql(ctx: ViewContext) -> str | None:
    if not _has_history(ctx):
        return None
    c = ctx.column
    stays = ctx.table(DEAL_STAGE_HISTORY)

    def share(condition: str) -> str:
        return (
            f"CAST(count(DISTINCT CASE WHEN {condition} THEN {c('deal_id')} END)"
            f" AS DOUBLE PRECISION) / count(DISTINCT {c('deal_id')})"
        )

    def days(fraction: float) -> str:
        return (
            f"percentile_cont({fraction}) WITHIN GROUP (ORDER BY CASE WHEN {c('left_at')}"
            f" IS NOT NULL THEN {c('days_in_stage')} END)"
        )

    keys = ["pipeline_id", "pipeline_name", "stage_id", "stage_name", "stage_order_nr"]
    return f"""SELECT {", ".join(c(k) for k in keys)},
       count(DISTINCT {c("deal_id")}) AS {c("deals_entered")},
       count(CASE WHEN {c("is_current")} THEN 1 END) AS {c("deals_in_stage")},
       {days(0.5)} AS {c("median_days")},
       {days(0.8)} AS {c("p80_days")},
       {share(f"{c('left_by')} = 'next stage'")} AS {c("next_stage_rate")},
       {share(f"{c('deal_status')} = 'won'")} AS {c("won_rate")}
FROM {stays}
GROUP BY {", ".join(c(k) for k in keys)}"""


def pipeline_daily_sql(ctx: ViewContext) -> str | None:
    if not _has_history(ctx):
        return None
    c = ctx.column
    names = ctx.has("pipelines", "id", "name") and ctx.has("stages", "id", "name", "order_nr")
    value = "coalesce(value, 0)"
    return f"""WITH RECURSIVE {_timeline_ctes(ctx)},
changes AS (
  SELECT {_utc_date("effective_from")} AS day, pipeline_id, stage_id, currency,
         1 AS deals, {value} AS amount
  FROM versions WHERE is_open
  UNION ALL
  SELECT {_utc_date("effective_to")} AS day, pipeline_id, stage_id, currency,
         -1 AS deals, -{value} AS amount
  FROM versions WHERE is_open AND effective_to IS NOT NULL
),
daily_changes AS (
  SELECT day, pipeline_id, stage_id, currency, sum(deals) AS deals, sum(amount) AS amount
  FROM changes GROUP BY day, pipeline_id, stage_id, currency
),
days(day) AS (
  SELECT min(day) FROM daily_changes
  UNION ALL
  SELECT day + 1 FROM days WHERE day < CURRENT_DATE
),
groups AS (SELECT DISTINCT pipeline_id, stage_id, currency FROM daily_changes),
running AS (
  SELECT d.day, g.pipeline_id, g.stage_id, g.currency,
         sum(coalesce(x.deals, 0)) OVER w AS open_deals,
         sum(coalesce(x.amount, 0)) OVER w AS open_value
  FROM days d CROSS JOIN groups g
  LEFT JOIN daily_changes x ON x.day = d.day AND x.pipeline_id IS NOT DISTINCT FROM g.pipeline_id
       AND x.stage_id IS NOT DISTINCT FROM g.stage_id AND x.currency IS NOT DISTINCT FROM g.currency
  WINDOW w AS (PARTITION BY g.pipeline_id, g.stage_id, g.currency ORDER BY d.day
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT r.day AS {c("day")},
       r.pipeline_id AS {c("pipeline_id")},
       {f"p.{c('name')}" if names else "CAST(NULL AS VARCHAR)"} AS {c("pipeline_name")},
       r.stage_id AS {c("stage_id")},
       {f"s.{c('name')}" if names else "CAST(NULL AS VARCHAR)"} AS {c("stage_name")},
       {f"s.{c('order_nr')}" if names else "CAST(NULL AS BIGINT)"} AS {c("stage_order_nr")},
       r.currency AS {c("currency")},
       CAST(r.open_deals AS BIGINT) AS {c("open_deals")},
       CAST(r.open_value AS DOUBLE PRECISION) AS {c("open_value")}
FROM running r
{f"LEFT JOIN {ctx.table('pipelines')} p ON p.{c('id')} = r.pipeline_id" if names else ""}
{f"LEFT JOIN {ctx.table('stages')} s ON s.{c('id')} = r.stage_id" if names else ""}
WHERE r.open_deals <> 0"""


def win_rate_monthly_sql(ctx: ViewContext) -> str | None:
    needed = ("id", "status", "pipeline_id", "owner_id", "close_time")
    if not ctx.has("deals", *needed):
        return None
    c = ctx.column
    closed_at = f"coalesce({', '.join(f'd.{c(t)}' for t in ('won_time', 'lost_time', 'close_time') if ctx.has('deals', t))})"
    month = f"CAST(date_trunc('month', {closed_at} AT TIME ZONE 'UTC') AS DATE)"
    pipeline_name = "CAST(NULL AS VARCHAR)"
    owner_name = "CAST(NULL AS VARCHAR)"
    joins = []
    if ctx.has("pipelines", "id", "name"):
        pipeline_name = f"p.{c('name')}"
        joins.append(f"LEFT JOIN {ctx.table('pipelines')} p ON p.{c('id')} = d.{c('pipeline_id')}")
    if ctx.has("users", "id", "name"):
        owner_name = f"u.{c('name')}"
        joins.append(f"LEFT JOIN {ctx.table('users')} u ON u.{c('id')} = d.{c('owner_id')}")
    not_deleted = f" AND d.{c('is_deleted')} IS NOT TRUE" if ctx.has("deals", "is_deleted") else ""
    won = f"count(CASE WHEN d.{c('status')} = 'won' THEN 1 END)"
    lost = f"count(CASE WHEN d.{c('status')} = 'lost' THEN 1 END)"
    keys = [month, f"d.{c('pipeline_id')}", pipeline_name, f"d.{c('owner_id')}", owner_name]
    return f"""SELECT {month} AS {c("month")},
       d.{c("pipeline_id")} AS {c("pipeline_id")},
       {pipeline_name} AS {c("pipeline_name")},
       d.{c("owner_id")} AS {c("owner_id")},
       {owner_name} AS {c("owner_name")},
       {won} AS {c("won")},
       {lost} AS {c("lost")},
       CAST({won} AS DOUBLE PRECISION) / count(*) AS {c("win_rate")}
FROM {ctx.table("deals")} d
{chr(10).join(joins)}
WHERE d.{c("status")} IN ('won', 'lost'){not_deleted} AND {closed_at} IS NOT NULL
GROUP BY {", ".join(keys)}"""


BUILDERS: dict[str, Callable[[ViewContext], str | None]] = {
    DEALS_ENRICHED: deals_enriched_sql,
    OPEN_PIPELINE_SUMMARY: open_pipeline_summary_sql,
    DEAL_STAGE_HISTORY: deal_stage_history_sql,
    STAGE_VELOCITY: stage_velocity_sql,
    PIPELINE_DAILY: pipeline_daily_sql,
    WIN_RATE_MONTHLY: win_rate_monthly_sql,
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
        # views reading this one go too: they are created again after it
        try:
            client.execute_sql(f"DROP VIEW IF EXISTS {qualified} CASCADE")
        except Exception:  # noqa: BLE001 - SQLite has no CASCADE (nor CREATE OR REPLACE)
            client.execute_sql(f"DROP VIEW IF EXISTS {qualified}")
        client.execute_sql(f"CREATE VIEW {qualified} AS\n{body}")


def drop_views(pipeline: Any) -> None:
    """Drop the views (before a refresh drops their tables: PostgreSQL would refuse)."""
    try:
        with pipeline.sql_client() as client:
            if not client.has_dataset():
                return
            for name in reversed(VIEWS):
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
