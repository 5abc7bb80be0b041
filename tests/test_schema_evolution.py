"""Schema evolution as real accounts do it: fields and options change between (and during) runs.

Every scenario syncs through the fake server across runs WITHOUT a forced field refresh (the
definitions are cached for hours; only what records carry makes a run re-read them), and ends
exact: the warehouse equals the fake, column names of existing fields never move, nothing is
left pending and a later run succeeds.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from conftest import CORE_ENTITIES, Syncer, all_deals, assert_matches_fake, table_rows
from test_custom_fields_e2e import DUCKDB_TYPES, _expected

from pipelines.pipedrive_sync.runner import make_pipeline

CUSTOM_TABLES = {
    "deals": "deal",
    "persons": "person",
    "organizations": "organization",
    "products": "product",
    "activities": "activity",
}


def mapping(syncer: Syncer, entity: str) -> dict[str, dict[str, Any]]:
    """field key → its row of the `custom_fields` mapping table."""
    rows = syncer.query(
        "SELECT field_key, field_name, column_name, field_type, is_active"
        f" FROM custom_fields WHERE entity = '{entity}'"
    )
    return {r[0]: {"name": r[1], "column": r[2], "type": r[3], "active": r[4]} for r in rows}


def columns_of(syncer: Syncer, entity: str = "deal") -> dict[str, str]:
    """field key → column, to check that names stay pinned."""
    return {key: m["column"] for key, m in mapping(syncer, entity).items()}


def _stored(value: Any, duckdb_type: str) -> Any:
    if value is not None and duckdb_type == "JSON":
        return orjson.loads(value)
    return value


def assert_custom_fields_exact(syncer: Syncer, table: str) -> None:
    """Every active custom field of `table` is mapped, typed and holds the fake's values."""
    fake = syncer.fake
    entity = CUSTOM_TABLES[table]
    found = mapping(syncer, entity)
    definitions = {d.key: d for d in fake.custom_field_defs(table)}
    active = {key for key, m in found.items() if m["active"]}
    assert active == set(definitions), f"{table}: active mapping differs from the fake"
    columns = syncer.columns(table)
    rows = table_rows(syncer, table)
    records = all_deals(fake) if table == "deals" else fake.records(table)
    for key, definition in definitions.items():
        column = found[key]["column"]
        assert found[key]["name"] == definition.name, (table, key)
        assert found[key]["type"] == definition.field_type, (table, key)
        for suffix, duckdb_type in DUCKDB_TYPES[definition.field_type].items():
            assert columns.get(column + suffix) == duckdb_type, (table, column + suffix, columns)
        for record in records:
            value = (record.get("custom_fields") or {}).get(key)
            row = rows[record["id"]]
            for suffix, want in _expected(definition, value).items():
                duckdb_type = DUCKDB_TYPES[definition.field_type][suffix]
                got = _stored(row[column + suffix], duckdb_type)
                assert got == want, (table, record["id"], column + suffix, got, want)


def assert_exact(syncer: Syncer) -> None:
    """The warehouse equals the fake: standard columns of every core table, custom fields of
    every custom-field table; nothing is left pending."""
    fake = syncer.fake
    for table in CORE_ENTITIES:
        records = all_deals(fake) if table == "deals" else fake.records(table)
        assert_matches_fake(syncer, table, records)
        if table in CUSTOM_TABLES:
            assert_custom_fields_exact(syncer, table)
    pipeline = make_pipeline(syncer.settings())
    assert not pipeline.has_pending_data, "a package was left pending"


def assert_pinned(syncer: Syncer, before: dict[str, str], entity: str = "deal") -> None:
    """Fields that had a column keep it."""
    after = columns_of(syncer, entity)
    moved = {
        key: (column, after.get(key)) for key, column in before.items() if after.get(key) != column
    }
    assert not moved, f"column names moved: {moved}"


def finish(syncer: Syncer, pinned: dict[str, str]) -> None:
    """Exact now, names pinned, and a later run (nothing changed) succeeds and stays exact."""
    assert_exact(syncer)
    assert_pinned(syncer, pinned)
    result = syncer.run()
    assert result.code == 0, result.message
    assert_exact(syncer)
    assert_pinned(syncer, pinned)


def test_option_rename_and_a_new_field_in_one_run(syncer: Syncer) -> None:
    fake = syncer.fake
    assert syncer.run().code == 0
    pinned = columns_of(syncer)
    enum_key = fake.field_key_for_type("deals", "enum")
    option = fake.field("deals", enum_key).options[0]
    old_label = option.label
    fake.rename_option("deals", enum_key, option.id, "Renamed option")
    key = fake.add_field("deals", "Customer Type", "enum", options=["Enterprise", "SMB"])
    deal_id = fake.records("deals")[0]["id"]
    fake.update("deals", deal_id, custom_fields={key: fake.field("deals", key).options[0].id})
    result = syncer.run()  # the unknown key makes the run re-read the definitions mid-run
    assert result.code == 0, result.message
    assert result.labels_rewritten == 1
    assert columns_of(syncer)[key] == "customer_type"
    column = pinned[enum_key]
    assert syncer.query(f"SELECT count(*) FROM deals WHERE {column} = '{old_label}'") == [(0,)]
    finish(syncer, pinned)


@pytest.mark.parametrize(
    "table", ["custom_fields", "deal_fields", "custom_field_label_changes", "sync_runs"]
)
def test_a_table_dlt_believes_exists_is_recreated_when_the_source_emits_into_it(
    syncer: Syncer, table: str
) -> None:
    """dlt records a schema version as migrated and never looks again: a table missing from
    the destination (dropped by hand, or never created by the load that recorded the version)
    must not fail this or any later load."""
    fake = syncer.fake
    enum_key = fake.field_key_for_type("deals", "enum")
    option = fake.field("deals", enum_key).options[1]
    # one entity at a time: the schema version then stays the same from run to run
    options = {"force_fields_refresh": True, "parallel_entities": 1}
    assert syncer.run(options=options).code == 0
    fake.rename_option("deals", enum_key, option.id, "First rename")
    assert syncer.run(options=options).code == 0
    assert syncer.run(options=options).code == 0
    versions = syncer.query("SELECT count(*) FROM _dlt_version")
    syncer.execute(f"DROP TABLE {table}")
    fake.rename_option("deals", enum_key, option.id, "Second rename")
    result = syncer.run(options=options)
    assert result.code == 0, result.message
    assert syncer.query("SELECT count(*) FROM _dlt_version") == versions, "not the same schema"
    assert syncer.query(f"SELECT count(*) FROM {table}")[0][0] > 0
    assert_exact(syncer)
    assert syncer.run().code == 0
