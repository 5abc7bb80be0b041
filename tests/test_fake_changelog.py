"""The fake's v1 field-change history: /v1/{deals,persons,organizations}/{id}/changelog."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sources.pipedrive_fake import ROUTE_SCOPES, TOKEN_COSTS, FakePipedrive
from sources.pipedrive_fake import changelog as clog
from sources.pipedrive_fake import spec as pspec
from sources.pipedrive_fake.testing import FakeClient

ENTITIES = ["deals", "persons", "organizations"]
SCALE = {"deals": 60, "persons": 40, "organizations": 30, "activities": 10, "products": 5,
         "leads": 5, "notes": 5}  # fmt: skip
V1_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
HASH = re.compile(r"^[0-9a-f]{40}(_[a-z0-9_]+)?$")


@pytest.fixture(scope="module")
def shared() -> Iterator[FakePipedrive]:
    """Read-only tests share one fake."""
    with FakePipedrive(token="t", seed=31, scale=SCALE) as f:
        yield f


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    with FakePipedrive(token="t", seed=32, scale=SCALE) as f:
        yield f


def _v1(iso: str) -> str:
    return iso.replace("T", " ").removesuffix("Z")


def _pages(c: FakeClient, entity: str, rid: int, **params: Any) -> list[dict[str, Any]]:
    return c.v2_pages(f"/v1/{entity}/{rid}/changelog", **params)


# --- the spec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES)
def test_changelog_pages_validate_against_the_spec(shared: FakePipedrive, entity: str) -> None:
    path = f"/{entity}/{{id}}/changelog"
    validator = pspec.validator_for("v1", path)
    names = set(pspec.item_properties("v1", path))
    assert names == {"field_key", "old_value", "new_value", "actor_user_id", "time",
                     "change_source", "change_source_user_agent", "is_bulk_update_flag"}  # fmt: skip
    c = FakeClient(shared)
    sizes = []
    for rid in shared.ids(entity, deleted=None):
        for body in _pages(c, entity, rid, limit=2):
            assert pspec.errors(validator, body) == []
            assert set(body) == {"success", "data", "additional_data"}
            assert set(body["additional_data"]) == {"next_cursor"}
            for item in body["data"]:
                assert list(item) == list(clog.render(clog.entry(1, "k", None, None, 0)))
                assert set(item) == names
                assert V1_TIME.match(item["time"])
                assert isinstance(item["actor_user_id"], int)
                for key in ("old_value", "new_value"):
                    assert item[key] is None or isinstance(item[key], str)
        sizes.append(len(shared.changelog(entity, rid)))
    # generated records start with a small history; many have none
    assert min(sizes) == 0 and max(sizes) == 3 and sum(s > 0 for s in sizes) > len(sizes) / 4


def test_strict_validator_catches_a_wrong_changelog_item(shared: FakePipedrive) -> None:
    validator = pspec.validator_for("v1", "/deals/{id}/changelog")
    rid = next(i for i in shared.ids("deals") if shared.changelog("deals", i))
    body = FakeClient(shared).json(f"/v1/deals/{rid}/changelog")
    body["data"][0]["old_value"] = 5
    assert pspec.errors(validator, body)
    body["data"][0]["old_value"] = None
    body["data"][0]["invented"] = True
    assert any("invented" in e for e in pspec.errors(validator, body))


def test_cost_and_scopes_follow_the_spec(fake: FakePipedrive) -> None:
    for entity in ENTITIES:
        path = f"/v1/{entity}/{{id}}/changelog"
        assert TOKEN_COSTS[path] == 20 == pspec.token_cost("v1", path.removeprefix("/v1"))
        assert ROUTE_SCOPES[path] == ("recents:read",)
        used = fake.tokens_used
        assert FakeClient(fake).get(f"/v1/{entity}/1/changelog").status_code == 200
        assert fake.tokens_used - used == 20 and fake.requests[-1].cost == 20
    deals_only = fake.issue_access_token(scopes=["deals:read", "contacts:read"])
    recents = fake.issue_access_token(scopes=["recents:read"])
    for entity in ENTITIES:
        url = fake.url(f"/v1/{entity}/2/changelog")
        r = requests.get(url, headers={"Authorization": f"Bearer {deals_only}"}, timeout=10)
        assert r.status_code == 403 and "recents:read" in r.json()["error_info"]
        r = requests.get(url, headers={"Authorization": f"Bearer {recents}"}, timeout=10)
        assert r.status_code == 200
    r = requests.get(
        fake.url("/api/v2/deals"), headers={"Authorization": f"Bearer {recents}"}, timeout=10
    )
    assert r.status_code == 403


def test_unknown_ids_and_bad_parameters(shared: FakePipedrive) -> None:
    c = FakeClient(shared)
    for entity, name in (
        ("deals", "Deal"),
        ("persons", "Person"),
        ("organizations", "Organization"),
    ):
        r = c.get(f"/v1/{entity}/99999/changelog")
        assert r.status_code == 404
        assert r.json()["success"] is False and r.json()["error"] == f"{name} not found"
        assert c.get(f"/v1/{entity}/abc/changelog").status_code == 400
    assert c.get("/v1/products/1/changelog").status_code == 404  # no such endpoint
    assert c.get("/v1/deals/1/changelog", limit=0).status_code == 400
    assert c.get("/v1/deals/1/changelog", limit="x").status_code == 400
    for cursor in ("!!!", base64.b64encode(b"nope:3").decode(), base64.b64encode(b"id:").decode()):
        r = c.get("/v1/deals/1/changelog", cursor=cursor)
        assert r.status_code == 400 and r.json()["error"] == "Invalid cursor"
    deleted = shared.ids("persons", deleted=True)
    assert deleted and c.get(f"/v1/persons/{deleted[0]}/changelog").status_code == 200
    with pytest.raises(ValueError):
        shared.changelog("products", 1)
    with pytest.raises(KeyError):
        shared.changelog("deals", 99999)


# --- pagination --------------------------------------------------------------------------------------


def test_pages_hold_every_entry_once_newest_first(fake: FakePipedrive) -> None:
    c = FakeClient(fake)
    for n in range(7):  # deal 4 gets a long history
        fake.update("deals", 4, title=f"Title {n}", probability=10 + n)
    full = fake.changelog("deals", 4)
    assert len(full) >= 14
    assert [e["time"] for e in full] == sorted((e["time"] for e in full), reverse=True)
    assert c.json("/v1/deals/4/changelog")["data"] == full  # default limit 100
    for limit in (1, 3, 5, 500, 1000):
        pages = _pages(c, "deals", 4, limit=limit)
        assert [e for p in pages for e in p["data"]] == full
        assert all(len(p["data"]) == min(limit, 500) for p in pages[:-1])
        assert pages[-1]["additional_data"]["next_cursor"] is None
    cursor = c.json("/v1/deals/4/changelog", limit=2)["additional_data"]["next_cursor"]
    assert base64.b64decode(cursor).decode().startswith("id:")  # like the spec's "aWQ6NTQ0"


def test_a_cursor_survives_new_changes(fake: FakePipedrive) -> None:
    c = FakeClient(fake)
    for n in range(4):
        fake.update("persons", 6, job_title=f"Role {n}")
    before = fake.changelog("persons", 6)
    first = c.json("/v1/persons/6/changelog", limit=2)
    fake.update("persons", 6, job_title="Newest")  # lands on top, not on the next pages
    rest = _pages(c, "persons", 6, limit=2, cursor=first["additional_data"]["next_cursor"])
    assert first["data"] + [e for p in rest for e in p["data"]] == before
    assert fake.changelog("persons", 6)[0]["new_value"] == "Newest"


# --- updates append entries ---------------------------------------------------------------------------


def test_update_appends_one_entry_per_changed_field(fake: FakePipedrive) -> None:
    c = FakeClient(fake)
    deal = fake.record("deals", 7)
    before = fake.changelog("deals", 7)
    text_key = fake.field_key_for_type("deals", "varchar")
    served = fake.update(
        "deals",
        7,
        title="Renamed deal",
        value=1234.5,
        probability=None,
        owner_id=5 if deal["owner_id"] != 5 else 4,
        currency=deal["currency"],  # unchanged: no entry
        custom_fields={text_key: "hello"},
    )
    log = fake.changelog("deals", 7)
    assert log[len(log) - len(before) :] == before  # older entries stay, below the new ones
    new = log[: len(log) - len(before)]
    assert {e["time"] for e in new} == {_v1(served["update_time"])}
    assert all(
        e["actor_user_id"] == 1 and e["change_source"] == "app"
        and e["is_bulk_update_flag"] is False and e["change_source_user_agent"]
        for e in new
    )  # fmt: skip
    got = {e["field_key"]: (e["old_value"], e["new_value"]) for e in new}
    assert len(got) == len(new)
    expected = {
        "title": (deal["title"], "Renamed deal"),
        "value": (clog.text(deal["value"]), "1234.5"),
        "probability": (clog.text(deal["probability"]), None),
        "user_id": (str(deal["owner_id"]), str(served["owner_id"])),  # v1 names the owner so
        text_key: (deal["custom_fields"][text_key], "hello"),
    }
    expected = {k: v for k, v in expected.items() if v[0] != v[1]}
    assert got == expected
    assert c.json("/v1/deals/7/changelog")["data"] == log
    fake.update("deals", 7, title="Renamed deal")  # same value: nothing logged
    assert fake.changelog("deals", 7) == log


def test_values_are_logged_as_text(fake: FakePipedrive) -> None:
    monetary = fake.field_key_for_type("organizations", "monetary")
    enum = fake.field_key_for_type("organizations", "enum")
    option = fake.field("organizations", enum).option_ids()[0]
    fake.update("organizations", 3, custom_fields={monetary: None, enum: None})
    fake.update(
        "organizations",
        3,
        employee_count=250,
        website=None,
        custom_fields={monetary: {"value": 99, "currency": "EUR"}, enum: option},
    )
    latest = fake.changelog("organizations", 3)
    newest_time = latest[0]["time"]
    got = {e["field_key"]: e["new_value"] for e in latest if e["time"] == newest_time}
    assert got["employee_count"] == "250"
    assert got[monetary] == "99" and got[f"{monetary}_currency"] == "EUR"
    assert got[enum] == str(option)
    assert all(HASH.match(k) for k in got if k not in ("employee_count", "website"))
    fake.update("persons", 2, emails=[{"value": "new@example.com", "primary": True,
                                       "label": "work"}], org_id=None)  # fmt: skip
    newest = fake.changelog("persons", 2)
    by_key = {e["field_key"]: e for e in newest[:2]}
    assert by_key["email"]["new_value"] == "new@example.com"
    assert "org_id" in by_key and by_key["org_id"]["new_value"] is None
    fake.update("deals", 9, status="won")
    won = {e["field_key"]: e for e in fake.changelog("deals", 9) if e["time"] == _v1(
        fake.record("deals", 9)["update_time"])}  # fmt: skip
    assert won["status"]["new_value"] == "won"
    assert won["won_time"]["new_value"] == won["won_time"]["time"]  # v1 time text


def test_add_delete_and_deal_products_log_nothing(fake: FakePipedrive) -> None:
    """add() starts an empty history; delete() is no field edit; at= sets the time."""
    person = fake.add("persons", name="Fresh Person")
    assert fake.changelog("persons", person["id"]) == []
    fake.update("persons", person["id"], at="2024-07-01T08:00:00Z", name="Fresh P.")
    (e,) = fake.changelog("persons", person["id"])
    assert (e["field_key"], e["old_value"], e["new_value"], e["time"]) == (
        "name", "Fresh Person", "Fresh P.", "2024-07-01 08:00:00",
    )  # fmt: skip
    before = fake.changelog("deals", 11)
    fake.delete("deals", 11)
    fake.add_deal_product(12, 1)  # stamps the deal, changes no field of it
    assert fake.changelog("deals", 11) == before
    assert len(fake.changelog("deals", 12)) <= 3
    c = FakeClient(fake)
    assert c.json("/v1/deals/11/changelog")["data"] == before


# --- generated histories --------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES)
def test_generated_history_ends_with_the_current_values(shared: FakePipedrive, entity: str) -> None:
    renames = {v: k for k, v in clog.V1_FIELD_KEYS[entity].items()}
    for record in shared.records(entity, deleted=None):
        log = shared.changelog(entity, record["id"])
        if not log:
            continue
        assert log[0]["time"] == _v1(record["update_time"])
        assert all(_v1(record["add_time"]) < e["time"] <= log[0]["time"] for e in log)
        seen: set[str] = set()
        for e in log:  # newest first: the first entry of a field holds its current value
            key = e["field_key"]
            if key in seen:
                continue
            seen.add(key)
            if HASH.match(key):
                value = record["custom_fields"][key]
                current = clog.text(value["value"] if isinstance(value, dict) else value)
            else:
                current = clog.text(record[renames.get(key, key)])
            assert e["new_value"] == current, (entity, record["id"], e)
            assert e["old_value"] != e["new_value"]


def test_generated_histories_are_deterministic_whatever_the_order_of_reads() -> None:
    a = FakePipedrive(seed=5, scale={"deals": 30, "persons": 20})
    b = FakePipedrive(seed=5, scale={"deals": 30, "persons": 20})
    b.update("deals", 4, title="changed first")  # generated from the values before the change
    b.changelog("persons", 9)
    for rid in range(30, 0, -1):
        expect = a.changelog("deals", rid)
        got = b.changelog("deals", rid)
        assert (got[1:] if rid == 4 else got) == expect
    assert [a.changelog("persons", i) for i in range(1, 21)] == [
        b.changelog("persons", i) for i in range(1, 21)
    ]
    c = FakePipedrive(seed=6, scale={"deals": 30})
    assert [a.changelog("deals", i) for i in range(1, 31)] != [
        c.changelog("deals", i) for i in range(1, 31)
    ]


def test_deal_stories_move_up_the_pipeline_and_close_at_close_time() -> None:
    with FakePipedrive(token="t", seed=33, scale=SCALE, deal_stories=True) as f:
        order = {s["id"]: s["order_nr"] for s in f.records("stages")}
        moved = closed = 0
        for rid in f.ids("deals", deleted=None):
            deal = f.record("deals", rid)
            log = list(reversed(f.changelog("deals", rid)))  # oldest first
            assert [e["time"] for e in log] == sorted(e["time"] for e in log)
            moves = [e for e in log if e["field_key"] == "stage_id"]
            for e in moves:  # up the pipeline, one stage after the other, ending where it is
                assert order[int(e["new_value"])] == order[int(e["old_value"])] + 1
            if moves:
                moved += 1
                assert int(moves[-1]["new_value"]) == deal["stage_id"]
                assert moves[-1]["time"] <= _v1(deal["update_time"])
            statuses = [e for e in log if e["field_key"] == "status"]
            if deal["status"] in ("won", "lost"):
                closed += 1
                assert [(e["old_value"], e["new_value"], e["time"]) for e in statuses] == [
                    ("open", deal["status"], _v1(deal["close_time"]))
                ]
                assert all(e["time"] <= _v1(deal["close_time"]) for e in moves)
            elif deal["status"] == "open":
                assert statuses == []
        assert moved > 10 and closed > 10
