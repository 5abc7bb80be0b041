"""Generate `schemas/pipedrive.schema.yaml` (the dlt schema pinning standard column types).

Column names and base types come from the official OpenAPI specs in `schemas/openapi/`; the
overrides below give timestamps, dates and times their real types (the spec types them as plain
strings). Run `make schema-docs` after changing the entity table or the overrides; a test fails
when the committed file is out of date.

    python -m schemas.generate          # rewrite the schema file
    python -m schemas.generate --check  # exit 1 if it is stale
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SCHEMA_FILE = HERE / "pipedrive.schema.yaml"
SPECS = {"v1": HERE / "openapi" / "pipedrive-v1.yaml", "v2": HERE / "openapi" / "pipedrive-v2.yaml"}

# string properties whose content is not free text
TIMESTAMP_NAMES = {
    "add_time",
    "update_time",
    "stage_change_time",
    "close_time",
    "won_time",
    "lost_time",
    "first_won_time",
    "marked_as_done_time",
    "status_change_time",
    "archive_time",
    "last_incoming_mail_time",
    "last_outgoing_mail_time",
    "last_login",
    "created",
    "modified",
    "last_used_time",
    "time",
}
DATE_NAMES = {
    "expected_close_date",
    "due_date",
    "start_date",
    "end_date",
    "billing_start_date",
    "birthday",
}
TIME_NAMES = {"due_time"}
# columns every synced table has, whatever the spec says
EXTRA_COLUMNS: dict[str, dict[str, Any]] = {
    "is_deleted": {"data_type": "bool", "nullable": True},
}
# columns the sync derives (see sources/pipedrive/labels.py)
TABLE_EXTRA_COLUMNS: dict[str, dict[str, dict[str, Any]]] = {
    "leads": {
        "value_amount": {"data_type": "double", "nullable": True},
        "value_currency": {"data_type": "text", "nullable": True},
    },
}
SKIP_PROPERTIES = {"custom_fields"}  # normalized into their own columns


@cache
def load_spec(version: str) -> dict[str, Any]:
    with SPECS[version].open("rb") as handle:
        return yaml.load(handle, Loader=yaml.CSafeLoader)


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _properties(spec: dict[str, Any], node: Any) -> dict[str, Any]:
    node = _resolve(spec, node)
    if not isinstance(node, dict):
        return {}
    merged: dict[str, Any] = {}
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in node.get(key, []):
            merged.update(_properties(spec, sub))
    for name, prop in (node.get("properties") or {}).items():
        merged[name] = _resolve(spec, prop)
    return merged


def list_item_properties(version: str, path: str, data_key: str | None = None) -> dict[str, Any]:
    """The properties of one item of a list endpoint's 200 response, per the official spec."""
    spec = load_spec(version)
    operation = spec["paths"]["/" + path]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    data = _resolve(spec, _properties(spec, schema).get("data"))
    if data_key is not None:
        data = _resolve(spec, _properties(spec, data).get(data_key))
    items = data.get("items") if isinstance(data, dict) and data.get("type") == "array" else data
    return _properties(spec, items)


def token_cost(version: str, path: str) -> int | None:
    """The spec's `x-token-cost` for GET on `path`."""
    operation = load_spec(version)["paths"]["/" + path]["get"]
    cost = operation.get("x-token-cost")
    return int(cost) if cost is not None else None


def _type_of(name: str, prop: dict[str, Any]) -> str:
    kind = prop.get("type")
    if kind is None and "allOf" in prop:
        kinds = {_resolve({}, p).get("type") for p in prop["allOf"] if isinstance(p, dict)}
        kind = next(iter(kinds - {None}), "string")
    fmt = prop.get("format")
    if kind in ("object", "array"):
        return "json"
    if kind == "integer":
        return "bigint"
    if kind == "number":
        return "double"
    if kind == "boolean":
        return "bool"
    if name in TIME_NAMES:
        return "time"
    if fmt == "date-time" or name in TIMESTAMP_NAMES:
        return "timestamp"
    if fmt == "date" or name in DATE_NAMES:
        return "date"
    return "text"


def table_columns(entity: Any) -> dict[str, dict[str, Any]]:
    """Standard columns of one entity's table (union over its streams), spec order."""
    columns: dict[str, dict[str, Any]] = {}
    for stream in entity.streams:
        properties = list_item_properties(entity.api.value, stream.path, stream.data_key)
        for name, prop in properties.items():
            if name in SKIP_PROPERTIES or name in columns:
                continue
            columns[name] = {"name": name, "data_type": _type_of(name, prop), "nullable": True}
        for name, value in stream.set_columns.items():
            kind = "bool" if isinstance(value, bool) else "text"
            columns.setdefault(name, {"name": name, "data_type": kind, "nullable": True})
    if entity.parent_key:
        columns.setdefault(entity.parent_key, {"name": entity.parent_key, "data_type": "bigint"})
    if entity.synthetic_key:
        columns.setdefault(
            entity.synthetic_key, {"name": entity.synthetic_key, "data_type": "text"}
        )
    for name, column in {**EXTRA_COLUMNS, **TABLE_EXTRA_COLUMNS.get(entity.name, {})}.items():
        columns.setdefault(name, {"name": name, **column})
    for key in entity.key_columns:
        columns[key].update(nullable=False, primary_key=True)
    if entity.cursor_field in columns and columns[entity.cursor_field]["data_type"] == "timestamp":
        columns[entity.cursor_field]["dedup_sort"] = "desc"
    return columns


def build_schema() -> Any:
    """The dlt `Schema` named `pipedrive` with one table per entity and its standard columns."""
    from dlt.common.schema import Schema
    from dlt.common.schema.utils import new_table

    from sources.pipedrive.entities import ENTITIES

    schema = Schema("pipedrive")
    for entity in ENTITIES:
        table = new_table(
            entity.name,
            write_disposition="merge",
            columns=list(table_columns(entity).values()),  # type: ignore[arg-type]
        )
        paths = ", ".join(f"/{s.path}" for s in entity.streams)
        table["description"] = f"Pipedrive {entity.name} (API {entity.api.value}: {paths})"
        schema.update_table(table)
    return schema


def comparable(text: str) -> Any:
    """What must match between the committed schema and a fresh render: the tables.

    (The rest — version hash, normalizer settings — follows dlt's process-wide configuration.)
    """
    return yaml.safe_load(text).get("tables")


def render() -> str:
    header = (
        "# Generated by `python -m schemas.generate` from schemas/openapi/*.yaml and the entity\n"
        "# table. Do not edit by hand: change schemas/generate.py and regenerate.\n"
    )
    return header + build_schema().to_pretty_yaml(remove_defaults=True)


README = HERE.parent / "README.md"
ENTITY_BLOCK = ("<!-- entities:start -->\n", "<!-- entities:end -->\n")


def readme_with_entity_table(readme: str) -> str:
    """The README with its entity table (between the markers) regenerated."""
    from sources.pipedrive.entities import describe_entities

    start, end = ENTITY_BLOCK
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}{describe_entities()}{end}{tail}"


def main(argv: list[str]) -> int:
    text = render()
    readme = README.read_text() if README.exists() else ""
    if "--check" in argv:
        stale = []
        if not SCHEMA_FILE.exists() or comparable(SCHEMA_FILE.read_text()) != comparable(text):
            stale.append("schemas/pipedrive.schema.yaml")
        if readme and readme != readme_with_entity_table(readme):
            stale.append("the README's entity table")
        if stale:
            print(f"{' and '.join(stale)} stale: run `make schema-docs`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE}")
    if ENTITY_BLOCK[0] in readme:
        README.write_text(readme_with_entity_table(readme))
        print(f"updated the entity table in {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
