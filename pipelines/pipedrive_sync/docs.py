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
VIEW_COLUMNS = {
    "deals_enriched": [
        ("(every column of deals)", "", "Standard and custom-field columns, as in `deals`"),
        ("pipeline_name", "text", "pipelines.name of the deal's pipeline"),
        ("stage_name", "text", "stages.name of the deal's stage"),
        ("owner_name", "text", "users.name of the owner — only when a `users` table is synced"),
        ("organization_name", "text", "organizations.name of the linked organization"),
        ("person_name", "text", "persons.name of the linked person"),
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
VIEW_TEXT = {
    "deals_enriched": "Every deal (deleted and archived included: filter on `is_deleted`,"
    " `is_archived`) with the names of what it refers to. A name column that collides with a"
    " custom-field column gets `_2`.",
    "open_pipeline_summary": "One row per pipeline, stage and currency over open deals.",
}


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
        "Contents: "
        + ", ".join(f"[`{e.name}`](#{e.name})" for e in ENTITIES)
        + ", [bookkeeping tables](#bookkeeping-tables), [views](#views).",
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
        " tables it reads exist. Plain SQL that works on DuckDB and PostgreSQL.",
        "",
    ]
    for view, columns in VIEW_COLUMNS.items():
        lines += [f"### {view}", "", VIEW_TEXT[view], "", *_column_table(columns), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path("docs/tables.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
