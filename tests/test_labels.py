"""Labels beside the option ids of standard fields, on every entity; a lead's value as columns."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from conftest import Syncer, all_deals, table_rows

from sources.pipedrive_fake import FakePipedrive

ENTITIES = "deals,persons,organizations,activities,products,leads,projects,notes,activity_types,lead_labels"
# table → (id column, label column, several ids?) the fake's definitions give options for
LABELLED = {
    "deals": [("label_ids", "labels", True), ("visible_to", "visible_to_label", False),
              ("channel", "channel_label", False)],
    "persons": [("label_ids", "labels", True), ("visible_to", "visible_to_label", False)],
    "organizations": [("label_ids", "labels", True), ("visible_to", "visible_to_label", False),
                      ("industry", "industry_label", False)],
    "activities": [("priority", "priority_label", False)],
    "products": [("visible_to", "visible_to_label", False), ("category", "category_label", False)],
    "leads": [("label_ids", "labels", True), ("visible_to", "visible_to_label", False)],
    "projects": [("label_ids", "labels", True), ("health_status", "health_status_label", False)],
}  # fmt: skip


def _options(fake: FakePipedrive, table: str, key: str) -> dict[str, str]:
    return {str(o.id): o.label for o in fake.field(table, key).options or []}


def _expected(value: Any, options: dict[str, str], multi: bool) -> Any:
    """The label (or labels) the warehouse should show for a record's id (or ids)."""
    if multi:
        ids = [str(i) for i in value or []]
        return [options.get(i, i) for i in ids] or None
    if value is None:
        return None
    return options.get(str(value), str(value))


def _records(fake: FakePipedrive, table: str) -> list[dict[str, Any]]:
    if table == "deals":
        return all_deals(fake)
    return fake.records(table)  # a first sync never sees records deleted before it


def _check_labels(syncer: Syncer, table: str) -> int:
    fake = syncer.fake
    rows = table_rows(syncer, table)
    labelled = 0
    for source, column, multi in LABELLED[table]:
        options = _options(fake, table, source)
        for record in _records(fake, table):
            got = rows[record["id"]][column]
            got = json.loads(got) if multi and isinstance(got, str) else got
            assert got == _expected(record[source], options, multi), (table, column, record)
            labelled += got is not None
    return labelled


@pytest.mark.parametrize("table", sorted(LABELLED))
def test_every_option_id_column_has_its_labels(syncer: Syncer, table: str) -> None:
    assert syncer.run(entities=ENTITIES).code == 0
    assert _check_labels(syncer, table) > 0


def test_flags_get_no_label_column(syncer: Syncer) -> None:
    assert syncer.run(entities="notes").code == 0
    columns = syncer.columns("notes")
    assert "pinned_to_deal_flag" in columns and not any(c.endswith("_label") for c in columns)


def test_an_activity_type_is_named_from_the_activity_types(syncer: Syncer) -> None:
    assert syncer.run(entities="activities").code == 0
    names = {t["key_string"]: t["name"] for t in syncer.fake.records("activity_types")}
    rows = table_rows(syncer, "activities")
    assert rows and all(row["type_label"] == names[row["type"]] for row in rows.values())


def test_lead_labels_come_from_the_lead_labels_when_the_definitions_have_none(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    fake.registry.get("leads", "label_ids").options = None  # as leadFields may leave them out
    result = syncer.run(entities="leads")
    assert result.code == 0
    names = {label["id"]: label["name"] for label in fake.records("lead_labels")}
    rows = table_rows(syncer, "leads")
    labelled = [r for r in rows.values() if r["labels"]]
    assert labelled
    for row in rows.values():
        ids = json.loads(row["label_ids"] or "[]")
        assert json.loads(row["labels"] or "null") == ([names[i] for i in ids] or None)
    assert any(r.path == "/v1/leadLabels" for r in fake.requests)


def test_a_lead_s_value_is_an_amount_and_a_currency(syncer: Syncer) -> None:
    assert syncer.run(entities="leads").code == 0
    rows = table_rows(syncer, "leads")
    records = syncer.fake.records("leads", deleted=None)
    assert any(r["value"] for r in records)
    for record in records:
        value = record["value"] or {}
        row = rows[record["id"]]
        assert (row["value_amount"], row["value_currency"]) == (
            value.get("amount"),
            value.get("currency"),
        )
    types = dict(
        syncer.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name ="
            " 'leads' AND table_schema = current_schema() AND column_name LIKE 'value%'"
        )
    )
    assert types == {"value": "JSON", "value_amount": "DOUBLE", "value_currency": "VARCHAR"}


def test_renamed_options_are_followed_in_rows_already_loaded(syncer: Syncer) -> None:
    fake = syncer.fake
    assert syncer.run(entities="deals").code == 0
    hot = next(
        d["id"]
        for d in fake.records("deals")
        if 1 in (d["label_ids"] or []) and d["visible_to"] == 3
    )
    fake.rename_option("deals", "label_ids", 1, "Very hot")
    fake.rename_option("deals", "visible_to", 3, "Everyone")
    # the definitions' cadence has passed (no forced refresh), no deal changed
    result = syncer.run(entities="deals", options={"fields_refresh": timedelta(0)})
    assert result.code == 0 and result.labels_rewritten == 2
    row = table_rows(syncer, "deals")[hot]  # not read again: rewritten in place
    assert "Very hot" in json.loads(row["labels"]) and "Hot" not in json.loads(row["labels"])
    assert row["visible_to_label"] == "Everyone"
    assert _check_labels(syncer, "deals")
    changes = syncer.query(
        "SELECT column_name, field_type, old_label, new_label FROM custom_field_label_changes"
        " WHERE applied_at IS NOT NULL ORDER BY column_name"
    )
    assert changes == [("labels", "set", "Hot", "Very hot"), ("visible_to_label", "enum",
                        "Entire company", "Everyone")]  # fmt: skip


def test_an_option_added_since_is_labelled_at_once_and_a_deleted_one_asked_once(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    assert syncer.run(entities="deals").code == 0
    new = fake.add_option("deals", "label_ids", "Strategic")
    deal = fake.records("deals")[0]["id"]
    fake.update("deals", deal, label_ids=[new])
    assert syncer.run(entities="deals").code == 0  # no --refresh-fields: the id asked for it
    assert json.loads(table_rows(syncer, "deals")[deal]["labels"]) == ["Strategic"]

    gone = fake.add_option("deals", "label_ids", "Short-lived")
    fake.delete_option("deals", "label_ids", gone)
    reads = []
    for n in range(2):
        fake.update("deals", deal, label_ids=[new, gone], title=f"touched {n}")
        assert syncer.run(entities="deals").code == 0
        reads.append(sum(r.path.endswith("/dealFields") for r in fake.requests))
        assert json.loads(table_rows(syncer, "deals")[deal]["labels"]) == ["Strategic", str(gone)]
    assert reads[0] == reads[1]  # asked for the deleted id once, not at every run


def test_a_custom_field_called_labels_keeps_out_of_the_label_column(syncer: Syncer) -> None:
    fake = syncer.fake
    key = fake.add_field("deals", "Labels", "varchar")
    deal = fake.records("deals")[0]["id"]
    fake.update("deals", deal, custom_fields={key: "my own text"}, label_ids=[2])
    assert syncer.run(entities="deals").code == 0
    column = syncer.query(f"SELECT column_name FROM custom_fields WHERE field_key = '{key}'")
    assert column != [("labels",)]
    row = table_rows(syncer, "deals")[deal]
    assert json.loads(row["labels"]) == ["Warm"] and row[column[0][0]] == "my own text"


def test_deals_enriched_shows_the_labels(syncer: Syncer) -> None:
    assert syncer.run(entities="deals,pipelines,stages").code == 0
    pairs = syncer.query(
        "SELECT d.labels, e.labels, d.visible_to_label, e.visible_to_label, e.channel_label"
        " FROM deals d JOIN deals_enriched e USING (id)"
    )
    assert pairs and all(p[0] == p[1] and p[2] == p[3] for p in pairs)
    assert any(p[1] for p in pairs) and any(p[4] for p in pairs)


def _cadence_run(syncer: Syncer, entities: str) -> int:
    """A run once the definitions are due again (their cadence passed), nothing forced."""
    result = syncer.run(entities=entities, options={"fields_refresh": timedelta(0)})
    assert result.code == 0
    return result.labels_rewritten


def test_a_renamed_lead_label_is_followed(syncer: Syncer) -> None:
    fake = syncer.fake
    fake.registry.get("leads", "label_ids").options = None  # named by /v1/leadLabels only
    assert syncer.run(entities="leads").code == 0
    label = fake.records("lead_labels")[0]
    fake.update("lead_labels", label["id"], name="Scorching")
    assert _cadence_run(syncer, "leads") == 1
    rows = table_rows(syncer, "leads").values()
    labelled = [json.loads(r["labels"]) for r in rows if label["id"] in (r["label_ids"] or "")]
    assert labelled and all("Scorching" in names for names in labelled)


def test_a_renamed_activity_type_is_followed(syncer: Syncer) -> None:
    fake = syncer.fake
    assert syncer.run(entities="activities").code == 0
    kind = fake.records("activities")[0]["type"]
    type_id = next(t["id"] for t in fake.records("activity_types") if t["key_string"] == kind)
    fake.update("activity_types", type_id, name="Video call")
    assert _cadence_run(syncer, "activities") == 1
    rows = table_rows(syncer, "activities").values()
    assert {r["type_label"] for r in rows if r["type"] == kind} == {"Video call"}


def test_swapped_labels_are_not_rewritten_into_one(syncer: Syncer) -> None:
    fake = syncer.fake
    assert syncer.run(entities="deals").code == 0
    fake.rename_option("deals", "label_ids", 1, "Cold")
    fake.rename_option("deals", "label_ids", 3, "Hot")  # Hot and Cold swapped
    _cadence_run(syncer, "deals")
    rows = table_rows(syncer, "deals").values()
    names = {tuple(json.loads(r["labels"])) for r in rows if r["labels"]}
    assert any("Hot" in n for n in names) and any("Cold" in n for n in names)


def _type_labels(syncer: Syncer) -> list[tuple[Any, Any]]:
    names = {t["key_string"]: t["name"] for t in syncer.fake.records("activity_types")}
    rows = table_rows(syncer, "activities")
    assert rows
    return [(row.get("type_label"), names[row["type"]]) for row in rows.values()]


def test_an_option_list_failing_stops_the_run_before_any_row_and_the_next_labels_all(
    syncer: Syncer,
) -> None:
    """The activity types a label column needs fail (500): the run stops like any failing list
    (75, one line), before loading rows it could not label; the next run labels every row."""
    from dataclasses import replace

    from conftest import FAST_HTTP

    from sources.pipedrive_fake import FaultRule

    syncer.fake.add_fault(FaultRule(path=r"/v1/activityTypes$", kind="status", status=500))
    result = syncer.run(entities="activities", http=replace(FAST_HTTP, max_attempts=1))
    assert result.code == 75, result.message
    assert "activityTypes" in result.message and "\n" not in result.message
    syncer.fake.clear_faults()
    assert syncer.run(entities="activities").code == 0
    assert all(label == name for label, name in _type_labels(syncer))


def test_an_option_list_the_token_may_not_read_leaves_the_ids(syncer: Syncer) -> None:
    """403 on the activity types: the run goes on, the type ids stay without labels."""
    from sources.pipedrive_fake import FaultRule

    syncer.fake.add_fault(FaultRule(path=r"/v1/activityTypes$", kind="status", status=403))
    result = syncer.run(entities="activities")
    assert result.code == 0, result.message
    assert all(label is None for label, _ in _type_labels(syncer))
