"""Pagination, sorting and filtering of the fake Pipedrive (v2 cursors, v1 offsets)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from sources.pipedrive_fake import FakePipedrive, RequestRecord
from sources.pipedrive_fake.testing import FakeClient

SCALE = {"deals": 230, "persons": 90, "organizations": 40, "activities": 120, "products": 25,
         "leads": 70, "notes": 75}  # fmt: skip
V2 = ["deals", "persons", "organizations", "activities", "products", "pipelines", "stages"]


@pytest.fixture(scope="module")
def shared() -> Iterator[FakePipedrive]:
    """Read-only tests share one fake."""
    with FakePipedrive(token="t", seed=11, scale=SCALE) as f:
        yield f


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    """Tests that mutate get their own."""
    with FakePipedrive(token="t", seed=12, scale=SCALE) as f:
        yield f


def client_for(fake: FakePipedrive) -> FakeClient:
    return FakeClient(fake)


def _ts(fake: FakePipedrive, delta_s: float = 0) -> str:
    return (fake.now + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sort_key(item: dict, sort_by: str) -> tuple:
    return (item[sort_by], item["id"])


@pytest.mark.parametrize("entity", V2)
@pytest.mark.parametrize("sort_by", ["id", "update_time", "add_time"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_all_pages_hold_every_record_once_in_order(
    shared: FakePipedrive, entity: str, sort_by: str, direction: str
) -> None:
    c = client_for(shared)
    limit = 7 if entity in ("pipelines", "stages") else 37
    pages = c.v2_pages(f"/api/v2/{entity}", limit=limit, sort_by=sort_by, sort_direction=direction)
    items = [i for p in pages for i in p["data"]]
    assert all(len(p["data"]) == limit for p in pages[:-1])
    expected = shared.records(entity, archived=False if entity == "deals" else None)
    if entity == "deals":
        expected = [d for d in expected if d["status"] != "deleted"]
    assert sorted(i["id"] for i in items) == sorted(d["id"] for d in expected)
    assert len({i["id"] for i in items}) == len(items)
    keys = [_sort_key(i, sort_by) for i in items]
    assert keys == sorted(keys, reverse=direction == "desc")
    by_id = {d["id"]: d for d in expected}
    assert all(i == by_id[i["id"]] for i in items)  # exactly what records() says


def test_extra_sort_keys_from_the_spec(shared: FakePipedrive) -> None:
    c = client_for(shared)
    products = c.v2_all("/api/v2/products", sort_by="name", limit=4)
    assert [p["name"] for p in products] == sorted(p["name"] for p in products)
    stages = c.v2_all("/api/v2/stages", sort_by="order_nr", limit=3)
    assert [s["order_nr"] for s in stages] == sorted(s["order_nr"] for s in stages)
    acts = c.v2_all("/api/v2/activities", sort_by="due_date", limit=30)
    assert len(acts) == len(shared.records("activities"))
    assert c.get("/api/v2/deals", sort_by="name").status_code == 400


def test_default_limit_is_100_and_cursor_is_base64url_json_keyset(shared: FakePipedrive) -> None:
    c = client_for(shared)
    body = c.json("/api/v2/deals")
    assert len(body["data"]) == 100
    cursor = body["additional_data"]["next_cursor"]
    assert "=" not in cursor
    decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    nxt = c.json("/api/v2/deals", cursor=cursor)["data"][0]
    assert decoded == {
        "field": "id",
        "fieldValue": nxt["id"],
        "sortDirection": "asc",
        "id": nxt["id"],
    }
    body = c.json("/api/v2/deals", sort_by="update_time", limit=5)
    cursor = body["additional_data"]["next_cursor"]
    decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    nxt = c.json("/api/v2/deals", sort_by="update_time", limit=5, cursor=cursor)["data"][0]
    assert decoded["fieldValue"] == nxt["update_time"] and decoded["id"] == nxt["id"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 501},
        {"limit": 0},
        {"limit": "ten"},
        {"cursor": "not-a-cursor!!"},
        {"cursor": base64.urlsafe_b64encode(b'{"field":"id"}').decode()},
        {"sort_direction": "up"},
        {"updated_since": "2024-01-01 10:00:00"},  # v2 wants RFC 3339
        {"status": "open,archived"},
        {"ids": "1,x"},
    ],
)
def test_bad_parameters_get_a_400_envelope(shared: FakePipedrive, params: dict) -> None:
    r = client_for(shared).get("/api/v2/deals", **params)
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False and body["error"] and body["data"] is None


def test_a_cursor_for_another_sort_is_rejected(shared: FakePipedrive) -> None:
    c = client_for(shared)
    cursor = c.json("/api/v2/deals", limit=3)["additional_data"]["next_cursor"]
    assert c.get("/api/v2/deals", limit=3, cursor=cursor, sort_by="update_time").status_code == 400
    assert c.get("/api/v2/deals", limit=3, cursor=cursor).status_code == 200


def test_unknown_parameters_are_ignored(shared: FakePipedrive) -> None:
    c = client_for(shared)
    plain = c.json("/api/v2/persons", limit=10)
    assert c.json("/api/v2/persons", limit=10, whatever="x", include_fields="y") == plain
    # parameters the spec does not list for an endpoint are ignored too
    assert len(c.v2_all("/api/v2/products", updated_until=_ts(shared, -(10**9)))) == len(
        shared.records("products")
    )
    assert len(c.v2_all("/api/v2/pipelines", updated_since=_ts(shared, 10))) == 2


def test_update_while_paging_by_update_time_skips_nothing(fake: FakePipedrive) -> None:
    c = client_for(fake)
    calls = []
    victims = []

    def hook(rec: RequestRecord) -> None:
        if rec.path == "/api/v2/deals":
            calls.append(rec)
            if len(calls) == 2:
                first_page_ids = victims_seen[0]
                victim = next(i for i in first_page_ids)
                victims.append(victim)
                fake.update("deals", victim, title="moved to the end")
                not_yet = sorted(set(all_ids) - set(first_page_ids))[0]
                victims.append(not_yet)
                fake.update("deals", not_yet, title="also moved")

    all_ids = [d["id"] for d in fake.records("deals", archived=False) if d["status"] != "deleted"]
    victims_seen: list[list[int]] = []
    fake.on_request(hook)
    items: list[dict] = []
    cursor = None
    while True:
        body = c.json("/api/v2/deals", sort_by="update_time", limit=25, cursor=cursor)
        victims_seen.append([i["id"] for i in body["data"]])
        items += body["data"]
        cursor = body["additional_data"]["next_cursor"]
        if not cursor:
            break
    fake.on_request(None)
    ids = [i["id"] for i in items]
    assert set(ids) == set(all_ids)  # nothing skipped
    already_served, not_yet_served = victims
    assert ids.count(already_served) == 2  # once before the update, once more at the end
    assert ids.count(not_yet_served) == 1
    assert ids[-2:] == [already_served, not_yet_served]
    assert items[-1]["title"] == "also moved"
    assert len(ids) == len(all_ids) + 1


def test_delete_while_paging_by_id_shifts_nothing(fake: FakePipedrive) -> None:
    c = client_for(fake)
    first = c.json("/api/v2/persons", limit=10)
    served = [p["id"] for p in first["data"]]
    fake.delete("persons", served[3])  # already served
    upcoming = c.json("/api/v2/persons", limit=10, cursor=first["additional_data"]["next_cursor"])
    expected = [p["id"] for p in fake.records("persons") if p["id"] > served[-1]][:10]
    assert [p["id"] for p in upcoming["data"]] == expected


def test_updated_since_is_inclusive_and_updated_until_exclusive(fake: FakePipedrive) -> None:
    c = client_for(fake)
    fake.advance(3600)
    t = fake.now
    stamp = _ts(fake)
    for deal_id in (5, 6, 7):
        fake.update("deals", deal_id, tick=False, value=1)  # same update_time
    fake.update("deals", 8, at=t + timedelta(seconds=1), tick=False, value=2)
    fake.update("deals", 9, at=t - timedelta(seconds=1), tick=False, value=3)
    since = c.v2_all("/api/v2/deals", updated_since=stamp, sort_by="update_time")
    assert [d["id"] for d in since] == [5, 6, 7, 8]
    until = c.v2_all("/api/v2/deals", updated_until=stamp, sort_by="update_time", limit=500)
    assert {5, 6, 7, 8}.isdisjoint(d["id"] for d in until) and until[-1]["id"] == 9
    window = c.v2_all("/api/v2/deals", updated_since=stamp, updated_until=_ts(fake, 1))
    assert [d["id"] for d in window] == [5, 6, 7]
    # the same boundaries on an id sort and descending
    by_id = c.v2_all("/api/v2/deals", updated_since=stamp, sort_by="id", limit=2)
    assert [d["id"] for d in by_id] == [5, 6, 7, 8]
    desc = c.v2_all("/api/v2/deals", updated_since=stamp, sort_by="update_time",
                    sort_direction="desc", limit=2)  # fmt: skip
    assert [d["id"] for d in desc] == [8, 7, 6, 5]
    # records sharing one update_time are not split or repeated across a page boundary
    pages = c.v2_pages("/api/v2/deals", updated_since=stamp, sort_by="update_time", limit=2)
    assert [[d["id"] for d in p["data"]] for p in pages] == [[5, 6], [7, 8]]
    # persons take the same parameters; offsets in the timestamp work too
    fake.update("persons", 2, tick=False)
    persons = c.v2_all("/api/v2/persons", updated_since=stamp.replace("Z", "+00:00"))
    assert [p["id"] for p in persons] == [2]


def test_deal_status_filter(shared: FakePipedrive) -> None:
    c = client_for(shared)
    live = shared.records("deals", deleted=None, archived=False)
    default = c.v2_all("/api/v2/deals", limit=500)
    assert {d["status"] for d in default} == {"open", "won", "lost"}
    deleted = c.v2_all("/api/v2/deals", status="deleted", limit=500)
    assert deleted and all(d["status"] == "deleted" and d["is_deleted"] for d in deleted)
    closed = c.v2_all("/api/v2/deals", status="won,lost", limit=500)
    assert {d["status"] for d in closed} == {"won", "lost"}
    everything = c.v2_all("/api/v2/deals", status="open,won,lost,deleted", limit=500)
    assert sorted(d["id"] for d in everything) == [d["id"] for d in live]
    assert len(default) + len(deleted) == len(everything)


def test_archived_deals_only_in_deals_archived(fake: FakePipedrive) -> None:
    c = client_for(fake)
    archived = c.v2_all("/api/v2/deals/archived", limit=500, status="open,won,lost,deleted")
    assert archived and all(d["is_archived"] for d in archived)
    assert sorted(d["id"] for d in archived) == fake.ids("deals", deleted=None, archived=True)
    live_ids = {
        d["id"] for d in c.v2_all("/api/v2/deals", status="open,won,lost,deleted", limit=500)
    }
    assert live_ids.isdisjoint(d["id"] for d in archived)
    target = next(d for d in fake.records("deals", archived=False) if d["status"] == "open")
    fake.archive("deals", target["id"])
    assert target["id"] not in {d["id"] for d in c.v2_all("/api/v2/deals", limit=500)}
    moved = c.v2_all("/api/v2/deals/archived", limit=500)
    assert target["id"] in {d["id"] for d in moved}
    fake.unarchive("deals", target["id"])
    assert target["id"] in {d["id"] for d in c.v2_all("/api/v2/deals", limit=500)}
    default_archived = c.v2_all("/api/v2/deals/archived", limit=500)
    assert all(d["status"] != "deleted" for d in default_archived)


def test_ids_and_simple_filters(shared: FakePipedrive) -> None:
    c = client_for(shared)
    a, b, d = [x["id"] for x in c.json("/api/v2/deals", limit=3)["data"]]
    got = c.v2_all("/api/v2/deals", ids=f"{d},{a},{b},99999")
    assert [x["id"] for x in got] == [a, b, d]
    owned = c.v2_all("/api/v2/deals", owner_id=2, limit=500)
    assert owned and all(d["owner_id"] == 2 for d in owned)
    stage = c.v2_all("/api/v2/stages", pipeline_id=2)
    assert len(stage) == 5 and all(s["pipeline_id"] == 2 for s in stage)
    done = c.v2_all("/api/v2/activities", done="true", limit=500)
    assert done and all(a["done"] for a in done)
    key = shared.field_key_for_type("deals", "monetary")
    subset = c.json("/api/v2/deals", custom_fields=key, limit=5)["data"]
    assert all(list(d["custom_fields"]) == [key] for d in subset)


def test_field_lists_paginate_with_cursors(shared: FakePipedrive) -> None:
    c = client_for(shared)
    pages = c.v2_pages("/api/v2/dealFields", limit=10)
    assert len(pages) > 2
    items = [f for p in pages for f in p["data"]]
    assert items == shared.field_definitions("deals")


# --- v1 offset pagination -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["leads", "notes"])
def test_v1_pages_hold_every_record_once(shared: FakePipedrive, path: str) -> None:
    c = client_for(shared)
    pages = c.v1_pages(f"/v1/{path}", limit=20)
    items = [i for p in pages for i in p["data"]]
    expected = shared.records(path, archived=False if path == "leads" else None)
    assert [i["id"] for i in items] == [e["id"] for e in expected]
    for n, page in enumerate(pages):
        pagination = page["additional_data"]["pagination"]
        assert pagination["start"] == n * 20 and pagination["limit"] == 20
        if n < len(pages) - 1:
            assert pagination == {"start": n * 20, "limit": 20, "more_items_in_collection": True,
                                  "next_start": (n + 1) * 20}  # fmt: skip
        else:
            assert pagination["more_items_in_collection"] is False
            assert "next_start" not in pagination


def test_v1_sort_and_updated_since(fake: FakePipedrive) -> None:
    c = client_for(fake)
    for sort, reverse in (
        ("update_time ASC", False),
        ("update_time DESC", True),
        ("add_time", False),
    ):
        field = sort.split()[0]
        leads = c.v1_all("/v1/leads", sort=sort, limit=15)
        values = [lead[field] for lead in leads]
        assert values == sorted(values, reverse=reverse), sort
    fake.advance(600)
    stamp = _ts(fake)
    lead_id = fake.ids("leads", archived=False)[4]
    fake.update("leads", lead_id, title="fresh", tick=False)
    fake.update("notes", 3, content="fresh", tick=False)
    assert [x["id"] for x in c.v1_all("/v1/leads", updated_since=stamp)] == [lead_id]
    assert [x["id"] for x in c.v1_all("/v1/notes", updated_since=stamp)] == [3]
    # notes also take the v1 style timestamp
    assert [
        x["id"] for x in c.v1_all("/v1/notes", updated_since=stamp[:10] + " " + stamp[11:19])
    ] == [3]
    assert c.get("/v1/leads", sort="nonsense ASC").status_code == 400


def test_v1_empty_list_has_null_data(shared: FakePipedrive) -> None:
    c = client_for(shared)
    body = c.json("/v1/leads", start=10_000)
    assert body["data"] is None
    assert body["additional_data"]["pagination"]["more_items_in_collection"] is False
    body = c.json("/v1/notes", updated_since="2099-01-01T00:00:00Z")
    assert body["data"] is None


def test_v1_pagination_quirks(fake: FakePipedrive) -> None:
    c = client_for(fake)
    fake.v1_pagination_mode = "omit_next_start"
    first = c.json("/v1/notes", limit=10)["additional_data"]["pagination"]
    assert first == {"start": 0, "limit": 10, "more_items_in_collection": True}
    fake.v1_pagination_mode = "false_with_next_start"
    last = c.json("/v1/notes", start=70, limit=10)["additional_data"]["pagination"]
    assert last == {"start": 70, "limit": 10, "more_items_in_collection": False, "next_start": 80}
    # the helper still collects everything exactly once in both modes
    assert len(c.v1_all("/v1/notes", limit=10)) == len(fake.records("notes"))
    fake.v1_pagination_mode = "omit_next_start"
    assert len(c.v1_all("/v1/notes", limit=10)) == len(fake.records("notes"))
    fake.v1_pagination_mode = None
    # limit is capped at 500 like the real v1 API
    assert c.json("/v1/notes", limit=900)["additional_data"]["pagination"]["limit"] == 500


def test_archived_leads(fake: FakePipedrive) -> None:
    c = client_for(fake)
    archived = c.v1_all("/v1/leads/archived")
    assert archived and all(lead["is_archived"] for lead in archived)
    live = c.v1_all("/v1/leads")
    assert {x["id"] for x in live}.isdisjoint(x["id"] for x in archived)
    lead_id = live[0]["id"]
    fake.archive("leads", lead_id)
    assert lead_id in {x["id"] for x in c.v1_all("/v1/leads/archived")}
    assert lead_id not in {x["id"] for x in c.v1_all("/v1/leads")}
    fake.delete("leads", lead_id)
    assert lead_id not in {x["id"] for x in c.v1_all("/v1/leads/archived")}
    assert lead_id in {x["id"] for x in fake.records("leads", deleted=True)}
