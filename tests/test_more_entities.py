"""The rest of the account: leads, notes, reference data, deal products, projects, followers."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from conftest import Syncer, assert_matches_fake, table_rows

from sources.pipedrive.entities import ENTITIES, ENTITY_BY_NAME, Strategy

EVERYTHING = ",".join(e.name for e in ENTITIES)
REFERENCE = [e.name for e in ENTITIES if e.strategy is Strategy.FULL_REFRESH] + [
    "files",
    "leads",
    "notes",
]
NOW = {"refresh_all": True}


def _sync_all(syncer: Syncer, **options: Any) -> Any:
    result = syncer.run(entities=EVERYTHING, options={**NOW, **options})
    assert result.code == 0, result.message
    return result


def _children(syncer: Syncer, table: str) -> dict[tuple, dict[str, Any]]:
    entity = ENTITY_BY_NAME[table]
    rows = syncer.query(f"SELECT * FROM {table}")
    names = list(syncer.columns(table))
    keyed = {}
    for row in rows:
        record = dict(zip(names, row, strict=True))
        keyed[tuple(record[k] for k in entity.key_columns)] = record
    return keyed


def _expected_followers(syncer: Syncer, parent: str, singular: str) -> set[tuple[int, int]]:
    fake = syncer.fake
    records = fake.records(parent, deleted=None) if parent == "deals" else fake.records(parent)
    return {
        (record["id"], follower["user_id"])
        for record in records
        for follower in fake.followers(parent, record["id"])
    }


def test_every_entity_loads_exactly_the_fakes_data(syncer: Syncer) -> None:
    fake = syncer.fake
    result = _sync_all(syncer)
    statuses = {r.name: r.status for r in result.reports}
    assert set(statuses) == {e.name for e in ENTITIES}
    assert set(statuses.values()) == {"ok"}
    for table in REFERENCE:
        expected = fake.records(table)
        if table == "leads":
            expected = fake.records("leads", archived=None)
        assert expected, table
        assert_matches_fake(syncer, table, expected) if table != "lead_sources" else None
    assert {r[0] for r in syncer.query("SELECT name FROM lead_sources")} == {
        r["name"] for r in fake.records("lead_sources")
    }
    products = {(p["id"]): p for p in fake.deal_products()}
    stored = table_rows(syncer, "deal_products")
    assert set(stored) == set(products)
    for attachment_id, product in products.items():
        assert stored[attachment_id]["deal_id"] == product["deal_id"]
        assert stored[attachment_id]["quantity"] == product["quantity"]
    for parent, singular in (("deals", "deal"), ("persons", "person")):
        stored_keys = set(_children(syncer, f"{singular}_followers"))
        assert stored_keys == _expected_followers(syncer, parent, singular)
    archived_leads = fake.records("leads", archived=True)
    assert archived_leads
    leads = table_rows(syncer, "leads")
    assert all(leads[lead["id"]]["is_archived"] is True for lead in archived_leads)


def test_lead_custom_fields_use_the_deal_fields_in_the_flat_v1_shape(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run(entities="leads,deals", options=NOW)
    mapping = dict(
        syncer.query("SELECT field_key, column_name FROM custom_fields WHERE entity = 'lead'")
    )
    assert mapping[fake.field_key("deals", "Título")] == "titulo"
    budget = mapping[fake.field_key("deals", "Budget")]
    channels_key = fake.field_key("deals", "Channels")
    channels = mapping[channels_key]
    labels = {o.id: o.label for o in fake.field("deals", channels_key).options}
    leads = table_rows(syncer, "leads")
    checked = 0
    for lead in fake.records("leads", archived=None):
        row = leads[lead["id"]]
        budget_key = fake.field_key("deals", "Budget")
        if lead.get(budget_key) is not None:
            assert row[budget] == float(lead[budget_key])
            assert row[f"{budget}_currency"] == lead[f"{budget_key}_currency"]
            checked += 1
        if lead.get(channels_key):
            ids = [int(i) for i in str(lead[channels_key]).split(",")]
            assert orjson.loads(row[channels]) == [labels.get(i, str(i)) for i in ids]
            checked += 1
    assert checked
    assert not [c for c in syncer.columns("leads") if len(c) == 40 or c.startswith(budget_key)]


def test_leads_and_notes_stay_exact_across_incremental_runs(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run(entities="leads,notes", options=NOW)
    leads = fake.records("leads")
    fake.update("leads", leads[0]["id"], title="Updated lead")
    fake.add("leads", title="Brand new lead")
    fake.archive("leads", leads[1]["id"])
    notes = fake.records("notes")
    fake.update("notes", notes[0]["id"], content="edited note")
    fake.reset_requests()
    result = syncer.run(entities="leads,notes", options=NOW)
    rows = {r.name: r.rows for r in result.reports}
    assert rows["notes"] == 1
    assert rows["leads"] >= 3  # updated, added, archived (the archived list is read newest first)
    assert_matches_fake(syncer, "leads", fake.records("leads", archived=None))
    assert_matches_fake(syncer, "notes", fake.records("notes"))
    lead_requests = [r for r in fake.requests if r.endpoint == "leads"]
    assert all("updated_since" in r.query for r in lead_requests)


@pytest.mark.parametrize("mode", ["omit_next_start", "false_with_next_start"])
def test_v1_pagination_edge_cases(syncer: Syncer, mode: str) -> None:
    syncer.fake.v1_pagination_mode = mode
    result = syncer.run(entities="leads,notes,files", options=NOW)
    assert result.code == 0
    assert_matches_fake(syncer, "notes", syncer.fake.records("notes"))
    assert_matches_fake(syncer, "files", syncer.fake.records("files"))


def test_deal_products_come_in_batches_and_follow_changes(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run(entities="deal_products")
    product_requests = [r for r in fake.requests if r.endpoint == "deals/products"]
    deals = len(syncer.query("SELECT id FROM deals"))
    assert len(product_requests) >= math.ceil(deals / 100)
    assert all(len(r.query["deal_ids"].split(",")) <= 100 for r in product_requests)
    assert not [r for r in fake.requests if "/products" in r.path and r.path.count("/") > 4]

    attachments = fake.deal_products()
    keep, drop = attachments[0], attachments[1]
    emptied_deal = next(
        d["id"]
        for d in fake.records("deals")
        if len(fake.deal_products(d["id"])) >= 1
        and d["id"] not in (keep["deal_id"], drop["deal_id"])
    )
    fake.update_deal_product(keep["id"], quantity=42)
    fake.remove_deal_product(drop["id"])
    for attachment in fake.deal_products(emptied_deal):
        fake.remove_deal_product(attachment["id"])
    added = fake.add_deal_product(
        fake.records("deals")[-1]["id"], fake.records("products")[0]["id"]
    )
    fake.reset_requests()
    syncer.run(entities="deal_products")
    stored = table_rows(syncer, "deal_products")
    assert set(stored) == {p["id"] for p in fake.deal_products()}
    assert stored[keep["id"]]["quantity"] == 42
    assert drop["id"] not in stored and added["id"] in stored
    assert syncer.query(f"SELECT count(*) FROM deal_products WHERE deal_id = {emptied_deal}") == [
        (0,)
    ]
    # only the changed deals were asked about, in one batch
    asked = [r for r in fake.requests if r.endpoint == "deals/products"]
    assert len(asked) == 1 and len(asked[0].query["deal_ids"].split(",")) <= 4


def test_reference_tables_refresh_on_their_cadence(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run(entities="users,currencies")
    fake.update("users", fake.records("users")[0]["id"], name="Renamed user")
    fake.reset_requests()
    quiet = syncer.run(entities="users,currencies", options={"refresh_all": False})  # not due
    assert [r for r in fake.requests if r.api] == [
        r for r in fake.requests if r.endpoint == "users/me"
    ]
    assert {r.name: r.rows for r in quiet.reports}["users"] == 0
    due = syncer.run(entities="users,currencies", options=NOW)
    assert {r.name: r.rows for r in due.reports} == {"users": 1, "currencies": 0}
    assert table_rows(syncer, "users")[fake.records("users")[0]["id"]]["name"] == "Renamed user"


def test_projects_and_tasks_with_project_custom_fields(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run(entities="projects,tasks", options=NOW)
    assert_matches_fake(syncer, "tasks", fake.records("tasks"))
    assert_matches_fake(syncer, "projects", fake.records("projects", archived=None))
    mapping = dict(
        syncer.query("SELECT field_key, column_name FROM custom_fields WHERE entity = 'project'")
    )
    assert mapping[fake.field_key("projects", "Budget")] == "budget"
    assert syncer.columns("projects")["budget_currency"] == "VARCHAR"


def test_an_entity_not_on_the_plan_is_skipped_and_the_rest_loads(syncer: Syncer) -> None:
    syncer.fake.restrict(r"/v1/goals", status=402)
    syncer.fake.restrict(r"/v1/callLogs", status=403)
    result = _sync_all(syncer)
    reports = {r.name: r for r in result.reports}
    assert reports["goals"].status == "skipped" and "402" in reports["goals"].message
    assert reports["call_logs"].status == "skipped" and "403" in reports["call_logs"].message
    assert reports["deals"].status == "ok" and reports["users"].status == "ok"


def test_followers_are_opt_in(syncer: Syncer) -> None:
    result = syncer.run()
    assert not {r.name for r in result.reports} & {"deal_followers", "deal_follower_changes"}
    assert not [r for r in syncer.fake.requests if "followers" in r.path]


def test_field_change_history_is_opt_in_and_follows_updates(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run(entities="deal_changes,person_changes")
    deals = fake.records("deals", deleted=None)
    stored = syncer.query("SELECT deal_id, field_key, old_value, new_value FROM deal_changes")
    expected = [
        (deal["id"], entry["field_key"], entry["old_value"], entry["new_value"])
        for deal in deals
        for entry in fake.changelog("deals", deal["id"])
    ]
    assert expected and sorted(stored, key=str) == sorted(expected, key=str)
    deal_id = deals[0]["id"]
    fake.update("deals", deal_id, title="A brand new title")
    fake.reset_requests()
    syncer.run(entities="deal_changes")
    rows = syncer.query(
        f"SELECT new_value FROM deal_changes WHERE deal_id = {deal_id} AND field_key = 'title'"
    )
    assert ("A brand new title",) in rows
    asked = [r for r in fake.requests if r.endpoint.endswith("/changelog")]
    assert [r.endpoint for r in asked] == [f"deals/{deal_id}/changelog"]  # only the changed deal
