"""Webhooks v2 in the fake: /v1/webhooks registrations, payload shapes, delivery policy, faults.

A tiny HTTP receiver in the test process stands in for the listener; every wait is on an
event (the fake's `wait_webhooks`/`wait_until`, the receiver's condition), never a sleep.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import requests

from sources.pipedrive_fake import FakePipedrive, WebhookFault
from sources.pipedrive_fake import spec as pspec
from sources.pipedrive_fake.webhooks import WEBHOOK_ROUTES

TOKEN = "hook-token"
SMALL = {"deals": 20, "persons": 10, "organizations": 5, "activities": 10, "products": 5,
         "leads": 10, "notes": 10, "projects": 4, "tasks": 6}  # fmt: skip
FAST = {"time_scale": 0.001}  # retries after 3, 30, 150 ms; a ban lasts 1.8 s

# the keys of `data` in the examples of the webhooks v2 migration guide
# (https://pipedrive.readme.io/docs/webhooks-v2-migration-guide#webhooks-v2-examples)
DOCUMENTED_DATA_KEYS: dict[str, set[str]] = {
    "deal": {"add_time", "channel", "channel_id", "close_time", "creator_user_id", "currency",
             "custom_fields", "expected_close_date", "first_won_time", "id", "label_ids",
             "lost_reason", "lost_time", "org_id", "origin", "origin_id", "owner_id",
             "person_id", "pipeline_id", "probability", "stage_change_time", "stage_id",
             "status", "title", "update_time", "value", "visible_to", "won_time"},
    "person": {"add_time", "custom_fields", "emails", "first_name", "id", "label", "last_name",
               "name", "org_id", "owner_id", "phones", "update_time", "visible_to"},
    "organization": {"add_time", "address", "country_code", "custom_fields", "id", "label",
                     "name", "owner_id", "picture_id", "update_time", "visible_to"},
    "activity": {"active_flag", "add_time", "busy_flag", "custom_fields", "deal_id", "done",
                 "due_date", "due_time", "duration", "id", "lead_id", "location", "org_id",
                 "owner_id", "person_id", "public_description", "subject", "type",
                 "update_time", "update_user_id"},
    "lead": {"add_time", "channel", "channel_id", "creator_id", "custom_fields",
             "expected_close_date", "id", "is_archived", "label_ids", "next_activity_id",
             "organization_id", "origin", "origin_id", "owner_id", "person_id", "source_name",
             "title", "update_time", "was_seen", "value"},
    "note": {"id", "user_id", "deal_id", "person_id", "org_id", "lead_id", "project_id",
             "active_flag", "content", "add_time", "update_time", "pinned_to_deal_flag",
             "pinned_to_person_flag", "pinned_to_organization_flag"},
    "pipeline": {"id", "name", "url_title", "order_nr", "active_flag", "deal_probability",
                 "add_time", "update_time"},
    "product": {"add_time", "category", "code", "custom_fields", "description", "id", "name",
                "owner_id", "selectable", "tax", "unit", "update_time", "visible_to", "prices"},
    "stage": {"id", "name", "active_flag", "rotten_days", "order_nr", "deal_probability",
              "rotten_flag", "add_time", "pipeline_id", "update_time"},
    "user": {"id", "default_currency", "name", "email", "phone", "locale", "lang",
             "active_flag", "last_login", "timezone_name", "icon_url", "created", "modified",
             "access"},
}  # fmt: skip
# where the fake departs from those 2022-2024 examples, and why (WEBHOOKS.md)
ADDED_KEYS = {
    "deal": {"is_archived"},  # deals can be archived since 2025
    "person": {"label_ids"},  # several labels since 2024 (the API's `label` became label_ids)
    "organization": {"label_ids", "website", "linkedin", "industry", "annual_revenue",
                     "employee_count"},  # changelog 2026-05-21
}  # fmt: skip
RENAMED_AWAY = {"person": {"label"}, "organization": {"label"}}
# the meta block of the webhooks v2 guide (https://pipedrive.readme.io/docs/guide-for-webhooks-v2)
META_KEYS = {"action", "entity", "company_id", "correlation_id", "entity_id", "id",
             "is_bulk_edit", "timestamp", "type", "user_id", "version", "webhook_id",
             "webhook_owner_id", "change_source", "attempt", "host", "permitted_user_ids"}  # fmt: skip


# --- a tiny receiver standing in for the listener --------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        return self.body["meta"]


class Receiver:
    """Records every POST; answers `statuses` in turn (then 200); `stall()` holds answers."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self.cond = threading.Condition()
        self.release = threading.Event()
        self.release.set()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pipedrive/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.cond:  # recorded on arrival: the order the fake sent them in
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append(Received(self.path, headers, orjson.loads(body)))
                    receiver.cond.notify_all()
                receiver.release.wait(30)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        self._server = server

    def down(self) -> None:
        """Stop listening: deliveries get "connection refused"."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def wait_for(self, n: int, timeout: float = 20) -> list[Received]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.received) >= n, timeout), self.received
            return list(self.received)

    def close(self) -> None:
        self.release.set()
        if self._server is not None:
            self.down()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    with FakePipedrive(token=TOKEN, seed=3, scale=SMALL) as f:
        yield f


def _api(
    fake: FakePipedrive, method: str, path: str, token: str | None = TOKEN, **kw: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token and token.startswith("v1u:") else {}
    if token and not token.startswith("v1u:"):
        headers["x-api-token"] = token
    return requests.request(method, fake.url(path), headers=headers, timeout=10, **kw)


def _register(fake: FakePipedrive, url: str, token: str | None = TOKEN, **fields: Any) -> Any:
    body = {"subscription_url": url, "event_action": "*", "event_object": "*", "name": "t"}
    return _api(fake, "POST", "/v1/webhooks", token, json={**body, **fields})


def _app_token(fake: FakePipedrive, client_id: str, scopes: list[str] | None = None) -> str:
    fake.oauth_client(client_id, "secret", f"refresh-{client_id}", scopes=scopes or ["admin"])
    r = requests.post(
        fake.url("/oauth/token"),
        data={"grant_type": "refresh_token", "refresh_token": f"refresh-{client_id}"},
        auth=(client_id, "secret"),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _validator(path: str, status: str, method: str) -> Any:
    import jsonschema

    spec = pspec.load_spec("v1")
    schema = pspec.to_json_schema(pspec.response_schema("v1", path, status, method), spec)
    return jsonschema.Draft202012Validator(schema, format_checker=pspec.format_checker())


# --- registrations -----------------------------------------------------------------------------


def test_register_list_and_delete_match_the_spec(fake: FakePipedrive, receiver: Receiver) -> None:
    r = _register(fake, receiver.url, event_action="change", event_object="deal",
                  http_auth_user="hook", http_auth_password="pw")  # fmt: skip
    assert r.status_code == 201
    created = r.json()
    assert pspec.errors(_validator("/webhooks", "201", "post"), created) == []
    hook = created["data"]
    assert (hook["event_action"], hook["event_object"], hook["version"]) == (
        "change",
        "deal",
        "2.0",
    )
    assert (hook["type"], hook["is_active"], hook["user_id"]) == ("general", 1, 1)
    assert hook["subscription_url"] == receiver.url and hook["http_auth_user"] == "hook"

    listed = _api(fake, "GET", "/v1/webhooks")
    assert listed.status_code == 200
    assert pspec.errors(_validator("/webhooks", "200", "get"), listed.json()) == []
    assert [w["id"] for w in listed.json()["data"]] == [hook["id"]]

    gone = _api(fake, "DELETE", f"/v1/webhooks/{hook['id']}")
    assert (gone.status_code, gone.json()) == (200, {"status": "ok", "success": True})
    assert _api(fake, "GET", "/v1/webhooks").json()["data"] == []
    again = _api(fake, "DELETE", f"/v1/webhooks/{hook['id']}")
    assert again.status_code == 404
    assert again.json() == {"status": "error", "success": False, "errors": {"id": ["not found"]}}
    assert pspec.errors(_validator("/webhooks/{id}", "404", "delete"), again.json()) == []


def test_registration_charges_the_specs_token_costs(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    hook_id = _register(fake, receiver.url).json()["data"]["id"]
    _api(fake, "GET", "/v1/webhooks")
    _api(fake, "DELETE", f"/v1/webhooks/{hook_id}")
    costs = {(r.method, r.path): r.cost for r in fake.requests}
    assert costs == {
        ("POST", "/v1/webhooks"): pspec.token_cost("v1", "/webhooks", "post"),
        ("GET", "/v1/webhooks"): pspec.token_cost("v1", "/webhooks", "get"),
        ("DELETE", f"/v1/webhooks/{hook_id}"): pspec.token_cost("v1", "/webhooks/{id}", "delete"),
    }
    for (method, template), (cost, scopes) in WEBHOOK_ROUTES.items():
        spec_path = template.removeprefix("/v1")
        assert cost == pspec.token_cost("v1", spec_path, method.lower())
        op = pspec.operation("v1", spec_path, method.lower())
        assert set(scopes) == {s for sec in op["security"] for s in sec.get("oauth2", [])}


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"subscription_url": None, "name": None}, {"subscription_url", "name"}),
        ({"event_action": "added"}, {"event_action"}),  # a v1 action
        ({"event_object": "activityType"}, {"event_object"}),  # v1 only
        ({"subscription_url": "ftp://example.com/x"}, {"subscription_url"}),
        ({"subscription_url": "https://api.pipedrive.com/v1/deals"}, {"subscription_url"}),
        ({"user_id": 999}, {"user_id"}),
        ({"version": "3.0"}, {"version"}),
        ({"name": "x" * 256}, {"name"}),
    ],
)
def test_invalid_registrations_answer_400_with_the_errors(
    fake: FakePipedrive, receiver: Receiver, fields: dict[str, Any], errors: set[str]
) -> None:
    r = _register(fake, receiver.url, **fields)
    assert r.status_code == 400
    body = r.json()
    assert pspec.errors(_validator("/webhooks", "400", "post"), body) == []
    assert (body["status"], body["success"]) == ("error", False)
    assert set(body["errors"]) == errors
    assert _api(fake, "GET", "/v1/webhooks").json()["data"] == []


def test_a_form_encoded_registration_and_its_defaults(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    form = {"subscription_url": receiver.url, "event_action": "create", "event_object": "lead",
            "name": "leads"}  # fmt: skip
    r = _api(fake, "POST", "/v1/webhooks", data=form)
    assert r.status_code == 201
    hook = r.json()["data"]
    assert (hook["version"], hook["user_id"], hook["http_auth_user"]) == ("2.0", 1, None)


def test_forty_webhooks_per_user(fake: FakePipedrive, receiver: Receiver) -> None:
    ids = [_register(fake, receiver.url, name=f"h{i}").json()["data"]["id"] for i in range(40)]
    over = _register(fake, receiver.url)
    assert over.status_code == 400 and set(over.json()["errors"]) == {"user_id"}
    assert _register(fake, receiver.url, user_id=2).status_code == 201  # another user's quota
    _api(fake, "DELETE", f"/v1/webhooks/{ids[0]}")
    assert _register(fake, receiver.url).status_code == 201


def test_an_oauth_app_sees_and_deletes_only_its_own_webhooks(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    general = _register(fake, receiver.url).json()["data"]
    app_a = _app_token(fake, "app-a")
    app_b = _app_token(fake, "app-b")
    mine = _register(fake, receiver.url, token=app_a).json()["data"]
    assert mine["type"] == "application"
    assert [w["id"] for w in _api(fake, "GET", "/v1/webhooks", app_a).json()["data"]] == [
        mine["id"]
    ]
    assert _api(fake, "GET", "/v1/webhooks", app_b).json()["data"] == []
    assert [w["id"] for w in _api(fake, "GET", "/v1/webhooks").json()["data"]] == [general["id"]]
    for token, hook_id in ((app_b, mine["id"]), (TOKEN, mine["id"]), (app_a, general["id"])):
        r = _api(fake, "DELETE", f"/v1/webhooks/{hook_id}", token)
        assert (r.status_code, r.json()) == (403, {"success": False, "message": "Forbidden"})
    assert _api(fake, "DELETE", f"/v1/webhooks/{mine['id']}", app_a).status_code == 200


def test_webhooks_need_the_admin_scope(fake: FakePipedrive, receiver: Receiver) -> None:
    token = _app_token(fake, "reader", scopes=["deals:read"])
    for method, path in (("GET", "/v1/webhooks"), ("POST", "/v1/webhooks"),
                         ("DELETE", "/v1/webhooks/1")):  # fmt: skip
        r = _api(fake, method, path, token, json={})
        assert r.status_code == 403 and r.json()["error"] == "Scope and URL mismatch"
    assert _api(fake, "PUT", "/v1/webhooks/1").status_code == 405


# --- payloads ----------------------------------------------------------------------------------


def _deal_with_options(fake: FakePipedrive) -> tuple[int, str, str, str]:
    enum_key = fake.field_key_for_type("deals", "enum")
    set_key = fake.field_key_for_type("deals", "set")
    money_key = fake.field_key_for_type("deals", "monetary")
    deal = fake.add("deals", title="Hooked")
    return deal["id"], enum_key, set_key, money_key


def test_create_change_delete_bodies_follow_the_guide(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(**FAST)
    hook = _register(fake, receiver.url, event_object="deal").json()["data"]
    deal_id, enum_key, set_key, money_key = _deal_with_options(fake)
    enum_id = fake.field("deals", enum_key).option_ids()[0]
    set_ids = fake.field("deals", set_key).option_ids()[:2]
    before = fake.record("deals", deal_id)
    after = fake.update("deals", deal_id, title="Renamed", custom_fields={
        enum_key: enum_id, set_key: set_ids, money_key: {"value": 12.5, "currency": "EUR"}})  # fmt: skip
    fake.delete("deals", deal_id)
    fake.wait_webhooks()
    create, change, delete = (r.body for r in receiver.wait_for(3))

    for body, action in ((create, "create"), (change, "change"), (delete, "delete")):
        meta = body["meta"]
        assert set(meta) == META_KEYS
        assert (meta["action"], meta["entity"], meta["entity_id"]) == (action, "deal", str(deal_id))
        assert (meta["version"], meta["attempt"], meta["type"]) == ("2.0", 1, "general")
        assert meta["webhook_id"] == str(hook["id"]) and meta["company_id"] == str(
            fake.company["id"]
        )
        assert meta["host"] == f"{fake.company['domain']}.pipedrive.com"
        assert all(isinstance(u, str) for u in meta["permitted_user_ids"])
    assert create["meta"]["timestamp"] == before["update_time"][:-1] + ".000Z"
    assert change["meta"]["timestamp"] == after["update_time"][:-1] + ".000Z"
    assert len({b["meta"]["id"] for b in (create, change, delete)}) == 3

    assert set(create["data"]) == DOCUMENTED_DATA_KEYS["deal"] | ADDED_KEYS["deal"]
    assert create["previous"] is None and create["data"]["custom_fields"] == {}
    assert create["data"]["visible_to"] == str(before["visible_to"])
    assert change["data"]["title"] == "Renamed"
    assert change["data"]["custom_fields"] == {
        enum_key: {"id": enum_id, "type": "enum"},
        set_key: {"values": [{"id": i} for i in set_ids], "type": "set"},
        money_key: {"currency": "EUR", "type": "monetary", "value": 12.5},
    }
    assert change["previous"] == {
        "title": "Hooked",
        "update_time": before["update_time"],
        "custom_fields": dict.fromkeys(sorted([enum_key, set_key, money_key])),
    }
    assert delete["data"] is None
    assert delete["previous"] == change["data"]


def test_merge_is_a_delete_and_a_change(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url, event_object="person")
    survivor = fake.merge("persons", 2, into=1, job_title="CEO")
    fake.wait_webhooks()
    gone, kept = (r.body for r in receiver.wait_for(2))
    assert (gone["meta"]["action"], gone["meta"]["entity_id"]) == ("delete", "2")
    assert gone["meta"]["merged_to_id"] == "1" and "merged_from_id" not in gone["meta"]
    assert (kept["meta"]["action"], kept["meta"]["entity_id"]) == ("change", "1")
    assert kept["meta"]["merged_from_id"] == "2" and "merged_to_id" not in kept["meta"]
    assert kept["data"]["update_time"] == survivor["update_time"]
    assert kept["previous"]["update_time"] != survivor["update_time"]
    assert 2 in fake.ids("persons", deleted=True) and survivor["job_title"] == "CEO"
    with pytest.raises(ValueError, match="only deals"):
        fake.merge("activities", 1, into=2)


def test_archive_and_user_deactivation_are_changes(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url)
    deal = fake.record("deals", 3)
    fake.archive("deals", 3)
    fake.delete("users", 4)  # users are deactivated: the guide's "Delete user" is a change
    fake.wait_webhooks()
    archived, user = (r.body for r in receiver.wait_for(2))
    assert archived["meta"]["action"] == "change" and archived["data"]["is_archived"] is True
    assert archived["previous"] == {"is_archived": False, "update_time": deal["update_time"]}
    assert (user["meta"]["action"], user["meta"]["entity"]) == ("change", "user")
    assert user["previous"]["active_flag"] is True and user["data"]["active_flag"] is False
    assert user["data"]["id"] == "4" and user["meta"]["id"] == "4"
    assert isinstance(user["meta"]["timestamp"], int)
    assert "permitted_user_ids" not in user["meta"]
    assert set(user["data"]) == DOCUMENTED_DATA_KEYS["user"]


@pytest.mark.parametrize(
    ("table", "entity", "changes"),
    [
        ("persons", "person", {"name": "Ann Other"}),
        ("organizations", "organization", {"name": "Renamed Org"}),
        ("activities", "activity", {"subject": "Call back"}),
        ("products", "product", {"name": "Widget"}),
        ("leads", "lead", {"title": "Hot lead"}),
        ("notes", "note", {"content": "Edited"}),
        ("pipelines", "pipeline", {"name": "Renewals"}),
        ("stages", "stage", {"name": "Demo"}),
        ("projects", "project", {"title": "Rollout"}),
        ("tasks", "task", {"title": "Kick-off"}),
    ],
)
def test_every_v2_object_sends_create_change_delete(
    fake: FakePipedrive, receiver: Receiver, table: str, entity: str, changes: dict[str, Any]
) -> None:
    _register(fake, receiver.url, event_object=entity)
    record = fake.add(table)
    rid = record["id"]
    fake.update(table, rid, **changes)
    fake.delete(table, rid)
    fake.wait_webhooks()
    bodies = [r.body for r in receiver.wait_for(3)]
    assert [(b["meta"]["action"], b["meta"]["entity"]) for b in bodies] == [
        ("create", entity), ("change", entity), ("delete", entity)]  # fmt: skip
    assert {b["meta"]["entity_id"] for b in bodies} == {str(rid)}
    create, change, delete = bodies
    if entity in DOCUMENTED_DATA_KEYS:
        documented = DOCUMENTED_DATA_KEYS[entity] - RENAMED_AWAY.get(entity, set())
        assert set(create["data"]) == documented | ADDED_KEYS.get(entity, set())
    ((key, value),) = changes.items()
    assert change["data"][key] == value
    assert key in change["previous"] and "update_time" in change["previous"]
    assert delete["data"] is None and delete["previous"][key] == value
    if entity == "note":
        assert pspec.is_rfc3339(create["data"]["add_time"])


def test_deal_products_send_their_own_events(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url, event_object="deal_product")
    att = fake.add_deal_product(5, 1, quantity=2)
    fake.update_deal_product(att["id"], quantity=3)
    fake.remove_deal_product(att["id"])
    fake.wait_webhooks()
    bodies = [r.body for r in receiver.wait_for(3)]
    assert [b["meta"]["action"] for b in bodies] == ["create", "change", "delete"]
    assert {b["meta"]["entity"] for b in bodies} == {"deal_product"}
    assert bodies[1]["previous"]["quantity"] == 2 and bodies[1]["data"]["quantity"] == 3
    assert bodies[2]["previous"]["deal_id"] == 5
    assert all(d.entity == "deal_product" for d in fake.webhook_deliveries())


def test_subscriptions_filter_actions_objects_and_versions(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    only = _register(fake, receiver.url, event_action="create", event_object="deal").json()
    every = _register(fake, receiver.url).json()
    _register(fake, receiver.url, version="1.0")  # registered, never called by the fake
    deal = fake.add("deals")
    fake.update("deals", deal["id"], title="x")
    fake.update("activity_types", 1, name="Demo call")  # activityType: webhooks v1 only
    fake.add("persons")
    fake.wait_webhooks()
    seen = {(d.webhook_id, d.entity, d.action) for d in fake.webhook_deliveries()}
    assert seen == {
        (only["data"]["id"], "deal", "create"),
        (every["data"]["id"], "deal", "create"),
        (every["data"]["id"], "deal", "change"),
        (every["data"]["id"], "person", "create"),
    }
    assert len(receiver.wait_for(4)) == 4


def test_basic_auth_and_headers(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url, event_object="deal", http_auth_user="hook",
              http_auth_password="s3cret")  # fmt: skip
    _register(fake, receiver.url, event_object="deal")
    fake.add("deals")
    fake.wait_webhooks()
    with_auth, without = sorted(receiver.wait_for(2), key=lambda r: r.meta["webhook_id"])
    expected = "Basic " + base64.b64encode(b"hook:s3cret").decode()
    assert with_auth.headers["authorization"] == expected
    assert "authorization" not in without.headers
    assert with_auth.headers["content-type"] == "application/json"
    assert with_auth.path == "/pipedrive/hook"


def test_no_webhook_no_delivery(fake: FakePipedrive) -> None:
    fake.update("deals", 1, title="quiet")
    fake.wait_webhooks(timeout=1)
    assert fake.webhook_deliveries() == []


# --- delivery policy ---------------------------------------------------------------------------


def test_failed_attempts_are_retried_with_the_same_event(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(**FAST)
    _register(fake, receiver.url, event_object="deal")
    receiver.statuses = [500, 503]
    fake.update("deals", 1, title="retry me")
    fake.wait_webhooks()
    got = receiver.wait_for(3)
    assert [r.meta["attempt"] for r in got] == [1, 2, 3]
    assert len({r.meta["id"] for r in got}) == 1
    (d,) = fake.webhook_deliveries()
    assert d.state == "delivered"
    assert [(a.n, a.status, a.ok) for a in d.attempts] == [(1, 500, False), (2, 503, False),
                                                           (3, 200, True)]  # fmt: skip
    listed = _api(fake, "GET", "/v1/webhooks").json()["data"][0]
    assert listed["last_http_status"] == 200 and listed["last_delivery_time"]


def test_an_event_is_dropped_after_three_retries(fake: FakePipedrive, receiver: Receiver) -> None:
    fake.webhooks.configure(**FAST)
    _register(fake, receiver.url, event_object="deal")
    receiver.statuses = [500] * 4
    fake.update("deals", 1, title="lost")
    fake.wait_webhooks()
    assert [r.meta["attempt"] for r in receiver.wait_for(4)] == [1, 2, 3, 4]
    (d,) = fake.webhook_deliveries()
    assert (d.state, d.reason, len(d.attempts)) == ("dropped", "retries exhausted", 4)


def test_retries_wait_3_30_and_150_seconds(fake: FakePipedrive, receiver: Receiver) -> None:
    fake.webhooks.configure(clock="fake")
    _register(fake, receiver.url, event_object="deal")
    receiver.statuses = [500] * 4
    fake.update("deals", 1, title="slowly", tick=False)

    def attempts() -> int:
        fake.wait_webhooks(drained=False)
        return len(fake.webhook_deliveries()[0].attempts)

    assert attempts() == 1
    for delay in (3, 30, 150):
        fake.advance(delay - 1)
        assert attempts() == len(receiver.received)  # nothing new before the delay is over
        before = attempts()
        fake.advance(1)
        assert attempts() == before + 1
    assert fake.webhook_deliveries()[0].state == "dropped"


def test_a_timeout_is_a_failure(fake: FakePipedrive, receiver: Receiver) -> None:
    fake.webhooks.configure(timeout=0.2, clock="fake")
    _register(fake, receiver.url, event_object="deal")
    receiver.release.clear()  # the receiver holds its answer until released
    fake.update("deals", 1, title="slow listener", tick=False)
    fake.webhooks.wait_until(lambda ds: len(ds[0].attempts) == 1)
    receiver.release.set()
    fake.advance(3)
    fake.wait_webhooks()
    (d,) = fake.webhook_deliveries()
    assert d.attempts[0].error == "timeout" and not d.attempts[0].ok
    assert d.state == "delivered" and d.attempts[-1].n == 2


def test_ten_failed_first_attempts_ban_the_webhook(fake: FakePipedrive, receiver: Receiver) -> None:
    fake.webhooks.configure(clock="fake")
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.add_fault(WebhookFault("fail", attempt=1, times=10, status=502))
    for deal_id in range(1, 11):
        fake.update("deals", deal_id, title="fails", tick=False)
        fake.wait_webhooks(drained=False)
        if deal_id == 9:
            assert {d.state for d in fake.webhook_deliveries()} == {"pending"}  # retries due
    # the 10th failed first attempt bans the webhook: the waiting retries are lost with it
    assert [(d.state, d.reason) for d in fake.webhook_deliveries()] == [("lost", "banned")] * 10
    (hook,) = fake.webhooks.registrations()
    assert hook.bans == 1
    fake.update("deals", 11, title="during the ban", tick=False)
    fake.wait_webhooks()
    assert {d.state for d in fake.webhook_deliveries()} == {"lost"}
    assert receiver.received == []
    fake.advance(1800)  # the ban is over
    fake.update("deals", 12, title="after the ban")
    fake.wait_webhooks()
    assert fake.webhook_deliveries()[-1].state == "delivered"
    assert [r.body["data"]["id"] for r in receiver.wait_for(1)] == [12]
    assert fake.webhooks.registrations()[0].ban_counter == 0


def test_failed_retries_do_not_count_towards_the_ban(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(**FAST)
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.add_fault(WebhookFault("fail", times=None))
    for deal_id in (1, 2, 3):
        fake.update("deals", deal_id, title="x")
    fake.wait_webhooks()
    assert [len(d.attempts) for d in fake.webhook_deliveries()] == [4, 4, 4]
    assert fake.webhooks.registrations()[0].ban_counter == 3
    assert receiver.received == []  # "fail" faults never reach the URL


def test_three_days_without_success_delete_the_webhook(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(clock="fake")
    hook = _register(fake, receiver.url, event_object="deal").json()["data"]
    fake.update("deals", 1, title="ok")
    fake.wait_webhooks(drained=False)
    fake.advance(3 * 86_400)
    receiver.statuses = [500]
    fake.update("deals", 2, title="after 3 days")
    fake.wait_webhooks()
    last = fake.webhook_deliveries()[-1]
    assert (last.state, last.reason) == ("dropped", "webhook deleted")
    assert _api(fake, "GET", "/v1/webhooks").json()["data"] == []
    assert [w.id for w in fake.webhooks.removed()] == [hook["id"]]


def test_events_wait_for_a_listener_that_comes_back(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(clock="fake")
    _register(fake, receiver.url, event_object="deal")
    receiver.down()
    fake.update("deals", 1, title="while down", tick=False)
    fake.wait_webhooks(drained=False)
    (d,) = fake.webhook_deliveries()
    assert d.state == "pending" and "Connection" in (d.attempts[0].error or "")
    receiver.up()
    fake.advance(3)
    fake.wait_webhooks()
    assert [r.meta["attempt"] for r in receiver.wait_for(1)] == [2]
    assert fake.webhook_deliveries()[0].state == "delivered"


def test_events_are_dropped_when_the_listener_stays_down(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(**FAST)
    _register(fake, receiver.url, event_object="deal")
    receiver.down()
    fake.update("deals", 1, title="nobody listens")
    fake.wait_webhooks()
    (d,) = fake.webhook_deliveries()
    assert (d.state, len(d.attempts)) == ("dropped", 4)
    assert all(not a.ok and a.status is None for a in d.attempts)


def test_a_deleted_webhook_loses_its_pending_retries(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(clock="fake")
    hook = _register(fake, receiver.url, event_object="deal").json()["data"]
    receiver.statuses = [500]
    fake.update("deals", 1, title="x")
    fake.wait_webhooks(drained=False)
    _api(fake, "DELETE", f"/v1/webhooks/{hook['id']}")
    fake.wait_webhooks()
    (d,) = fake.webhook_deliveries()
    assert (d.state, d.reason) == ("dropped", "webhook deleted")


# --- faults ------------------------------------------------------------------------------------


def test_duplicate_deliveries(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.add_fault(WebhookFault("duplicate", action="change"))
    fake.update("deals", 1, title="twice")
    fake.wait_webhooks()
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    (d,) = fake.webhook_deliveries()
    assert [a.duplicate for a in d.attempts] == [False, True] and d.sent == 2


def test_a_delayed_event_arrives_after_a_later_one(fake: FakePipedrive, receiver: Receiver) -> None:
    fake.webhooks.configure(clock="fake")
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.add_fault(WebhookFault("delay", delay=60))
    fake.update("deals", 1, title="first", tick=False)
    fake.update("deals", 1, title="second", tick=False)
    fake.wait_webhooks(drained=False)
    fake.advance(60)
    fake.wait_webhooks()
    assert [r.body["data"]["title"] for r in receiver.wait_for(2)] == ["second", "first"]


@pytest.mark.parametrize(("order", "expected"), [("queued", [1, 2, 3]), ("reverse", [3, 2, 1])])
def test_paused_deliveries_are_released_in_order(
    fake: FakePipedrive, receiver: Receiver, order: str, expected: list[int]
) -> None:
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.pause()
    for deal_id in (1, 2, 3):
        fake.update("deals", deal_id, title="held")
    with pytest.raises(TimeoutError, match="paused, 3 pending"):
        fake.wait_webhooks(timeout=0.05)
    assert receiver.received == []
    fake.webhooks.resume(order)
    fake.wait_webhooks()
    assert [r.body["data"]["id"] for r in receiver.wait_for(3)] == expected


def test_shuffled_release_is_deterministic(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.pause()
    for deal_id in range(1, 9):
        fake.update("deals", deal_id, title="held")
    fake.webhooks.resume("shuffle", seed=4)
    fake.wait_webhooks()
    got = [r.body["data"]["id"] for r in receiver.wait_for(8)]
    assert sorted(got) == list(range(1, 9)) and got != sorted(got)


def test_a_failing_first_attempt_then_a_retry_reaches_the_listener(
    fake: FakePipedrive, receiver: Receiver
) -> None:
    fake.webhooks.configure(**FAST)
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.add_fault(WebhookFault("fail", entity="deal", attempt=1))
    fake.update("deals", 1, title="second try")
    fake.wait_webhooks()
    assert [r.meta["attempt"] for r in receiver.wait_for(1)] == [2]
    (d,) = fake.webhook_deliveries()
    assert d.attempts[0].error == "fault: connection refused" and d.sent == 1


def test_the_policy_is_set_before_webhooks_exist(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url)
    with pytest.raises(RuntimeError, match="before registering"):
        fake.webhooks.configure(time_scale=0.5)
    with pytest.raises(ValueError, match="clock"):
        FakePipedrive(token=TOKEN, scale=SMALL).webhooks.configure(clock="moon")


def test_stopping_the_fake_keeps_the_queue(fake: FakePipedrive, receiver: Receiver) -> None:
    _register(fake, receiver.url, event_object="deal")
    fake.webhooks.pause()
    fake.update("deals", 1, title="queued while stopping")
    fake.stop()
    fake.webhooks.resume()
    assert fake.webhook_deliveries()[0].state == "pending"
    fake.start()
    fake.wait_webhooks()
    assert len(receiver.wait_for(1)) == 1
