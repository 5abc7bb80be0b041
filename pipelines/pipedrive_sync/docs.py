"""Generate `docs/tables.md`, the table reference, from the pinned dlt schema.

    pipedrive-sync docs                 # (re)write docs/tables.md
    pipedrive-sync docs --check         # exit 1 when it is out of date (a test runs this)
    python -m pipelines.pipedrive_sync.docs [PATH]

Tables, columns and types come from `schemas/pipedrive.schema.yaml`; column descriptions from
Pipedrive's OpenAPI specs in `schemas/openapi/`; the bookkeeping tables and views from the
code that writes them. Custom-field columns are not listed: they depend on the account.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from sources.pipedrive.identity import IDENTITY_COLUMNS, IDENTITY_TABLE

from .history import COLUMNS as RUNS_COLUMNS
from .history import RUNS_TABLE

TYPES = {  # dlt data type → (DuckDB, PostgreSQL)
    "bigint": ("BIGINT", "bigint"),
    "text": ("VARCHAR", "varchar"),
    "double": ("DOUBLE", "double precision"),
    "bool": ("BOOLEAN", "boolean"),
    "timestamp": ("TIMESTAMP WITH TIME ZONE", "timestamp with time zone"),
    "date": ("DATE", "date"),
    "time": ("TIME", "time without time zone"),
    "json": ("JSON", "json (jsonb for bookkeeping tables)"),
    "decimal": ("DECIMAL(38,9)", "numeric"),
}
MAX_DESCRIPTION = 200

RUNS_DESCRIPTIONS = {
    "run_id": "One id per run (all entities of a run share it)",
    "entity": "The entity (table) this row is about",
    "started_at": "When the run started (UTC)",
    "finished_at": "When the run finished (UTC)",
    "status": "ok, partial (some streams not readable), skipped (no access) or stopped",
    "rows": "Rows fetched from Pipedrive for this entity",
    "pages": "API pages read",
    "requests": "API requests made for this entity",
    "tokens": "API tokens (rate budget) spent for this entity",
    "flagged_deleted": "Rows flagged is_deleted (or deleted with --hard-deletes) this run",
    "reconciled": "Every current id was listed, so vanished rows were flagged",
    "exit_code": "The run's exit status",
    "message": "Why the entity was skipped, partial or stopped",
    "company_id": "The Pipedrive company synced (as `sync_identity` records it)",
    "company_domain": "Its domain (`<domain>.pipedrive.com`)",
}
IDENTITY_DESCRIPTIONS = {
    "company_id": "The Pipedrive company this dataset holds (from `/v1/users/me`)",
    "company_domain": "Its domain (`<domain>.pipedrive.com`)",
    "company_name": "Its name",
    "pipeline_name": "The dlt pipeline whose state (cursors, pinned names) this dataset keeps",
    "claimed_at": "When the first run into this dataset claimed it",
}
MAPPING_COLUMNS = [
    ("entity", "text", "deal, person, organization, product, activity"),
    ("field_key", "text", "Pipedrive's field key (40-hex hash for custom fields)"),
    ("field_name", "text", "The field's current name in Pipedrive"),
    ("column_name", "text", "The warehouse column holding it (pinned once assigned)"),
    ("field_type", "text", "Pipedrive field type: enum, set, monetary, date, …"),
    ("options", "json", "Options of enum/set fields: [{id, label}]"),
    ("is_active", "bool", "false once the field was deleted in Pipedrive (the column stays)"),
]
LABEL_CHANGE_COLUMNS = [
    ("entity", "text", "deal, person, …"),
    ("table_name", "text", "The table whose rows were rewritten"),
    ("column_name", "text", "The enum or set column"),
    ("field_type", "text", "enum or set"),
    ("old_label", "text", "The option label before the rename"),
    ("new_label", "text", "The option label after the rename"),
    ("detected_at", "timestamp", "When the rename was seen"),
    ("applied_at", "timestamp", "When loaded rows were rewritten (NULL: pending)"),
]
HISTORY_COLUMNS = [
    ("deal_id", "bigint", "**primary key** (with `valid_from`). The deal"),
    (
        "valid_from",
        "timestamp",
        "**primary key.** When this version began: the deal's `update_time` when a run saw it,"
        " or the change's time in the changelog (the first backfilled version: `add_time`)",
    ),
    ("valid_to", "timestamp", "When the next version began; NULL for the current version"),
    (
        "recorded_from",
        "text",
        "`sync` (seen by a run) or `changelog` (read back by `--backfill-history`)",
    ),
]
HISTORY_NOTES = {
    "stage_change_time": "When the deal entered this stage (Pipedrive's own time)",
    "won_time": "When it was won (the views use it as the time the stay ended)",
    "lost_time": "When it was lost",
}
STAY_COLUMNS = [
    ("deal_id", "bigint", "The deal"),
    ("pipeline_id", "bigint", "The pipeline"),
    ("pipeline_name", "text", "Its name"),
    ("stage_id", "bigint", "The stage"),
    ("stage_name", "text", "Its name"),
    ("stage_order_nr", "bigint", "The stage's position in its pipeline"),
    (
        "entered_at",
        "timestamp",
        "When the deal entered the stage (its `stage_change_time` when that falls after the"
        " version before; a deal's first stage: when it entered it, else when it was added)",
    ),
    (
        "left_at",
        "timestamp",
        "When it left (moved on, won at `won_time`, lost at `lost_time`, deleted, archived);"
        " NULL while it is still there",
    ),
    ("days_in_stage", "double", "Days between the two (up to now while it is still there)"),
    (
        "left_by",
        "text",
        "`next stage` (a later stage of the pipeline), `earlier stage`, `other pipeline`,"
        " `won`, `lost`, `deleted`, `archived`; NULL while it is still there",
    ),
    ("is_current", "bool", "The deal is still in this stage (open)"),
    ("value", "double", "The deal's value when it entered the stage"),
    ("currency", "text", "Its currency"),
    ("owner_id", "bigint", "Its owner when it entered the stage"),
    ("deal_status", "text", "The deal's status now (`deals.status`): open, won, lost, deleted"),
]
VIEW_COLUMNS = {
    "deals_enriched": [
        ("(every column of deals)", "", "Standard and custom-field columns, as in `deals`"),
        ("pipeline_name", "text", "pipelines.name of the deal's pipeline"),
        ("stage_name", "text", "stages.name of the deal's stage"),
        ("stage_order_nr", "bigint", "stages.order_nr: sort stages in pipeline order by it"),
        ("owner_name", "text", "users.name of the owner — only when a `users` table is synced"),
        ("organization_name", "text", "organizations.name of the linked organization"),
        ("person_name", "text", "persons.name of the linked person"),
        ("is_open", "bool", "status `open`, not deleted, not archived"),
    ],
    "open_pipeline_summary": [
        ("pipeline_id", "bigint", "The pipeline"),
        ("pipeline_name", "text", "Its name"),
        ("stage_id", "bigint", "The stage"),
        ("stage_name", "text", "Its name"),
        ("stage_order_nr", "bigint", "The stage's position in its pipeline (sort by it)"),
        ("currency", "text", "Deal currency: values are never summed across currencies"),
        ("open_deals", "bigint", "Open deals (not deleted, not archived)"),
        ("total_value", "double", "Sum of their value"),
        (
            "weighted_value",
            "double",
            "Sum of value * probability / 100: the deal's probability, else the stage's"
            " deal_probability, else 100",
        ),
    ],
}
VIEW_COLUMNS.update(
    {
        "deal_stage_history": STAY_COLUMNS,
        "stage_velocity": [
            ("pipeline_id", "bigint", "The pipeline"),
            ("pipeline_name", "text", "Its name"),
            ("stage_id", "bigint", "The stage"),
            ("stage_name", "text", "Its name"),
            ("stage_order_nr", "bigint", "The stage's position in its pipeline"),
            ("deals_entered", "bigint", "Deals that entered the stage (each counted once)"),
            ("deals_in_stage", "bigint", "Of them, still there"),
            ("median_days", "double", "Median days in the stage, of the stays that ended"),
            ("p80_days", "double", "80th percentile of the same"),
            (
                "next_stage_rate",
                "double",
                "Share of the deals entered that moved on to a later stage of the pipeline",
            ),
            ("won_rate", "double", "Share of the deals entered that are won now"),
        ],
        "pipeline_daily": [
            ("day", "date", "The day (UTC); the numbers are those at its end"),
            ("pipeline_id", "bigint", "The pipeline"),
            ("pipeline_name", "text", "Its name"),
            ("stage_id", "bigint", "The stage"),
            ("stage_name", "text", "Its name"),
            ("stage_order_nr", "bigint", "The stage's position in its pipeline"),
            ("currency", "text", "Deal currency: values are never summed across currencies"),
            ("open_deals", "bigint", "Deals open in the stage (not deleted, not archived)"),
            ("open_value", "double", "The sum of their value"),
        ],
        "win_rate_monthly": [
            ("month", "date", "First day of the month (UTC) the deals were won or lost"),
            ("pipeline_id", "bigint", "The pipeline"),
            ("pipeline_name", "text", "Its name"),
            ("owner_id", "bigint", "The deals' owner"),
            ("owner_name", "text", "Their name (when `users` is synced)"),
            ("won", "bigint", "Deals won that month"),
            ("lost", "bigint", "Deals lost that month"),
            ("win_rate", "double", "won / (won + lost)"),
        ],
    }
)
VIEW_TEXT = {
    "deals_enriched": "Every deal (deleted and archived included: filter on `is_deleted`,"
    " `is_archived`, or `is_open`) with the names of what it refers to. A name column that"
    " collides with a custom-field column gets `_2`.",
    "open_pipeline_summary": "One row per pipeline, stage and currency over open deals.",
    "deal_stage_history": "From `deal_history`: one row per stay of a deal in a stage while it"
    " was open, consecutive versions in one stage taken together. Times are Pipedrive's own"
    " where it tells them (`stage_change_time`, `won_time`, `lost_time`), else when a run saw"
    " the change. A deal the sync first saw late counts from when it entered that stage, with"
    " the values of that first version; `--backfill-history` fills in what came before.",
    "stage_velocity": "From `deal_stage_history`: one row per pipeline and stage. The rates"
    " count deals still in the stage as not (yet) converted.",
    "pipeline_daily": "From `deal_history`: one row per day, pipeline, stage and currency with"
    " open deals, reconstructed from the versions (a deal counts from when it entered its"
    " stage, as in `deal_stage_history`). Values are summed per currency, never across"
    " currencies; days run up to today.",
    "win_rate_monthly": "From `deals`: deals won and lost per month of closing (`won_time`,"
    " `lost_time`), pipeline and owner; deleted deals left out. No money: see"
    " `open_pipeline_summary` and `pipeline_daily` for values per currency.",
}
# one worked question per view (and the history table): portable SQL, run by the tests on the
# demo warehouse and on PostgreSQL
QUESTIONS: dict[str, tuple[str, str]] = {
    "deal_history": (
        "How many open deals were in each stage on 1 March 2024?",
        """SELECT stage_id, count(*) AS open_deals
FROM deal_history
WHERE valid_from <= CAST('2024-03-01 00:00:00+00' AS TIMESTAMP WITH TIME ZONE)
  AND (valid_to IS NULL OR valid_to > CAST('2024-03-01 00:00:00+00' AS TIMESTAMP WITH TIME ZONE))
  AND status = 'open'
GROUP BY stage_id
ORDER BY stage_id;""",
    ),
    "deals_enriched": (
        "Which are the ten biggest open EUR deals, stage by stage?",
        """SELECT pipeline_name, stage_name, title, value
FROM deals_enriched
WHERE is_open AND currency = 'EUR'
ORDER BY pipeline_name, stage_order_nr, value DESC, id
LIMIT 10;""",
    ),
    "open_pipeline_summary": (
        "What is the open pipeline worth per stage, in each currency?",
        """SELECT pipeline_name, stage_name, currency, open_deals, total_value, weighted_value
FROM open_pipeline_summary
ORDER BY pipeline_name, stage_order_nr, currency;""",
    ),
    "deal_stage_history": (
        "Which open deals have sat in their stage for more than 60 days?",
        """SELECT deal_id, pipeline_name, stage_name, entered_at, round(days_in_stage) AS days
FROM deal_stage_history
WHERE is_current AND days_in_stage > 60
ORDER BY days_in_stage DESC;""",
    ),
    "stage_velocity": (
        "How long do deals stay in each stage of the Sales pipeline, and how many move on?",
        """SELECT stage_name, deals_entered, round(median_days) AS median_days,
       round(p80_days) AS p80_days, round(100 * next_stage_rate) AS next_stage_pct,
       round(100 * won_rate) AS won_pct
FROM stage_velocity
WHERE pipeline_name = 'Sales'
ORDER BY stage_order_nr;""",
    ),
    "pipeline_daily": (
        "How did the open EUR pipeline of Sales move, Monday by Monday?",
        """SELECT day, sum(open_deals) AS open_deals, sum(open_value) AS open_value
FROM pipeline_daily
WHERE pipeline_name = 'Sales' AND currency = 'EUR' AND EXTRACT(DOW FROM day) = 1
GROUP BY day
ORDER BY day DESC
LIMIT 12;""",
    ),
    "win_rate_monthly": (
        "Who wins most in the Sales pipeline, month by month?",
        """SELECT month, owner_name, won, lost, round(100 * win_rate) AS win_pct
FROM win_rate_monthly
WHERE pipeline_name = 'Sales'
ORDER BY month DESC, win_pct DESC, owner_name
LIMIT 20;""",
    ),
}


def _question(name: str) -> list[str]:
    question, sql = QUESTIONS[name]
    return [f"*{question}*", "", "```sql", sql, "```", ""]


def _history_section() -> list[str]:
    from sources.pipedrive.deal_history import CUSTOM_TYPES, TRACKED
    from sources.pipedrive.schema import table_columns

    deal_columns = table_columns("deals")
    tracked = [
        (name, deal_columns[name]["data_type"], HISTORY_NOTES.get(name, f"`deals.{name}`"))
        for name in TRACKED
        if name in deal_columns
    ]
    custom = (
        "(custom fields)",
        "",
        "The columns of the deal custom fields of type "
        + ", ".join(sorted(CUSTOM_TYPES))
        + ", as in `deals`",
    )
    return [
        "### deal_history",
        "",
        "One row per version of a deal (merged on `deal_id`, `valid_from`). Every deal row a"
        " run loads is a candidate version; a candidate whose columns below equal the version"
        " before it is dropped (a title change is not a new version), and `valid_to` closes"
        " each version when the next begins. `--backfill-history` adds the versions from"
        " before the first sync, read back from each deal's changelog. Deals flagged deleted"
        " by id reconciliation get a deleted version.",
        "",
        *_column_table([*HISTORY_COLUMNS, *tracked, custom]),
        "",
        *_question("deal_history"),
    ]


def _descriptions(entity: Any) -> dict[str, str]:
    """Column → description from the OpenAPI spec of the entity's list endpoints."""
    from schemas.generate import list_item_properties

    found: dict[str, str] = {}
    for stream in entity.streams:
        try:
            properties = list_item_properties(entity.api.value, stream.path)
        except (KeyError, FileNotFoundError):
            continue
        for name, prop in properties.items():
            text = prop.get("description") if isinstance(prop, dict) else None
            if text and name not in found:
                found[name] = _clean(str(text))
    return found


def _clean(text: str) -> str:
    """One markdown-table-safe line: HTML dropped, paragraphs joined as sentences."""
    text = re.sub(r"<[^>]+>", "", text)
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    text = " ".join(p if p.endswith((".", ":", "!", "?")) else p + "." for p in paragraphs if p)
    text = text.replace("|", "\\|")
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 1].rstrip() + "…"
        if text.count("`") % 2:  # do not leave a code span open
            text = text.replace("`", "")
    return text


def _types(data_type: str) -> str:
    duck, postgres = TYPES.get(data_type, (data_type.upper(), data_type))
    return f"`{data_type}` | {duck} | {postgres}"


def _column_table(rows: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| column | dlt type | DuckDB | PostgreSQL | description |", "|---|---|---|---|---|"]
    for name, data_type, description in rows:
        if data_type:
            lines.append(f"| `{name}` | {_types(data_type)} | {description} |")
        else:
            lines.append(f"| {name} | | | | {description} |")
    return lines


def _entity_section(entity: Any) -> list[str]:
    from sources.pipedrive.schema import table_columns

    descriptions = _descriptions(entity)
    descriptions.setdefault("is_deleted", "true when the record was deleted in Pipedrive")
    descriptions.setdefault("is_archived", "true when the deal is archived")
    descriptions.setdefault("value_amount", "The lead's value: its amount (from `value`)")
    descriptions.setdefault("value_currency", "The lead's value: its currency (from `value`)")
    described: dict[str, str] = {}
    for stream in entity.streams:
        every = getattr(stream, "refresh_every", None)
        note = f" (at most every {int(every.total_seconds() // 60)} min)" if every else ""
        described.setdefault(stream.path, f"`/{stream.path}`{note}")
    paths = ", ".join(described.values())
    keys = ", ".join(f"`{k}`" for k in entity.key_columns)
    strategy = {
        "updated_since": "incremental on `update_time`",
        "full_refresh": "re-read in full, only changed rows loaded",
        "per_parent": f"read for the `{entity.parent}` records that changed",
    }.get(entity.strategy.value, entity.strategy.value)
    strategy += f"; merged on {keys}"
    lines = [
        f"## {entity.name}",
        "",
        f"Pipedrive API {entity.api.value}: {paths}; {strategy}."
        + (" Part of the default entity set." if entity.default else " Opt-in: `--entities`."),
    ]
    if entity.has_custom_fields:
        lines.append(
            f"Plus one or more columns per custom field of the account"
            f" (`pipedrive-sync fields --entity {entity.singular}`)."
        )
    lines.append("")
    rows = []
    for name, column in table_columns(entity.name).items():
        note = descriptions.get(name, "")
        if column.get("primary_key"):
            note = ("**primary key.** " + note).strip()
        rows.append((name, column.get("data_type", ""), note))
    lines += _column_table(rows)
    return [*lines, ""]


def render() -> str:
    """The whole markdown document."""
    from sources.pipedrive.entities import ENTITIES

    lines = [
        "# Table reference",
        "",
        "<!-- Generated by `pipedrive-sync docs` from schemas/pipedrive.schema.yaml and the"
        " OpenAPI specs; do not edit by hand. -->",
        "",
        "Every table lives in the dataset (schema) `main` of a DuckDB file (the schema any"
        " DuckDB client reads by default; a file an earlier version made keeps its `pipedrive`)"
        " and `pipedrive` on other destinations, unless you chose another with `--dataset`."
        " Types are pinned by the dlt schema"
        " [`schemas/pipedrive.schema.yaml`](../schemas/pipedrive.schema.yaml), so they never"
        " depend on what the first page contained. Timestamps are `TIMESTAMP WITH TIME ZONE`"
        " holding UTC. The bookkeeping tables also have dlt's `_dlt_load_id` and `_dlt_id`.",
        "",
        "**Custom fields** add columns that depend on the account: one or more per field, named"
        " after the field (rules in the README, *Custom fields*). `pipedrive-sync fields` lists"
        " them, or `SELECT * FROM custom_fields`.",
        "",
        "**Labels** of option ids: every standard column whose options the account's `*Fields`"
        " definitions name gets a label column beside it: `<column>_label` (text, e.g."
        " `visible_to_label`, `channel_label`, `industry_label`, `priority_label`,"
        " `health_status_label`) or, for several ids, a JSON array of labels (`label_ids` →"
        " `labels`). A lead's `labels` come from `/v1/leadLabels`, an activity's `type_label`"
        " from `/v1/activityTypes`. Which ones a table has depends on the account (`DESCRIBE"
        " deals`); an id no option has any more (a deleted one) is shown as its id, and a renamed"
        " option is rewritten in the rows already loaded (`custom_field_label_changes`).",
        "",
        "Contents: "
        + ", ".join(f"[`{e.name}`](#{e.name})" for e in ENTITIES)
        + ", [bookkeeping tables](#bookkeeping-tables), [`deal_history`](#deal_history),"
        " [views](#views).",
        "",
    ]
    for entity in ENTITIES:
        lines += _entity_section(entity)
    lines += [
        "## Bookkeeping tables",
        "",
        "### custom_fields",
        "",
        "The custom-field mapping, one row per entity and field (merged on `entity`, `field_key`).",
        "",
        *_column_table(MAPPING_COLUMNS),
        "",
        "### " + ", ".join(f"{e.singular}_fields" for e in ENTITIES if e.has_custom_fields),
        "",
        "Pipedrive's raw field definitions as the `*Fields` endpoints return them, replaced"
        " when re-read (every `fields_refresh_minutes`).",
        "",
        "### custom_field_label_changes",
        "",
        "Audit of option renames applied to rows already loaded (append-only).",
        "",
        *_column_table(LABEL_CHANGE_COLUMNS),
        "",
        f"### {IDENTITY_TABLE}",
        "",
        "One row: which Pipedrive company this dataset holds and which dlt pipeline's state"
        " belongs to it. Written by the first run into the dataset; every run checks it before"
        " writing anything (another company's credentials exit 78).",
        "",
        *_column_table(
            [
                (c["name"], c["data_type"], IDENTITY_DESCRIPTIONS.get(c["name"], ""))
                for c in IDENTITY_COLUMNS
            ]
        ),
        "",
        *_history_section(),
        f"### {RUNS_TABLE}",
        "",
        "One row per entity per run (append-only); `pipedrive-sync status` reads it.",
        "",
        *_column_table(
            [
                (c["name"], c["data_type"], RUNS_DESCRIPTIONS.get(c["name"], ""))
                for c in RUNS_COLUMNS
            ]
        ),
        "",
        "## Views",
        "",
        "Recreated after every run (so new custom-field columns appear), each only when the"
        " tables it reads exist. Plain SQL that works on DuckDB and PostgreSQL. Money is never"
        " summed across currencies: every view with a value has a `currency` column to group"
        " by. Each view below ends with a question it answers in one query.",
        "",
    ]
    for view, columns in VIEW_COLUMNS.items():
        lines += [f"### {view}", "", VIEW_TEXT[view], "", *_column_table(columns), ""]
        lines += _question(view)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path("docs/tables.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
