"""The fake's smaller entities, deal products and followers: paging, filters and mutations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from sources.pipedrive_fake import DEFAULT_SCALE, EXTRA_TABLES, FakePipedrive
from sources.pipedrive_fake.testing import FakeClient

SCALE = {"deals": 150, "persons": 40, "organizations": 20, "activities": 40, "products": 12,
         "leads": 30, "notes": 40, "files": 45, "call_logs": 33, "projects": 25, "tasks": 70}  # fmt: skip
ALL_PROJECT_STATUSES = "open,completed,canceled,deleted"


@pytest.fixture(scope="module")
def shared() -> Iterator[FakePipedrive]:
    """Read-only tests share one fake."""
    with FakePipedrive(token="t", seed=21, scale=SCALE) as f:
        yield f


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    with FakePipedrive(token="t", seed=22, scale=SCALE) as f:
        yield f


def _client(fake: FakePipedrive) -> FakeClient:
    return FakeClient(fake)


def _ts(fake: FakePipedrive, delta_s: float = 0) -> str:
    return (fake.now + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- scale and determinism --------------------------------------------------------------------------


def test_scale_sizes_every_table_and_rejects_unknown_keys() -> None:
    small = {t: 2 for t in EXTRA_TABLES}
    fake = FakePipedrive(scale={"deals": 5, **small, "users": 7, "activity_types": 12})
    for t in EXTRA_TABLES:
        want = {"users": 7, "activity_types": 12}.get(t, 2)
        assert len(fake.records(t, deleted=None)) == want, t
    assert set(EXTRA_TABLES) <= set(DEFAULT_SCALE)
    with pytest.raises(ValueError, match="unknown scale keys"):
        FakePipedrive(scale={"deal_products": 3})


def test_same_seed_same_extras_whatever_the_order_of_reads() -> None:
    a = FakePipedrive(seed=5, scale={"deals": 30})
    b = FakePipedrive(seed=5, scale={"deals": 30})
    for t in EXTRA_TABLES:
        assert a.records(t, deleted=None) == b.records(t, deleted=None), t
    assert a.deal_products([30, 1, 7]) == [
        x for x in b.deal_products() if x["deal_id"] in (1, 7, 30)
    ]
    b.update("deals", 4, title="changed")  # generated from the times before the change
    assert a.deal_products(4) == b.deal_products(4)
    assert a.followers("deals", 2) == b.followers("deals", 2)


# --- v1 lists ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "table"), [("files", "files"), ("callLogs", "call_logs"),
                                             ("roles", "roles")])  # fmt: skip
def test_v1_paged_lists_hold_every_record_once(
    shared: FakePipedrive, path: str, table: str
) -> None:
    c = _client(shared)
    for limit in (1, 7, 50):
        items = c.v1_all(f"/v1/{path}", limit=limit)
        assert [i["id"] for i in items] == shared.ids(table)
    empty = c.json(f"/v1/{path}", start=10_000)
    assert empty["data"] is None
    assert empty["additional_data"]["pagination"]["more_items_in_collection"] is False


def test_v1_limits_are_cut_to_the_documented_maximum(shared: FakePipedrive) -> None:
    c = _client(shared)
    body = c.json("/v1/callLogs", limit=500)
    assert len(body["data"]) == 33 and body["additional_data"]["pagination"]["limit"] == 50
    body = c.json("/v1/callLogs")
    assert body["additional_data"]["pagination"]["limit"] == 50
    body = c.json("/v1/files", limit=500)
    assert body["additional_data"]["pagination"]["limit"] == 100
    assert c.get("/v1/files", limit=0).status_code == 400
    assert c.get("/v1/roles", start=-1).status_code == 400


def test_v1_pagination_quirks_apply_to_the_new_lists(fake: FakePipedrive) -> None:
    c = _client(fake)
    fake.v1_pagination_mode = "omit_next_start"
    body = c.json("/v1/files", limit=10)
    assert body["additional_data"]["pagination"]["more_items_in_collection"] is True
    assert "next_start" not in body["additional_data"]["pagination"]
    assert len(c.v1_all("/v1/files", limit=10)) == 45
    fake.v1_pagination_mode = "false_with_next_start"
    body = c.json("/v1/callLogs", limit=50)
    assert body["additional_data"]["pagination"] == {
        "start": 0, "limit": 50, "more_items_in_collection": False, "next_start": 50,
    }  # fmt: skip


def test_files_sort(shared: FakePipedrive) -> None:
    c = _client(shared)
    items = c.v1_all("/v1/files", sort="update_time DESC", limit=20)
    times = [i["update_time"] for i in items]
    assert times == sorted(times, reverse=True) and len(items) == 45
    assert [i["id"] for i in c.v1_all("/v1/files", sort="id DESC")] == shared.ids("files")[::-1]
    assert c.get("/v1/files", sort="file_size").status_code == 400
    # callLogs and roles have no sort parameter: it is ignored
    assert [i["id"] for i in c.v1_all("/v1/callLogs", sort="id DESC")] == shared.ids("call_logs")


def test_v1_plain_list_filters(shared: FakePipedrive) -> None:
    c = _client(shared)
    assert [x["code"] for x in c.json("/v1/currencies", term="kron")["data"]] == ["SEK"]
    assert [x["code"] for x in c.json("/v1/currencies", term="usd")["data"]] == ["USD"]
    deals = c.json("/v1/filters", type="deals")["data"]
    assert deals and {f["type"] for f in deals} == {"deals"}
    assert c.get("/v1/filters", type="nope").status_code == 400
    sales = c.json("/v1/permissionSets", app="sales")["data"]
    assert len(sales) == 2 and {p["app"] for p in sales} == {"sales"}
    assert c.json("/v1/leadSources")["data"][0] == {"name": "Manually created"}


def test_goals_find_returns_your_goals_unless_asked_for_everyones(shared: FakePipedrive) -> None:
    c = _client(shared)
    mine = c.json("/v1/goals/find")["data"]["goals"]
    assert [g["assignee"] for g in mine] == [{"id": 1, "type": "person"}]
    everyone = []
    for gtype in ("deals_won", "deals_progressed", "activities_completed", "activities_added",
                  "deals_started"):  # fmt: skip
        everyone += c.json("/v1/goals/find", **{"type.name": gtype})["data"]["goals"]
    assert len(everyone) == 5 and all(g["is_active"] for g in everyone)
    inactive = c.json("/v1/goals/find", is_active="false", **{"assignee.type": "person"})
    assert [g["is_active"] for g in inactive["data"]["goals"]] == [False]
    user2 = c.json("/v1/goals/find", **{"assignee.id": 2})["data"]["goals"]
    assert [g["assignee"]["id"] for g in user2] == [2]
    none = c.json("/v1/goals/find", **{"period.start": "1990-01-01", "period.end": "1990-12-31",
                                        "assignee.type": "person"})  # fmt: skip
    assert none["data"] == {"goals": []}
    assert c.get("/v1/goals/find", **{"type.name": "nope"}).status_code == 400


def test_leads_archived_has_no_updated_since_and_notes_filters(fake: FakePipedrive) -> None:
    c = _client(fake)
    archived = c.v1_all("/v1/leads/archived")
    assert archived
    # the spec gives /leads/archived no updated_since: it is ignored there (and honoured on /leads)
    assert c.v1_all("/v1/leads/archived", updated_since="2099-01-01T00:00:00Z") == archived
    assert c.json("/v1/leads", updated_since="2099-01-01T00:00:00Z")["data"] is None
    fake.update("notes", 2, project_id=3, pinned_to_deal_flag=True)
    assert [n["id"] for n in c.v1_all("/v1/notes", project_id=3)] == [2]
    pinned = c.v1_all("/v1/notes", pinned_to_deal_flag=1)
    assert 2 in [n["id"] for n in pinned] and all(n["pinned_to_deal_flag"] for n in pinned)
    day = fake.record("notes", 2)["add_time"][:10]
    on_day = c.v1_all("/v1/notes", start_date=day, end_date=day)
    assert 2 in [n["id"] for n in on_day] and all(n["add_time"][:10] == day for n in on_day)
    assert c.get("/v1/notes", start_date="yesterday").status_code == 400


# --- v2 projects and tasks -------------------------------------------------------------------------


def test_projects_lists_statuses_archive_and_filters(shared: FakePipedrive) -> None:
    c = _client(shared)
    every = shared.records("projects", deleted=None)
    live = c.v2_all("/api/v2/projects", limit=4, status=ALL_PROJECT_STATUSES)
    archived = c.v2_all("/api/v2/projects/archived", limit=4, status=ALL_PROJECT_STATUSES)
    assert sorted(p["id"] for p in live + archived) == [p["id"] for p in every]
    assert all(p["archive_time"] is None for p in live)
    assert archived and all(p["archive_time"] is not None for p in archived)
    default = c.v2_all("/api/v2/projects")
    assert {p["status"] for p in default} <= {"open", "completed", "canceled"}
    assert len(default) == sum(p["status"] != "deleted" for p in live)
    assert {p["status"] for p in c.v2_all("/api/v2/projects", status="completed")} == {"completed"}
    assert c.get("/api/v2/projects", status="won").status_code == 400
    # no sort_by in the spec: ignored, id order
    ids = [p["id"] for p in c.v2_all("/api/v2/projects", sort_by="update_time", limit=3)]
    assert ids == sorted(ids)
    with_deal = next(p for p in live if p["deal_ids"])
    got = c.v2_all(
        "/api/v2/projects", deal_id=with_deal["deal_ids"][0], status=ALL_PROJECT_STATUSES
    )
    assert with_deal["id"] in [p["id"] for p in got]
    assert all(with_deal["deal_ids"][0] in p["deal_ids"] for p in got)
    phase = with_deal["phase_id"]
    assert {p["phase_id"] for p in c.v2_all("/api/v2/projects", phase_id=phase)} == {phase}


def test_tasks_filters(shared: FakePipedrive) -> None:
    c = _client(shared)
    tasks = c.v2_all("/api/v2/tasks", limit=9)
    assert [t["id"] for t in tasks] == shared.ids("tasks")
    done = c.v2_all("/api/v2/tasks", is_done="true")
    assert done and all(t["is_done"] for t in done) and len(done) < len(tasks)
    roots = c.v2_all("/api/v2/tasks", parent_task_id="null")
    assert roots and all(t["parent_task_id"] is None for t in roots) and len(roots) < len(tasks)
    child = next(t for t in tasks if t["parent_task_id"])
    subs = c.v2_all("/api/v2/tasks", parent_task_id=child["parent_task_id"])
    assert child["id"] in [t["id"] for t in subs]
    assert {t["project_id"] for t in c.v2_all("/api/v2/tasks", project_id=2)} <= {2}
    mine = c.v2_all("/api/v2/tasks", assignee_id=3)
    assert mine and all(3 in t["assignee_ids"] for t in mine)


# --- deal products ---------------------------------------------------------------------------------


def test_deal_products_batches_and_limits(shared: FakePipedrive) -> None:
    c = _client(shared)
    ids = ",".join(str(i) for i in range(1, 101))
    body = c.json("/api/v2/deals/products", deal_ids=ids, limit=500)
    assert body["data"] == shared.deal_products(range(1, 101))
    too_many = c.get("/api/v2/deals/products", deal_ids=ids + ",101")
    assert too_many.status_code == 400 and too_many.json()["success"] is False
    assert "100" in too_many.json()["error"]
    assert c.get("/api/v2/deals/products").status_code == 400
    assert c.get("/api/v2/deals/products", deal_ids="1,x").status_code == 400
    assert c.json("/api/v2/deals/products", deal_ids="999999")["data"] == []
    # the same deal twice counts once
    assert c.json("/api/v2/deals/products", deal_ids="3,3")["data"] == shared.deal_products(3)


@pytest.mark.parametrize("sort_by", ["id", "deal_id", "add_time", "update_time", "order_nr"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_deal_products_pages_in_order(shared: FakePipedrive, sort_by: str, direction: str) -> None:
    c = _client(shared)
    ids = ",".join(str(i) for i in range(1, 61))
    items = c.v2_all("/api/v2/deals/products", deal_ids=ids, limit=7, sort_by=sort_by,
                     sort_direction=direction)  # fmt: skip
    expected = shared.deal_products(range(1, 61))
    assert sorted(a["id"] for a in items) == [a["id"] for a in expected]
    keys = [(a[sort_by] if a[sort_by] is not None else -1, a["id"]) for a in items]
    assert keys == sorted(keys, reverse=direction == "desc")


def test_deal_product_mutations_bump_the_deal(fake: FakePipedrive) -> None:
    c = _client(fake)
    deal_id = next(d["id"] for d in fake.records("deals") if not fake.deal_products(d["id"]))
    stamp = _ts(fake)
    att = fake.add_deal_product(deal_id, 3, quantity=2, item_price=50, tax=0, discount=0)
    assert att["deal_id"] == deal_id and att["product_id"] == 3 and att["sum"] == 100
    assert att["add_time"] == att["update_time"] == stamp
    assert fake.record("deals", deal_id)["update_time"] == stamp
    changed = c.v2_all("/api/v2/deals", updated_since=stamp)
    assert [d["id"] for d in changed] == [deal_id]
    assert c.json("/api/v2/deals/products", deal_ids=str(deal_id))["data"] == [att]

    later = _ts(fake)
    updated = fake.update_deal_product(att["id"], quantity=3)
    assert updated["sum"] == 150 and updated["update_time"] == later
    assert updated["add_time"] == stamp
    assert fake.record("deals", deal_id)["update_time"] == later

    other = next(a for a in fake.deal_products() if a["deal_id"] != deal_id)
    last = _ts(fake)
    fake.remove_deal_product(other["id"])
    assert other["id"] not in [a["id"] for a in fake.deal_products(other["deal_id"])]
    assert fake.record("deals", other["deal_id"])["update_time"] == last
    with pytest.raises(KeyError):
        fake.remove_deal_product(other["id"])
    with pytest.raises(ValueError, match="no field"):
        fake.update_deal_product(att["id"], colour="red")
    with pytest.raises(KeyError):
        fake.add_deal_product(deal_id, 99_999)
    assert {a["id"] for a in fake.records("deal_products")} == {
        a["id"] for a in fake.deal_products()
    }


def test_new_deals_start_without_products(fake: FakePipedrive) -> None:
    deal = fake.add("deals", title="Fresh")
    assert fake.deal_products(deal["id"]) == []
    att = fake.add_deal_product(deal["id"], 1)
    assert att["id"] > 150 * 4 and att["name"] == fake.record("products", 1)["name"]


# --- followers ----------------------------------------------------------------------------------


def test_followers_mutations_and_changelog(fake: FakePipedrive) -> None:
    c = _client(fake)
    before = c.json("/api/v2/deals/5/followers")["data"]
    assert before == fake.followers("deals", 5)
    owner = fake.record("deals", 5)["owner_id"]
    assert before[0]["user_id"] == owner
    deal_time = fake.record("deals", 5)["update_time"]
    new_user = next(u for u in (1, 2, 3, 4, 5) if u not in {f["user_id"] for f in before})
    stamp = _ts(fake)
    fake.add_follower("deals", 5, new_user, actor_user_id=2)
    after = c.json("/api/v2/deals/5/followers")["data"]
    assert after[-1] == {"user_id": new_user, "add_time": stamp}
    assert fake.record("deals", 5)["update_time"] == deal_time  # following is not an update
    fake.remove_follower("deals", 5, new_user)
    assert c.json("/api/v2/deals/5/followers")["data"] == before
    log = c.json("/api/v2/deals/5/followers/changelog")["data"]
    assert [(e["action"], e["follower_user_id"]) for e in log[-2:]] == [
        ("added", new_user), ("removed", new_user),
    ]  # fmt: skip
    assert log[-2]["actor_user_id"] == 2
    with pytest.raises(ValueError):
        fake.remove_follower("deals", 5, new_user)
    with pytest.raises(ValueError):
        fake.followers("leads", 5)
    pages = c.v2_pages("/api/v2/deals/5/followers/changelog", limit=1)
    assert [p["data"][0] for p in pages] == log
    assert c.get("/api/v2/persons/99999/followers").status_code == 404
    assert c.get("/api/v2/persons/abc/followers").status_code == 400


# --- mutations of the smaller entities ---------------------------------------------------------------


def test_settings_like_entities_can_change_between_runs(fake: FakePipedrive) -> None:
    c = _client(fake)
    webinar = fake.add("activity_types", name="Webinar", key_string="webinar", icon_key="camera")
    types = c.json("/v1/activityTypes")["data"]
    assert types[-1] == webinar and webinar["active_flag"] is True
    fake.delete("activity_types", webinar["id"])  # deactivated, still listed
    assert c.json("/v1/activityTypes")["data"][-1]["active_flag"] is False

    stamp = fake.now.strftime("%Y-%m-%d %H:%M:%S")
    fake.update("users", 2, name="Bruno Renamed")
    user = next(u for u in c.json("/v1/users")["data"] if u["id"] == 2)
    assert user["name"] == "Bruno Renamed" and user["modified"] == stamp
    fake.delete("users", 3)
    assert next(u for u in c.json("/v1/users")["data"] if u["id"] == 3)["active_flag"] is False

    fake.delete("filters", 1)
    assert 1 not in [f["id"] for f in c.json("/v1/filters")["data"]]
    assert fake.records("filters", deleted=True)[0]["active_flag"] is False

    label = fake.add("lead_labels", name="Partner", color="green")
    assert label in c.json("/v1/leadLabels")["data"]
    assert label["add_time"].endswith("Z") and "." in label["add_time"]
    fake.add("lead_sources", name="Trade fair")
    fake.delete("lead_sources", "Deal")
    names = [s["name"] for s in c.json("/v1/leadSources")["data"]]
    assert "Trade fair" in names and "Deal" not in names
    with pytest.raises(ValueError, match="cannot change"):
        fake.update("lead_sources", "API", name="Api")

    fake.add("currencies", code="CZK", name="Czech Koruna", symbol="Kč")
    assert "CZK" in [x["code"] for x in c.json("/v1/currencies")["data"]]
    goal = fake.add("goals", title="Q3 calls")
    assert goal["is_active"] and isinstance(goal["id"], str)
    assert goal in c.json("/v1/goals/find", **{"assignee.type": goal["assignee"]["type"],
                                               "assignee.id": goal["assignee"]["id"]})["data"]["goals"]  # fmt: skip
    fake.delete("call_logs", fake.ids("call_logs")[0])
    assert len(c.v1_all("/v1/callLogs")) == 32
    fake.update("roles", 4, name="Customer success")
    assert c.v1_all("/v1/roles")[3]["name"] == "Customer success"
    fake.update("files", 2, description="Updated")
    files = c.v1_all("/v1/files", sort="update_time DESC")
    assert files[0]["id"] == 2 and files[0]["description"] == "Updated"


def test_project_and_task_mutations(fake: FakePipedrive) -> None:
    c = _client(fake)
    project = fake.add("projects", title="Launch")
    assert project["status"] == "open" and project["archive_time"] is None
    assert set(project["custom_fields"]) == {f.key for f in fake.custom_field_defs("projects")}
    key = fake.field_key_for_type("projects", "monetary")
    updated = fake.update(
        "projects",
        project["id"],
        status="completed",
        custom_fields={key: {"value": 5, "currency": "EUR"}},
    )
    assert updated["status_change_time"] == updated["update_time"]
    assert updated["custom_fields"][key] == {"value": 5, "currency": "EUR"}
    fake.archive("projects", project["id"])
    assert project["id"] in [p["id"] for p in c.v2_all("/api/v2/projects/archived")]
    assert project["id"] not in [p["id"] for p in c.v2_all("/api/v2/projects")]
    fake.unarchive("projects", project["id"])
    fake.delete("projects", project["id"])
    assert project["id"] not in [p["id"] for p in c.v2_all("/api/v2/projects")]
    deleted = c.v2_all("/api/v2/projects", status="deleted")
    assert project["id"] in [p["id"] for p in deleted]
    with pytest.raises(ValueError, match="status"):
        fake.update("projects", project["id"], status="won")

    task = fake.add("tasks", project_id=project["id"], title="Kick-off")
    assert task["is_done"] is False and task["marked_as_done_time"] is None
    done = fake.update("tasks", task["id"], is_done=True)
    assert done["marked_as_done_time"] == done["update_time"]
    assert [t["id"] for t in c.v2_all("/api/v2/tasks", project_id=project["id"])] == [task["id"]]
    fake.delete("tasks", task["id"])
    assert c.v2_all("/api/v2/tasks", project_id=project["id"]) == []


def test_project_fields_change_like_the_others(fake: FakePipedrive) -> None:
    c = _client(fake)
    key = fake.add_field("projects", "Go-live", "date")
    codes = [f["field_code"] for f in c.v2_all("/api/v2/projectFields")]
    assert key in codes
    assert all(p["custom_fields"][key] is None for p in c.v2_all("/api/v2/projects"))
    fake.delete_field("projects", key)
    assert key not in [f["field_code"] for f in c.v2_all("/api/v2/projectFields")]
