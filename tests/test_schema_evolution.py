"""Schema evolution as real accounts do it: fields and options change between (and during) runs.

Every scenario syncs through the fake server across runs WITHOUT a forced field refresh (the
definitions are cached for hours; only what records carry makes a run re-read them), and ends
exact: the warehouse equals the fake, column names of existing fields never move, nothing is
left pending and a later run succeeds.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from conftest import (
    CORE_ENTITIES,
    SMALL_SCALE,
    TOKEN,
    Syncer,
    all_deals,
    assert_matches_fake,
    table_rows,
)
from test_custom_fields_e2e import DUCKDB_TYPES, _expected
from test_custom_fields_e2e import _mapping as mapping

from pipelines.pipedrive_sync.runner import make_pipeline
from sources.pipedrive_fake import FakePipedrive

CUSTOM_TABLES = {
    "deals": "deal",
    "persons": "person",
    "organizations": "organization",
    "products": "product",
    "activities": "activity",
}


def columns_of(syncer: Syncer, entity: str = "deal") -> dict[str, str]:
    """field key → column, to check that names stay pinned."""
    return {key: m["column"] for key, m in mapping(syncer, entity).items()}


def _stored(value: Any, duckdb_type: str) -> Any:
    if value is not None and duckdb_type == "JSON":
        return orjson.loads(value)
    return value


Removed = dict[str, dict[int, str]]  # field key → option id → label, of options deleted later


def _as_known(definition: Any, removed: Removed) -> Any:
    """The definition with the options the warehouse saw before they were deleted: values
    holding them keep that label."""
    extra = [
        SimpleNamespace(id=i, label=label) for i, label in removed.get(definition.key, {}).items()
    ]
    return SimpleNamespace(
        field_type=definition.field_type, options=[*(definition.options or ()), *extra]
    )


def assert_custom_fields_exact(syncer: Syncer, table: str, removed: Removed | None = None) -> None:
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
            for suffix, want in _expected(_as_known(definition, removed or {}), value).items():
                duckdb_type = DUCKDB_TYPES[definition.field_type][suffix]
                got = _stored(row[column + suffix], duckdb_type)
                assert got == want, (table, record["id"], column + suffix, got, want)


def assert_exact(syncer: Syncer, removed: Removed | None = None) -> None:
    """The warehouse equals the fake: standard columns of every core table, custom fields of
    every custom-field table; nothing is left pending."""
    fake = syncer.fake
    for table in CORE_ENTITIES:
        records = all_deals(fake) if table == "deals" else fake.records(table)
        assert_matches_fake(syncer, table, records)
        if table in CUSTOM_TABLES:
            assert_custom_fields_exact(syncer, table, removed)
    pipeline = make_pipeline(syncer.settings())
    assert not pipeline.has_pending_data, "a package was left pending"


def assert_pinned(syncer: Syncer, before: dict[str, str], entity: str = "deal") -> None:
    """Fields that had a column keep it."""
    after = columns_of(syncer, entity)
    moved = {
        key: (column, after.get(key)) for key, column in before.items() if after.get(key) != column
    }
    assert not moved, f"column names moved: {moved}"


def _first_sync(syncer: Syncer, **run: Any) -> dict[str, str]:
    """The first sync, which succeeds; returns its columns (field key → column), to pin."""
    assert syncer.run(**run).code == 0
    return columns_of(syncer)


def finish(syncer: Syncer, pinned: dict[str, str], removed: Removed | None = None) -> None:
    """Exact now, names pinned, and a later run (nothing changed) succeeds and stays exact."""
    assert_exact(syncer, removed)
    assert_pinned(syncer, pinned)
    result = syncer.run()
    assert result.code == 0, result.message
    assert_exact(syncer, removed)
    assert_pinned(syncer, pinned)


@pytest.mark.parametrize("chunked", [False, True], ids=["one-load", "in-a-later-chunk"])
def test_option_rename_and_a_new_field_in_one_run(syncer: Syncer, chunked: bool) -> None:
    """The run that wedged every later one: the new field first appears mid-run (in a later
    chunk, too), the definitions are re-read then, and the label change is emitted last."""
    fake = syncer.fake
    options = {"chunk_pages": 1} if chunked else {}
    pinned = _first_sync(syncer, options=options)
    enum_key = fake.field_key_for_type("deals", "enum")
    option = fake.field("deals", enum_key).options[0]
    old_label = option.label
    fake.rename_option("deals", enum_key, option.id, "Renamed option")
    key = fake.add_field("deals", "Customer Type", "enum", options=["Enterprise", "SMB"])
    ids = _deal_ids(fake, 80) if chunked else _deal_ids(fake, 1)
    for deal_id in ids[:-1]:  # pages the run reads before it meets the new field
        fake.update("deals", deal_id, title=f"changed before {deal_id}")
    fake.update("deals", ids[-1], custom_fields={key: fake.field("deals", key).options[0].id})
    result = syncer.run(options=options)  # the unknown key: definitions re-read mid-run
    assert result.code == 0, result.message
    assert result.chunks == (2 if chunked else 1)
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


# -- scenarios ----------------------------------------------------------------------------------
# the cached definitions have expired (6 hours later): what every account's next run does
LATER = {"options": {"fields_refresh": timedelta(0)}}


def _deal_ids(fake: Any, count: int) -> list[int]:
    return [r["id"] for r in fake.records("deals")[:count]]


def test_an_option_deleted_while_rows_still_use_it(syncer: Syncer) -> None:
    fake = syncer.fake
    pinned = _first_sync(syncer)
    key = fake.field_key_for_type("deals", "enum")
    option = fake.field("deals", key).options[0]
    holders = [r["id"] for r in fake.records("deals") if r["custom_fields"][key] == option.id]
    assert len(holders) >= 2
    fake.delete_option("deals", key, option.id)  # records keep holding its id
    fake.update("deals", holders[0], title="re-read after the deletion")
    assert syncer.run().code == 0
    assert syncer.run(**LATER).code == 0
    fake.update("deals", holders[1], title="re-read after the refresh")
    assert syncer.run().code == 0
    column = pinned[key]
    labels = {
        r[0] for r in syncer.query(f"SELECT {column} FROM deals WHERE id IN {tuple(holders)}")
    }
    assert labels == {option.label}, "rows holding a deleted option keep its last known label"
    finish(syncer, pinned, removed={key: {option.id: option.label}})


def test_a_field_deleted_and_a_new_one_created_with_the_same_name(syncer: Syncer) -> None:
    fake = syncer.fake
    pinned = _first_sync(syncer)
    old = fake.field_key("deals", "Project code")
    history = syncer.query("SELECT count(project_code) FROM deals")[0][0]
    fake.delete_field("deals", old)
    new = fake.add_field("deals", "Project code", "varchar")
    for n, deal_id in enumerate(_deal_ids(fake, 5)):
        fake.update("deals", deal_id, custom_fields={new: f"P-{n}"})
    assert syncer.run().code == 0  # the new key makes the run re-read the definitions
    found = mapping(syncer, "deal")
    assert found[old]["column"] == "project_code" and found[old]["active"] is False
    assert found[new]["column"] == "project_code_2" and found[new]["active"] is True
    assert syncer.query("SELECT count(project_code) FROM deals")[0][0] == history
    finish(syncer, pinned)


@pytest.mark.parametrize(
    ("old_type", "new_type"), [("varchar", "enum"), ("enum", "set"), ("double", "monetary")]
)
def test_a_field_changes_its_type(syncer: Syncer, old_type: str, new_type: str) -> None:
    fake = syncer.fake
    pinned = _first_sync(syncer)
    key = fake.field_key_for_type("deals", old_type)
    labels = None
    if old_type == "varchar":  # the labels of the values most records hold
        values = [r["custom_fields"][key] for r in fake.records("deals")]
        labels = sorted({v for v in values if v}, key=values.count)[-3:]
    fake.change_field_type("deals", key, new_type, labels)
    fake.update("deals", _deal_ids(fake, 1)[0], title="re-read after the type change")
    assert syncer.run().code == 0
    assert syncer.run(**LATER).code == 0
    assert_exact(syncer)
    del pinned[key]  # a column cannot change its type: the field may get a new one
    finish(syncer, pinned)


def _renamed(fake: Any, renames: dict[str, str]) -> dict[str, str]:
    """Deal fields renamed at once (old name → new name); returns old name → field key."""
    keys = {name: fake.field_key("deals", name) for name in renames}
    for name, new_name in renames.items():
        fake.rename_field("deals", keys[name], new_name)
    return keys


def test_a_field_renamed_to_another_fields_former_name(syncer: Syncer) -> None:
    fake = syncer.fake
    pinned = _first_sync(syncer)
    _renamed(fake, {"Budget": "Budget (old)", "Discount rate": "Budget"})
    new = fake.add_field("deals", "Discount rate", "double")
    fake.update("deals", _deal_ids(fake, 1)[0], custom_fields={new: 0.25})
    assert syncer.run().code == 0
    assert columns_of(syncer)[new] == "discount_rate_2"
    assert syncer.run(**LATER).code == 0
    finish(syncer, pinned)


def test_two_fields_swap_names(syncer: Syncer) -> None:
    fake = syncer.fake
    pinned = _first_sync(syncer)
    priority = _renamed(fake, {"Priority": "Channels", "Channels": "Priority"})["Priority"]
    fake.update("deals", _deal_ids(fake, 1)[0], title="changed with the swap")
    assert syncer.run().code == 0
    assert syncer.run(**LATER).code == 0
    found = mapping(syncer, "deal")
    assert found[priority]["name"] == "Channels" and found[priority]["column"] == "priority"
    finish(syncer, pinned)


@pytest.mark.parametrize("columnar", [True, False])
def test_a_new_field_only_the_first_page_of_a_run_carries(syncer: Syncer, columnar: bool) -> None:
    fake = syncer.fake
    options = {"chunk_pages": 1, "columnar": columnar}
    pinned = _first_sync(syncer, options=options)
    key = fake.add_field("deals", "Lead score", "double")
    ids = _deal_ids(fake, 120)
    fake.update("deals", ids[0], custom_fields={key: 42.5})  # the oldest change: first page
    for deal_id in ids[1:110]:  # two more pages (50 a page), without the new field's value
        fake.update("deals", deal_id, title=f"later change {deal_id}")
    result = syncer.run(options=options)
    assert result.code == 0, result.message
    assert result.chunks >= 3
    assert columns_of(syncer)[key] == "lead_score"
    assert syncer.query(f"SELECT lead_score FROM deals WHERE id = {ids[0]}") == [(42.5,)]
    finish(syncer, pinned)


def test_a_field_added_and_removed_between_two_runs(syncer: Syncer) -> None:
    fake = syncer.fake
    pinned = _first_sync(syncer)
    brief = fake.add_field("deals", "Short lived", "varchar")
    ids = _deal_ids(fake, 3)
    fake.update("deals", ids[0], custom_fields={brief: "gone before the next run"})
    fake.delete_field("deals", brief)
    assert syncer.run().code == 0
    assert brief not in columns_of(syncer)
    # seen by one run, deleted before the next: the column keeps what was loaded
    seen = fake.add_field("deals", "Seen once", "varchar")
    fake.update("deals", ids[1], custom_fields={seen: "loaded once"})
    assert syncer.run().code == 0
    fake.delete_field("deals", seen)
    fake.update("deals", ids[2], title="changed after the deletion")
    assert syncer.run(**LATER).code == 0
    found = mapping(syncer, "deal")[seen]
    assert found["active"] is False and found["column"] == "seen_once"
    assert syncer.query(f"SELECT seen_once FROM deals WHERE id = {ids[1]}") == [("loaded once",)]
    finish(syncer, pinned)


def test_three_hundred_custom_fields_on_one_entity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakePipedrive(
        token=TOKEN, seed=5, scale=dict(SMALL_SCALE), custom_field_count=300
    ) as fake:
        syncer = Syncer(fake, tmp_path, monkeypatch)
        assert syncer.run().code == 0
        assert len(mapping(syncer, "deal")) == 300
        pinned = columns_of(syncer)
        key = fake.field_key_for_type("deals", "enum")
        option = fake.field("deals", key).options[0]
        fake.rename_option("deals", key, option.id, "Renamed among 300")
        extra = fake.add_field("deals", "Field 301", "monetary")
        fake.update(
            "deals", _deal_ids(fake, 1)[0], custom_fields={extra: {"value": 5, "currency": "EUR"}}
        )
        assert syncer.run().code == 0
        assert len(mapping(syncer, "deal")) == 301
        finish(syncer, pinned)


def test_a_new_field_deleted_before_the_run_could_read_its_definition(syncer: Syncer) -> None:
    """The plausible worst of "only the first page carries it": the first page carries a new
    field, which is deleted in Pipedrive just before the run re-reads the definitions (so the
    run never learns its name or type). Pipedrive no longer has it, nor its values: neither
    does the warehouse, and nothing fails."""
    fake = syncer.fake
    pinned = _first_sync(syncer)
    key = fake.add_field("deals", "Flash", "varchar")
    ids = _deal_ids(fake, 120)
    fake.update("deals", ids[0], custom_fields={key: "on the first page"})
    for deal_id in ids[1:110]:
        fake.update("deals", deal_id, title=f"later change {deal_id}")

    def delete_before_the_refresh(record: Any) -> None:
        if record.path == "/api/v2/dealFields":
            fake.on_request(None)
            fake.delete_field("deals", key)

    fake.on_request(delete_before_the_refresh)
    result = syncer.run()
    assert result.code == 0, result.message
    assert fake.field("deals", key).deleted, "the field was deleted mid-run"
    assert key not in mapping(syncer, "deal")
    assert "flash" not in syncer.columns("deals")
    assert syncer.run(**LATER).code == 0
    finish(syncer, pinned)


def test_a_new_field_no_record_uses_yet(syncer: Syncer) -> None:
    """The most common change of all: a field is added; its column is there at the next
    refresh of the definitions, before any record holds a value."""
    fake = syncer.fake
    pinned = _first_sync(syncer)
    key = fake.add_field("deals", "Next step", "enum", options=["Call", "Visit"])
    assert syncer.run(**LATER).code == 0
    assert columns_of(syncer)[key] == "next_step"
    assert syncer.columns("deals")["next_step"] == "VARCHAR"
    finish(syncer, pinned)


def test_a_field_added_while_the_run_reads_is_typed_after_the_first_batch(
    syncer: Syncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Column types travel with the first batch of a load; a field added in Pipedrive while
    the run reads (met after that batch: here a set, whose JSON column arrow alone would make
    text) needs its types sent again."""
    import sources.pipedrive.source as source_module

    monkeypatch.setattr(source_module, "BATCH_ROWS", 50)  # a batch per page
    fake = syncer.fake
    options = {"columnar": False}  # the fast path groups pages: one page, one table here
    pinned = _first_sync(syncer, options=options)
    ids = _deal_ids(fake, 120)
    for deal_id in ids:  # three pages to read
        fake.update("deals", deal_id, title=f"changed {deal_id}")
    requests: list[Any] = []
    added: list[str] = []

    def add_before_the_third_page(record: Any) -> None:
        if record.path == "/api/v2/deals":
            requests.append(record)
        if len(requests) == 3 and not added:
            fake.on_request(None)
            added.append(fake.add_field("deals", "Tags", "set", options=["hot", "cold"]))
            tags = [o.id for o in fake.field("deals", added[0]).options]
            fake.update("deals", ids[10], custom_fields={added[0]: tags})

    fake.on_request(add_before_the_third_page)
    assert syncer.run(options=options).code == 0
    assert added and columns_of(syncer)[added[0]] == "tags"
    assert syncer.columns("deals")["tags"] == "JSON"
    finish(syncer, pinned)
