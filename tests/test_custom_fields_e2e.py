"""Custom fields end to end: readable typed columns, the mapping table, changes across runs."""

from __future__ import annotations

from datetime import date, time
from typing import Any

import orjson
import pytest
from conftest import Syncer, table_rows

ENTITIES = {
    "deals": "deal",
    "persons": "person",
    "organizations": "organization",
    "products": "product",
    "activities": "activity",
}
ADDRESS_PARTS = (
    "street_number",
    "route",
    "sublocality",
    "locality",
    "admin_area_level_1",
    "admin_area_level_2",
    "country",
    "postal_code",
    "subpremise",
    "formatted_address",
)
DUCKDB_TYPES = {
    "varchar": {"": "VARCHAR"},
    "varchar_auto": {"": "VARCHAR"},
    "text": {"": "VARCHAR"},
    "phone": {"": "VARCHAR"},
    "double": {"": "DOUBLE"},
    "monetary": {"": "DOUBLE", "_currency": "VARCHAR"},
    "date": {"": "DATE"},
    "daterange": {"": "DATE", "_until": "DATE"},
    "time": {"": "TIME", "_timezone": "VARCHAR"},
    "timerange": {"": "TIME", "_until": "TIME"},
    "enum": {"": "VARCHAR"},
    "set": {"": "JSON"},
    "user": {"": "BIGINT"},
    "org": {"": "BIGINT"},
    "people": {"": "BIGINT"},
    "address": {"": "VARCHAR", **{f"_{p}": "VARCHAR" for p in ADDRESS_PARTS}},
}


def _mapping(syncer: Syncer, entity: str) -> dict[str, dict[str, Any]]:
    rows = syncer.query(
        "SELECT field_key, field_name, column_name, field_type, options, is_active"
        f" FROM custom_fields WHERE entity = '{entity}'"
    )
    return {
        r[0]: {"name": r[1], "column": r[2], "type": r[3], "options": r[4], "active": r[5]}
        for r in rows
    }


def _labels(definition: Any) -> dict[int, str]:
    return {o.id: o.label for o in definition.options}


def _expected(definition: Any, value: Any) -> dict[str, Any]:
    """What the warehouse must hold for one v2 custom-field value (independent of the sync code)."""
    kind = definition.field_type
    if value is None:
        return {"": None}
    if kind in ("varchar", "varchar_auto", "text", "phone"):
        return {"": value}
    if kind == "double":
        return {"": float(value)}
    if kind == "monetary":
        return {"": float(value["value"]), "_currency": value["currency"]}
    if kind == "date":
        return {"": date.fromisoformat(value)}
    if kind == "daterange":
        return {
            "": date.fromisoformat(value["value"]),
            "_until": date.fromisoformat(value["until"]),
        }
    if kind == "time":
        return {"": time.fromisoformat(value["value"]), "_timezone": value.get("timezone_name")}
    if kind == "timerange":
        return {
            "": time.fromisoformat(value["value"]),
            "_until": time.fromisoformat(value["until"]),
        }
    if kind == "enum":
        return {"": _labels(definition).get(value, str(value))}
    if kind == "set":
        labels = _labels(definition)
        return {"": [labels.get(v, str(v)) for v in value]}
    if kind in ("user", "org", "people"):
        return {"": value}
    if kind == "address":
        return {"": value["value"], **{f"_{p}": value.get(p) for p in ADDRESS_PARTS}}
    raise AssertionError(f"untested field type {kind}")


def _stored(value: Any, duckdb_type: str) -> Any:
    if value is not None and duckdb_type == "JSON":
        return orjson.loads(value)
    return value


@pytest.mark.parametrize("table", list(ENTITIES))
def test_every_custom_field_type_lands_typed_and_readable(syncer: Syncer, table: str) -> None:
    fake = syncer.fake
    assert syncer.run().code == 0
    entity = ENTITIES[table]
    mapping = _mapping(syncer, entity)
    columns = syncer.columns(table)
    rows = table_rows(syncer, table)
    definitions = {d.key: d for d in fake.custom_field_defs(table)}
    assert set(mapping) == set(definitions)
    seen_types = set()
    for key, definition in definitions.items():
        column = mapping[key]["column"]
        assert mapping[key]["name"] == definition.name
        assert mapping[key]["type"] == definition.field_type
        assert mapping[key]["active"] is True
        for suffix, duckdb_type in DUCKDB_TYPES[definition.field_type].items():
            assert columns.get(column + suffix) == duckdb_type, (column + suffix, columns)
        for record in fake.records(table):
            value = (record.get("custom_fields") or {}).get(key)
            row = rows[record["id"]]
            for suffix, want in _expected(definition, value).items():
                got = _stored(row[column + suffix], DUCKDB_TYPES[definition.field_type][suffix])
                assert got == want, (table, record["id"], column + suffix)
            if value is not None:
                seen_types.add(definition.field_type)
    assert seen_types == set(DUCKDB_TYPES), "the fake must carry a value of every type"


def test_names_are_readable_unique_and_never_shadow_standard_columns(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    mapping = _mapping(syncer, "deal")
    column = {key: m["column"] for key, m in mapping.items()}
    assert column[fake.field_key("deals", "Título")] == "titulo"
    assert column[fake.field_key("deals", "Größe")] == "grosse"
    assert column[fake.field_key("deals", "价格")] == "jiage"
    assert column[fake.field_key("deals", "Title")] == "title_custom"
    sources = sorted(column[k] for k in fake.field_keys("deals", "Source"))
    assert sources == ["source", "source_2"]
    emoji_key = fake.field_key("deals", "🔥🔥")
    assert column[emoji_key] == f"field_{emoji_key[:8]}"
    # the standard title is untouched
    deals = table_rows(syncer, "deals")
    for record in fake.records("deals"):
        assert deals[record["id"]]["title"] == record["title"]
    rows = (
        syncer.query("SELECT customer_type FROM deals LIMIT 0")
        if "customer_type" in syncer.columns("deals")
        else []
    )
    assert rows == []


def test_deleted_option_ids_are_kept_as_text(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    key = fake.field_key_for_type("deals", "enum")
    stale = fake.stale_option_ids("deals", key)
    assert stale
    column = _mapping(syncer, "deal")[key]["column"]
    stored = {r[0] for r in syncer.query(f"SELECT DISTINCT {column} FROM deals")}
    holders = [r for r in fake.records("deals") if (r["custom_fields"] or {}).get(key) in stale]
    assert holders
    assert {str(v) for v in stale} & stored


def test_mapping_and_raw_definition_tables_are_complete(syncer: Syncer) -> None:
    syncer.run()
    counts = dict(syncer.query("SELECT entity, count(*) FROM custom_fields GROUP BY entity"))
    for table, entity in ENTITIES.items():
        assert counts[entity] == len(syncer.fake.custom_field_defs(table))
        raw = syncer.query(f"SELECT count(*) FROM {entity}_fields")[0][0]
        assert raw == len(syncer.fake.field_definitions(table))
    options = syncer.query("SELECT options FROM custom_fields WHERE field_type = 'enum' LIMIT 1")
    parsed = orjson.loads(options[0][0])
    assert parsed and {"id", "label"} <= set(parsed[0])


def test_a_field_added_in_pipedrive_becomes_a_column_on_the_next_run(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    key = fake.add_field("deals", "Customer Type", "enum", options=["Enterprise", "SMB"])
    option = fake.field("deals", key).options[0]
    deal_id = fake.records("deals")[0]["id"]
    fake.update("deals", deal_id, custom_fields={key: option.id})
    result = syncer.run()  # definitions are cached, but the unknown key forces a refresh
    assert result.code == 0
    assert syncer.columns("deals")["customer_type"] == "VARCHAR"
    assert syncer.query(f"SELECT customer_type FROM deals WHERE id = {deal_id}") == [
        ("Enterprise",)
    ]
    assert _mapping(syncer, "deal")[key]["column"] == "customer_type"


def _refreshed_mapping(syncer: Syncer, key: str) -> dict[str, Any]:
    """A deal field's mapping row after a run that re-read the field definitions."""
    syncer.run(options={"force_fields_refresh": True})
    return _mapping(syncer, "deal")[key]


def test_a_renamed_field_keeps_its_column_and_the_mapping_shows_the_new_name(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    syncer.run()
    key = fake.field_key("deals", "Budget")
    fake.rename_field("deals", key, "Annual Budget")
    mapping = _refreshed_mapping(syncer, key)
    assert mapping["column"] == "budget"
    assert mapping["name"] == "Annual Budget"
    assert "annual_budget" not in syncer.columns("deals")


def test_renamed_option_labels_are_rewritten_in_loaded_rows(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    enum_key = fake.field_key_for_type("deals", "enum")
    set_key = fake.field_key_for_type("deals", "set")
    enum_option = fake.field("deals", enum_key).options[0]
    set_option = fake.field("deals", set_key).options[0]
    old_enum_label, old_set_label = enum_option.label, set_option.label
    fake.rename_option("deals", enum_key, enum_option.id, "Renamed enum")
    fake.rename_option("deals", set_key, set_option.id, "Renamed set")
    result = syncer.run(options={"force_fields_refresh": True})
    assert result.labels_rewritten == 2
    mapping = _mapping(syncer, "deal")
    enum_col, set_col = mapping[enum_key]["column"], mapping[set_key]["column"]
    deals = table_rows(syncer, "deals")
    for record in fake.records("deals"):
        fields = record["custom_fields"] or {}
        if fields.get(enum_key) == enum_option.id:
            assert deals[record["id"]][enum_col] == "Renamed enum"
        if set_option.id in (fields.get(set_key) or []):
            assert "Renamed set" in orjson.loads(deals[record["id"]][set_col])
    stale = syncer.query(
        f"SELECT count(*) FROM deals WHERE {enum_col} = '{old_enum_label}'"
        f" OR CAST({set_col} AS VARCHAR) LIKE '%\"{old_set_label}\"%'"
    )
    assert stale == [(0,)]
    # applied once: a later run does not rewrite again
    assert syncer.run().labels_rewritten == 0


def test_a_deleted_field_keeps_its_column_and_history(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    key = fake.field_key("deals", "Project code")
    before = syncer.query("SELECT count(project_code) FROM deals")[0][0]
    assert before > 0
    fake.delete_field("deals", key)
    mapping = _refreshed_mapping(syncer, key)
    assert mapping["active"] is False
    assert mapping["column"] == "project_code"
    assert mapping["name"] == "Project code"
    assert syncer.query("SELECT count(project_code) FROM deals")[0][0] == before


def test_a_new_option_gets_its_label_at_once_and_deleted_ones_cost_nothing_later(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    syncer.run()
    key = fake.field_key_for_type("deals", "enum")
    option_id = fake.add_option("deals", key, "Brand new option")
    deal_id = fake.records("deals")[0]["id"]
    fake.update("deals", deal_id, custom_fields={key: option_id})
    syncer.run()  # the definitions are cached, but the unknown option forces a refresh
    column = _mapping(syncer, "deal")[key]["column"]
    assert syncer.query(f"SELECT {column} FROM deals WHERE id = {deal_id}") == [
        ("Brand new option",)
    ]
    # a record holding a deleted option triggers one refresh, then is remembered
    stale = fake.stale_option_ids("deals", key)[0]
    for _ in range(2):
        fake.update("deals", deal_id, custom_fields={key: stale})
        fake.reset_requests()
        syncer.run()
        refreshes = [r for r in fake.requests if r.endpoint == "dealFields"]
        assert len(refreshes) <= 1
    assert refreshes == []
    assert syncer.query(f"SELECT {column} FROM deals WHERE id = {deal_id}") == [(str(stale),)]


def test_a_renamed_option_and_a_new_field_in_one_run_both_load(syncer: Syncer) -> None:
    """Healing the deals table for the new column must not mark the schema as stored before
    the load has created the label-changes table (its load failed: no such table)."""
    fake = syncer.fake
    syncer.run()
    enum_key = fake.field_key_for_type("deals", "enum")
    option = fake.field("deals", enum_key).options[0]
    fake.rename_option("deals", enum_key, option.id, "Renamed option")
    added = fake.add_field("deals", "Fresh Score", "double")
    deal = fake.records("deals", archived=False)[0]["id"]
    fake.update("deals", deal, custom_fields={added: 7.5})
    result = syncer.run(options={"refresh_all": False})
    assert result.code == 0, result.message
    assert result.labels_rewritten == 1
    assert syncer.query(f"SELECT fresh_score FROM deals WHERE id = {deal}") == [(7.5,)]
