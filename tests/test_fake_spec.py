"""The fake Pipedrive against the official OpenAPI specs: shapes, names, nulls, custom fields."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from sources.pipedrive_fake import (
    CUSTOM_FIELD_TYPES,
    ROUTE_SCOPES,
    TOKEN_COSTS,
    TRICKY_DEAL_FIELDS,
    FakePipedrive,
)
from sources.pipedrive_fake import spec as pspec
from sources.pipedrive_fake.api import SCOPE_EXTRAS
from sources.pipedrive_fake.fields import ADDRESS_COMPONENTS
from sources.pipedrive_fake.testing import FakeClient

V2_LISTS = ["deals", "deals/archived", "persons", "organizations", "activities", "products",
            "pipelines", "stages", "projects", "projects/archived", "tasks"]  # fmt: skip
V2_FIELDS = ["dealFields", "personFields", "organizationFields", "productFields", "activityFields",
             "projectFields"]  # fmt: skip
V1_PLAIN = ["users", "activityTypes", "currencies", "leadLabels", "leadSources", "filters",
            "permissionSets"]  # fmt: skip
V1_PAGED = ["files", "callLogs", "roles"]
FOLLOWED = ["deals", "persons", "organizations", "products"]
V1_LISTS = ["leads", "leads/archived", "notes"]
V1_FIELDS = ["leadFields", "noteFields"]
CF_ENTITIES = {
    "deals": "dealFields",
    "persons": "personFields",
    "organizations": "organizationFields",
    "products": "productFields",
    "activities": "activityFields",
    "projects": "projectFields",
}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
V1_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
HASH = re.compile(r"^[0-9a-f]{40}$")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakePipedrive]:
    scale = {"deals": 400, "persons": 150, "activities": 200, "leads": 120, "notes": 120,
             "projects": 60, "tasks": 120, "files": 90, "call_logs": 70}  # fmt: skip
    with FakePipedrive(token="spec-token", seed=7, scale=scale) as f:
        yield f


@pytest.fixture(scope="module")
def client(fake: FakePipedrive) -> Iterator[FakeClient]:
    c = FakeClient(fake)
    yield c
    c.close()


def _params(path: str) -> dict[str, Any]:
    if path.startswith("deals"):
        return {"status": "open,won,lost,deleted"}
    if path.startswith("projects"):
        return {"status": "open,completed,canceled,deleted"}
    return {}


def _fields(client: FakeClient, endpoint: str) -> list[dict[str, Any]]:
    return client.v2_all(f"/api/v2/{endpoint}", limit=500)


@pytest.mark.parametrize("path", V2_LISTS + V2_FIELDS)
def test_v2_pages_validate_against_spec(client: FakeClient, path: str) -> None:
    validator = pspec.validator_for("v2", f"/{path}")
    pages = client.v2_pages(f"/api/v2/{path}", limit=50, **_params(path))
    assert pages
    for body in pages:
        assert pspec.errors(validator, body) == []
        assert set(body) == {"success", "data", "additional_data"}
        assert body["success"] is True
    assert pages[-1]["additional_data"]["next_cursor"] is None


@pytest.mark.parametrize("path", V1_LISTS + V1_FIELDS)
def test_v1_pages_validate_against_spec(client: FakeClient, path: str) -> None:
    validator = pspec.validator_for("v1", f"/{path}")
    pages = client.v1_pages(f"/v1/{path}", limit=40)
    for body in pages:
        assert pspec.errors(validator, body) == []
        assert body["success"] is True
        assert set(body["additional_data"]) == {"pagination"}
    assert pages[-1]["additional_data"]["pagination"]["more_items_in_collection"] is False


def test_validator_rejects_unknown_names_and_wrong_types(client: FakeClient) -> None:
    """The converted schemas are strict: a fake emitting an invented name would fail."""
    validator = pspec.validator_for("v2", "/deals")
    body = client.json("/api/v2/deals", limit=2)
    body["data"][0]["invented"] = 1
    assert any("invented" in e for e in pspec.errors(validator, body))
    body = client.json("/api/v2/deals", limit=2)
    body["data"][0]["id"] = "7"
    assert pspec.errors(validator, body)
    body = client.json("/api/v2/deals", limit=2)
    body["data"][0]["custom_fields"]["anything"] = {"x": 1}  # custom_fields stays open
    assert pspec.errors(validator, body) == []
    assert pspec.errors(validator, {"success": True, "data": [{"won_time": None}]}) == []


@pytest.mark.parametrize("path", V2_LISTS)
def test_v2_records_carry_every_spec_property(client: FakeClient, path: str) -> None:
    names = set(pspec.item_properties("v2", f"/{path}"))
    if path == "activities":
        names.add("custom_fields")  # a documented spec gap (KNOWN_GAPS)
    for item in client.v2_all(f"/api/v2/{path}", limit=500, **_params(path)):
        assert set(item) == names


def test_v1_records_carry_every_spec_property(client: FakeClient, fake: FakePipedrive) -> None:
    lead_names = set(pspec.item_properties("v1", "/leads"))
    custom_keys = set()
    for f in fake.custom_field_defs("leads"):
        custom_keys.add(f.key)
    for lead in client.v1_all("/v1/leads", limit=500):
        assert lead_names <= set(lead)
        extra = set(lead) - lead_names
        assert {k[:40] for k in extra} == custom_keys
    note_names = set(pspec.item_properties("v1", "/notes"))
    for note in client.v1_all("/v1/notes", limit=500):
        assert set(note) == note_names


def test_field_items_have_the_documented_names(client: FakeClient) -> None:
    base = {"field_name", "field_code", "field_type", "options", "subfields", "is_custom_field",
            "is_optional_response_field"}  # fmt: skip
    for endpoint in V2_FIELDS:
        extra = {"description"} if endpoint == "dealFields" else set()
        for item in _fields(client, endpoint):
            assert set(item) == base | extra, endpoint
    v1 = {"id", "key", "name", "order_nr", "field_type", "add_time", "update_time", "active_flag",
          "edit_flag", "options"}  # fmt: skip
    for item in client.v1_all("/v1/leadFields"):
        assert v1 <= set(item)


def test_401_body_matches_the_spec_and_the_real_api(fake: FakePipedrive) -> None:
    for token in (None, "wrong"):
        r = FakeClient(fake, token=token or "").get("/api/v2/deals")
        assert r.status_code == 401
        assert r.content == (
            b'{"success":false,"error":"unauthorized access","errorCode":401,'
            b'"error_info":"Please check developers.pipedrive.com"}'
        )
        assert pspec.errors(pspec.validator_for("v1", "*", "401"), r.json()) == []
    # without the documented gap the spec's 401 schema lacks error_info
    strict = pspec.validator_for("v1", "*", "401", gaps=False)
    assert any("error_info" in e for e in pspec.errors(strict, r.json()))


def test_token_costs_match_the_spec() -> None:
    for path, cost in TOKEN_COSTS.items():
        version = "v2" if path.startswith("/api/v2/") else "v1"
        spec_path = path.removeprefix("/api/v2").removeprefix("/v1")
        assert pspec.token_cost(version, spec_path) == cost, path


def test_route_scopes_are_the_specs_plus_documented_extras() -> None:
    assert set(ROUTE_SCOPES) == set(TOKEN_COSTS)
    for path, scopes in ROUTE_SCOPES.items():
        version = "v2" if path.startswith("/api/v2/") else "v1"
        op = pspec.operation(version, path.removeprefix("/api/v2").removeprefix("/v1"))
        spec_scopes = {s for sec in op["security"] for s in sec.get("oauth2", [])}
        extra = set(SCOPE_EXTRAS[path][0]) if path in SCOPE_EXTRAS else set()
        assert set(scopes) == spec_scopes | extra, path


def test_timestamps_and_dates_are_formatted_like_the_real_api(client: FakeClient) -> None:
    for path in ("deals", "persons", "organizations", "activities", "products", "stages"):
        for item in client.v2_all(f"/api/v2/{path}", limit=500, **_params(path)):
            for key in ("add_time", "update_time", "won_time", "lost_time", "close_time",
                        "stage_change_time", "marked_as_done_time"):  # fmt: skip
                if item.get(key) is not None:
                    assert RFC3339.match(item[key]), (path, key, item[key])
            for key in ("expected_close_date", "due_date", "birthday"):
                if item.get(key) is not None:
                    assert re.match(r"^\d{4}-\d{2}-\d{2}$", item[key])
    for note in client.v1_all("/v1/notes"):
        assert V1_TIME.match(note["add_time"]) and V1_TIME.match(note["update_time"])
    for lead in client.v1_all("/v1/leads"):
        assert pspec.is_rfc3339(lead["add_time"]) and pspec.is_rfc3339(lead["update_time"])


# properties the real API returns as null in a realistic share of records
NULLABLE = {
    "deals": ["won_time", "lost_time", "close_time", "org_id", "person_id", "expected_close_date",
              "probability", "lost_reason", "stage_change_time", "origin_id", "channel", "arr"],
    "persons": ["org_id", "picture_id", "postal_address", "birthday", "job_title", "notes"],
    "organizations": ["address", "website", "linkedin", "industry", "annual_revenue",
                      "employee_count"],
    "activities": ["deal_id", "lead_id", "person_id", "org_id", "due_time", "duration",
                   "marked_as_done_time", "location", "note", "priority"],
    "products": ["code", "description", "category", "unit", "billing_frequency_cycles"],
}  # fmt: skip


@pytest.mark.parametrize("entity", list(NULLABLE))
def test_realistic_nulls_in_standard_fields(client: FakeClient, entity: str) -> None:
    items = client.v2_all(f"/api/v2/{entity}", limit=500, **_params(entity))
    for key in NULLABLE[entity]:
        values = [i[key] for i in items]
        nulls = sum(v is None for v in values)
        assert 0 < nulls < len(values), (entity, key, nulls, len(values))


def test_nested_standard_fields_are_shaped_like_the_spec(client: FakeClient) -> None:
    persons = client.v2_all("/api/v2/persons", limit=500)
    assert any(p["emails"] == [] for p in persons) and any(p["emails"] for p in persons)
    for p in persons:
        for e in p["emails"] + p["phones"] + p["im"]:
            assert set(e) == {"value", "primary", "label"}
        if p["postal_address"]:
            assert "formatted_address" not in p["postal_address"]
    addresses = [p["postal_address"] for p in persons if p["postal_address"]]
    assert any(v is None for a in addresses for v in a.values())
    acts = client.v2_all("/api/v2/activities", limit=500)
    assert any(a["attendees"] for a in acts) and any(a["participants"] for a in acts)
    for product in client.v2_all("/api/v2/products", limit=500):
        assert product["prices"] and all(
            p["product_id"] == product["id"] for p in product["prices"]
        )


def test_references_are_consistent(client: FakeClient, fake: FakePipedrive) -> None:
    stages = {s["id"]: s for s in client.v2_all("/api/v2/stages")}
    pipelines = {p["id"] for p in client.v2_all("/api/v2/pipelines")}
    assert len(pipelines) == 2 and len(stages) == 10
    assert {s["pipeline_id"] for s in stages.values()} == pipelines
    persons = set(fake.ids("persons", deleted=None))
    orgs = set(fake.ids("organizations", deleted=None))
    users = {1, 2, 3, 4, 5}
    for d in client.v2_all("/api/v2/deals", limit=500, status="open,won,lost,deleted"):
        assert stages[d["stage_id"]]["pipeline_id"] == d["pipeline_id"]
        assert d["person_id"] is None or d["person_id"] in persons
        assert d["org_id"] is None or d["org_id"] in orgs
        assert d["owner_id"] in users
        assert (d["status"] == "won") == (d["won_time"] is not None)
        assert (d["status"] == "lost") == (d["lost_time"] is not None)
        assert d["is_deleted"] == (d["status"] == "deleted")
    for lead in client.v1_all("/v1/leads"):
        assert lead["person_id"] is not None or lead["organization_id"] is not None


# --- custom fields --------------------------------------------------------------------------------


def _custom(client: FakeClient, endpoint: str) -> dict[str, dict[str, Any]]:
    return {f["field_code"]: f for f in _fields(client, endpoint) if f["is_custom_field"]}


@pytest.mark.parametrize("entity", list(CF_ENTITIES))
def test_every_custom_field_type_exists_with_hash_keys(client: FakeClient, entity: str) -> None:
    custom = _custom(client, CF_ENTITIES[entity])
    assert {f["field_type"] for f in custom.values()} == set(CUSTOM_FIELD_TYPES)
    assert all(HASH.match(k) for k in custom)
    standard = [f for f in _fields(client, CF_ENTITIES[entity]) if not f["is_custom_field"]]
    assert all(not HASH.match(f["field_code"]) for f in standard)
    assert "id" in {f["field_code"] for f in standard}


def test_deal_fields_include_the_tricky_names(client: FakeClient, fake: FakePipedrive) -> None:
    custom = _custom(client, "dealFields")
    names = [f["field_name"] for f in custom.values()]
    for name, _type in TRICKY_DEAL_FIELDS:
        assert name in names
    assert names.count("Source") == 2
    assert len(fake.field_keys("deals", "Source")) == 2
    assert custom[fake.field_key("deals", "Título")]["field_name"] == "Título"
    assert custom[fake.field_key("deals", "价格")]["field_type"] == "monetary"
    standard = {f["field_code"] for f in _fields(client, "dealFields") if not f["is_custom_field"]}
    assert "title" in standard and fake.field_key("deals", "Title") not in standard


def _check_v2_value(ftype: str, v: Any) -> None:
    if ftype in ("varchar", "varchar_auto", "text", "phone"):
        assert isinstance(v, str)
    elif ftype == "double":
        assert isinstance(v, int | float) and not isinstance(v, bool)
    elif ftype == "date":
        assert re.match(r"^\d{4}-\d{2}-\d{2}$", v)
    elif ftype == "monetary":
        assert set(v) == {"value", "currency"} and isinstance(v["value"], int | float)
    elif ftype == "daterange":
        assert set(v) == {"value", "until"} and v["value"] <= v["until"]
    elif ftype == "timerange":
        assert set(v) == {"value", "until"} and re.match(r"^\d\d:\d\d:\d\d$", v["until"])
    elif ftype == "time":
        assert set(v) == {"value", "timezone_id", "timezone_name"}
    elif ftype in ("enum", "user", "org", "people"):
        assert isinstance(v, int) and not isinstance(v, bool)
    elif ftype == "set":
        assert isinstance(v, list) and v and all(isinstance(x, int) for x in v)
    elif ftype == "address":
        assert set(v) == {"value", *ADDRESS_COMPONENTS}
    else:
        raise AssertionError(ftype)


@pytest.mark.parametrize("entity", list(CF_ENTITIES))
def test_custom_field_values_have_v2_shapes_and_nulls(client: FakeClient, entity: str) -> None:
    custom = _custom(client, CF_ENTITIES[entity])
    items = client.v2_all(f"/api/v2/{entity}", limit=500, **_params(entity))
    for item in items:
        assert set(item["custom_fields"]) == set(custom)
    for key, f in custom.items():
        values = [i["custom_fields"][key] for i in items]
        assert any(v is None for v in values), (entity, f["field_name"])
        present = [v for v in values if v is not None]
        assert present, (entity, f["field_name"])
        for v in present:
            _check_v2_value(f["field_type"], v)


def test_composite_fields_have_subfields(client: FakeClient) -> None:
    custom = _custom(client, "dealFields")
    expect = {"monetary": ["currency"], "daterange": ["until"], "timerange": ["until"],
              "time": ["timezone_id", "timezone_name"], "address": list(ADDRESS_COMPONENTS)}  # fmt: skip
    for key, f in custom.items():
        if f["field_type"] in expect:
            codes = [s["field_code"] for s in f["subfields"]]
            assert codes == [f"{key}_{s}" for s in expect[f["field_type"]]]
        else:
            assert f["subfields"] is None
        if f["field_type"] in ("enum", "set"):
            assert f["options"] and all({"id", "label"} <= set(o) for o in f["options"])
        else:
            assert f["options"] is None
    value = next(f for f in _fields(client, "dealFields") if f["field_code"] == "value")
    assert [s["field_code"] for s in value["subfields"]] == ["value", "currency"]


def test_records_hold_option_ids_the_definitions_no_longer_have(
    client: FakeClient, fake: FakePipedrive
) -> None:
    for ftype in ("enum", "set"):
        key = fake.field_key_for_type("deals", ftype)
        defined = {o["id"] for o in _custom(client, "dealFields")[key]["options"]}
        stale = set(fake.stale_option_ids("deals", key))
        assert stale and not stale & defined
        seen: set[int] = set()
        for d in client.v2_all("/api/v2/deals", limit=500):
            v = d["custom_fields"][key]
            seen |= set(v if isinstance(v, list) else [v] if v is not None else [])
        assert seen & stale, ftype
        assert seen & defined, ftype


def test_leads_carry_deal_custom_fields_in_the_v1_flat_shape(
    client: FakeClient, fake: FakePipedrive
) -> None:
    defs = {f.key: f for f in fake.custom_field_defs("deals")}
    suffixes = {"monetary": ["currency"], "daterange": ["until"], "timerange": ["until"],
                "time": ["timezone_id", "timezone_name"], "address": list(ADDRESS_COMPONENTS)}  # fmt: skip
    leads = client.v1_all("/v1/leads") + client.v1_all("/v1/leads/archived")
    seen_types = set()
    for lead in leads:
        for key, f in defs.items():
            t = f.field_type
            assert key in lead
            for s in suffixes.get(t, []):
                assert f"{key}_{s}" in lead
            v = lead[key]
            if v is None:
                continue
            seen_types.add(t)
            if t == "enum":
                assert isinstance(v, str) and v.isdigit()
            elif t == "set":
                assert isinstance(v, str) and all(x.isdigit() for x in v.split(","))
            elif t in ("user", "org", "people"):
                assert isinstance(v, int)
            elif t == "monetary":
                assert isinstance(v, int | float) and isinstance(lead[f"{key}_currency"], str)
            elif t == "address":
                assert isinstance(v, str) and lead[f"{key}_formatted_address"] == v
            elif t in ("daterange", "timerange", "time", "date", "varchar", "text", "phone"):
                assert isinstance(v, str)
    assert seen_types == set(CUSTOM_FIELD_TYPES)
    lead_fields = {f["key"]: f for f in client.v1_all("/v1/leadFields")}
    assert set(defs) <= set(lead_fields)
    enum_key = fake.field_key_for_type("deals", "enum")
    assert {o["id"] for o in lead_fields[enum_key]["options_deleted"]} == set(
        fake.stale_option_ids("deals", enum_key)
    )


def test_same_seed_same_data_other_seed_other_keys() -> None:
    a = FakePipedrive(seed=3, scale={"deals": 30})
    b = FakePipedrive(seed=3, scale={"deals": 30})
    c = FakePipedrive(seed=4, scale={"deals": 30})
    assert a.records("deals") == b.records("deals")
    assert a.field_definitions("deals") == b.field_definitions("deals")
    assert a.field_key("deals", "Título") != c.field_key("deals", "Título")
    # more deals do not change the persons
    d = FakePipedrive(seed=3, scale={"deals": 60})
    assert a.records("persons") == d.records("persons")


def test_custom_field_count_knob() -> None:
    fake = FakePipedrive(scale={"deals": 20}, custom_field_count=40)
    assert len(fake.custom_field_defs("deals")) == 40
    assert len(fake.records("deals")[0]["custom_fields"]) == 40
    assert len(fake.custom_field_defs("persons")) == len(CUSTOM_FIELD_TYPES)
    fake = FakePipedrive(scale={"deals": 5}, custom_field_count={"persons": 3})
    assert len(fake.custom_field_defs("persons")) == 3


# --- the smaller entities, deal products, followers ------------------------------------------------


def _item_names(version: str, path: str) -> set[str]:
    return set(pspec.item_properties(version, path))


@pytest.mark.parametrize("path", V1_PLAIN)
def test_v1_plain_lists_validate_and_carry_every_property(client: FakeClient, path: str) -> None:
    body = client.json(f"/v1/{path}")
    assert pspec.errors(pspec.validator_for("v1", f"/{path}"), body) == []
    assert set(body) == {"success", "data"}  # no pagination on these
    assert body["data"]
    names = _item_names("v1", f"/{path}")
    for item in body["data"]:
        assert set(item) == names, path


@pytest.mark.parametrize("path", V1_PAGED)
def test_v1_paged_lists_validate_and_carry_every_property(client: FakeClient, path: str) -> None:
    validator = pspec.validator_for("v1", f"/{path}")
    names = _item_names("v1", f"/{path}")
    if path == "files":
        names |= {"log_id", "file_type"}  # a documented spec gap (KNOWN_GAPS)
    pages = client.v1_pages(f"/v1/{path}", limit=3 if path == "roles" else 9)
    assert len(pages) > 1
    for body in pages:
        assert pspec.errors(validator, body) == []
        assert set(body["additional_data"]) == {"pagination"}
        for item in body["data"]:
            assert set(item) == names


def test_users_me_validates_and_tells_the_company(client: FakeClient, fake: FakePipedrive) -> None:
    body = client.json("/v1/users/me")
    assert pspec.errors(pspec.validator_for("v1", "/users/me"), body) == []
    me = body["data"]
    schema = pspec.json_schema_for("v1", "/users/me")
    assert set(me) == set(pspec._object_at(schema, "data")["properties"])
    assert me["id"] == 1 and me["is_you"] is True and me["email"] == "ada@example.com"
    assert me["company_id"] == fake.company["id"]
    assert me["company_domain"] == fake.company["domain"] and me["company_name"]


def test_goals_find_validates_with_its_own_envelope(client: FakeClient) -> None:
    validator = pspec.validator_for("v1", "/goals/find")
    seen = []
    for assignee_type in ("person", "company", "team"):
        for active in ("true", "false"):
            body = client.json(
                "/v1/goals/find", **{"assignee.type": assignee_type}, is_active=active
            )
            assert pspec.errors(validator, body) == []
            assert body["statusCode"] == 20000 and body["service"] == "statistics-goals-api"
            seen += body["data"]["goals"]
    assert len(seen) == 6 and len({g["id"] for g in seen}) == 6
    strict = pspec.validator_for("v1", "/goals/find", gaps=False)
    assert any("statusCode" in e for e in pspec.errors(strict, body))


def test_deal_products_validate_in_batches(client: FakeClient, fake: FakePipedrive) -> None:
    validator = pspec.validator_for("v2", "/deals/products")
    names = _item_names("v2", "/deals/products")
    products = set(fake.ids("products", deleted=None))
    deal_ids = fake.ids("deals", deleted=None)
    got = []
    for i in range(0, len(deal_ids), 100):
        batch = deal_ids[i : i + 100]
        for body in client.v2_pages(
            "/api/v2/deals/products", deal_ids=",".join(map(str, batch)), limit=60
        ):
            assert pspec.errors(validator, body) == []
            for item in body["data"]:
                assert set(item) == names
                assert item["deal_id"] in batch and item["product_id"] in products
                got.append(item)
    assert got == fake.deal_products()
    per_deal = [sum(1 for a in got if a["deal_id"] == d) for d in deal_ids]
    assert min(per_deal) == 0 and max(per_deal) == 4
    for key in ("comments", "billing_start_date", "billing_frequency_cycles"):
        assert any(a[key] is None for a in got) and any(a[key] is not None for a in got), key


@pytest.mark.parametrize("entity", FOLLOWED)
def test_followers_and_their_changelog_validate(client: FakeClient, entity: str) -> None:
    for sub in ("followers", "followers/changelog"):
        validator = pspec.validator_for("v2", f"/{entity}/{{id}}/{sub}")
        names = _item_names("v2", f"/{entity}/{{id}}/{sub}")
        for rid in range(1, 16):
            body = client.json(f"/api/v2/{entity}/{rid}/{sub}")
            assert pspec.errors(validator, body) == []
            assert body["data"] and all(set(i) == names for i in body["data"])


NEW_NULLABLE = {
    "/v1/users": ["phone", "icon_url"],
    "/v1/filters": ["last_used_time", "custom_view_id", "filter_code"],
    "/v1/files": ["deal_id", "person_id", "description", "lead_id"],
    "/v1/callLogs": ["subject", "note", "deal_id", "org_id", "from_phone_number"],
    "/api/v2/projects": ["description", "health_status", "end_date", "start_date"],
    "/api/v2/tasks": ["description", "due_date", "parent_task_id", "priority",
                      "marked_as_done_time"],
}  # fmt: skip


@pytest.mark.parametrize("path", list(NEW_NULLABLE))
def test_realistic_nulls_in_the_smaller_entities(client: FakeClient, path: str) -> None:
    if path.startswith("/v1/"):
        items = (
            client.v1_all(path, limit=50)
            if path in ("/v1/files", "/v1/callLogs")
            else client.json(path)["data"]
        )
    else:
        items = client.v2_all(path, limit=500, **_params(path.removeprefix("/api/v2/")))
    for key in NEW_NULLABLE[path]:
        nulls = sum(i[key] is None for i in items)
        assert 0 < nulls <= len(items), (path, key)
        if key != "filter_code":
            assert nulls < len(items), (path, key)


def test_timestamps_of_the_smaller_entities(client: FakeClient) -> None:
    v1 = {"/v1/users": ("created", "modified", "last_login"),
          "/v1/activityTypes": ("add_time", "update_time"),
          "/v1/filters": ("add_time", "update_time", "last_used_time")}  # fmt: skip
    for path, keys in v1.items():
        for item in client.json(path)["data"]:
            for key in keys:
                assert item[key] is None or V1_TIME.match(item[key]), (path, key)
    for item in client.v1_all("/v1/files", limit=100):
        assert V1_TIME.match(item["add_time"]) and V1_TIME.match(item["update_time"])
    for item in client.json("/v1/leadLabels")["data"]:
        assert RFC3339_MS.match(item["add_time"]) and RFC3339_MS.match(item["update_time"])
    for item in client.v1_all("/v1/callLogs", limit=50):
        assert RFC3339_MS.match(item["start_time"]) and item["end_time"] >= item["start_time"]
    for path in ("projects", "tasks"):
        for item in client.v2_all(f"/api/v2/{path}", **_params(path)):
            assert RFC3339_MS.match(item["add_time"]) and RFC3339_MS.match(item["update_time"])
    for item in client.json("/api/v2/deals/products", deal_ids="1,2,3,4,5,6,7,8")["data"]:
        assert RFC3339.match(item["add_time"]) and RFC3339.match(item["update_time"])
    for item in client.json("/api/v2/deals/1/followers")["data"]:
        assert RFC3339.match(item["add_time"])


def test_references_of_the_smaller_entities(client: FakeClient, fake: FakePipedrive) -> None:
    users = {u["id"] for u in client.json("/v1/users")["data"]}
    sets = {p["id"] for p in client.json("/v1/permissionSets")["data"]}
    roles = {r["id"] for r in client.v1_all("/v1/roles")}
    for u in client.json("/v1/users")["data"]:
        assert {a["permission_set_id"] for a in u["access"]} <= sets
        assert u["role_id"] in roles
    projects = {p["id"] for p in fake.records("projects", deleted=None)}
    tasks = client.v2_all("/api/v2/tasks", limit=500)
    by_id = {t["id"]: t for t in tasks}
    for t in tasks:
        assert t["project_id"] in projects and set(t["assignee_ids"]) <= users
        if t["parent_task_id"] is not None:
            assert by_id[t["parent_task_id"]]["project_id"] == t["project_id"]
    labels = {lab["id"] for lab in client.json("/v1/leadLabels")["data"]}
    for lead in client.v1_all("/v1/leads"):
        assert set(lead["label_ids"]) <= labels
    types = {t["key_string"] for t in client.json("/v1/activityTypes")["data"]}
    assert {a["type"] for a in client.v2_all("/api/v2/activities", limit=500)} <= types
    currencies = {c["code"] for c in client.json("/v1/currencies")["data"]}
    assert {d["currency"] for d in client.v2_all("/api/v2/deals", limit=500)} <= currencies
