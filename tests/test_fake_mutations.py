"""Record and field-definition mutations of the fake, the clock, the CLI and throughput."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from sources.pipedrive_fake import DEFAULT_NOW, FakePipedrive
from sources.pipedrive_fake import spec as pspec
from sources.pipedrive_fake.testing import FakeClient

SMALL = {"deals": 40, "persons": 20, "organizations": 10, "activities": 20, "products": 8,
         "leads": 15, "notes": 15}  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    with FakePipedrive(token="t", seed=5, scale=SMALL) as f:
        yield f


def _v2(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_clock_and_update_stamps(fake: FakePipedrive, client: FakeClient) -> None:
    assert fake.now == DEFAULT_NOW
    newest = max(d["update_time"] for d in fake.records("deals", deleted=None, archived=None))
    assert newest < _v2(DEFAULT_NOW)  # generated history lies in the past
    updated = fake.update("deals", 1, title="Renamed")
    assert updated["update_time"] == "2024-06-01T12:00:00Z" and updated["title"] == "Renamed"
    assert fake.now == DEFAULT_NOW + timedelta(seconds=1)
    a = fake.update("deals", 3, value=1, tick=False)
    b = fake.update("deals", 4, value=2, tick=False)
    assert a["update_time"] == b["update_time"] == "2024-06-01T12:00:01Z"
    at = datetime(2024, 6, 2, 8, 30, tzinfo=UTC)
    assert fake.update("deals", 5, value=3, at=at)["update_time"] == "2024-06-02T08:30:00Z"
    fake.advance(3600)
    assert fake.now == DEFAULT_NOW + timedelta(seconds=3602)
    served = {
        d["id"]: d
        for d in client.v2_all("/api/v2/deals", limit=500, status="open,won,lost,deleted")
    }
    assert served[1]["title"] == "Renamed"


def test_add_creates_realistic_records(fake: FakePipedrive, client: FakeClient) -> None:
    deal = fake.add("deals", title="Brand new", value=42, currency="EUR")
    assert deal["id"] == 41 and deal["add_time"] == deal["update_time"] == "2024-06-01T12:00:00Z"
    assert deal["status"] == "open" and deal["won_time"] is None
    assert set(deal["custom_fields"]) == {f.key for f in fake.custom_field_defs("deals")}
    listed = client.v2_all("/api/v2/deals", sort_by="update_time", limit=500)
    assert listed[-1] == deal
    person = fake.add("persons", name="Zoë Null", org_id=None)
    assert person["org_id"] is None and person in client.v2_all("/api/v2/persons", limit=500)
    lead = fake.add("leads", title="New lead")
    assert lead["add_time"].endswith("Z") and lead in client.v1_all("/v1/leads")
    note = fake.add("notes", content="hello")
    assert note["add_time"] == "2024-06-01 12:00:03"
    stage = fake.add("stages", pipeline_id=2, name="Extra")
    assert stage["order_nr"] == 6
    deal2 = fake.add("deals", stage_id=stage["id"])
    assert deal2["pipeline_id"] == 2
    with pytest.raises(ValueError, match="no field"):
        fake.add("deals", titel="typo")
    for body in (client.json("/api/v2/deals", limit=500), client.json("/v1/leads", limit=500)):
        assert body["success"]
    v = pspec.validator_for("v2", "/deals")
    assert pspec.errors(v, client.json("/api/v2/deals", limit=500)) == []


def test_custom_field_updates_merge_and_are_validated(
    fake: FakePipedrive, client: FakeClient
) -> None:
    money = fake.field_key_for_type("deals", "monetary")
    title = fake.field_key("deals", "Título")
    before = fake.record("deals", 2)["custom_fields"]
    after = fake.update(
        "deals", 2, custom_fields={money: {"value": 12.5, "currency": "USD"}, title: None}
    )
    assert after["custom_fields"][money] == {"value": 12.5, "currency": "USD"}
    assert after["custom_fields"][title] is None
    unchanged = {k: v for k, v in after["custom_fields"].items() if k not in (money, title)}
    assert unchanged == {k: v for k, v in before.items() if k not in (money, title)}
    with pytest.raises(ValueError, match="not a valid"):
        fake.update("deals", 2, custom_fields={money: 12.5})
    with pytest.raises(ValueError, match="not an active custom field"):
        fake.update("deals", 2, custom_fields={"0" * 40: 1})
    # leads take v2-shaped values and serve them flat
    lead_id = fake.ids("leads", archived=False)[0]
    fake.update("leads", lead_id, custom_fields={money: {"value": 7, "currency": "SEK"}})
    lead = next(x for x in client.v1_all("/v1/leads") if x["id"] == lead_id)
    assert (lead[money], lead[f"{money}_currency"]) == (7, "SEK")


def test_deal_status_changes_keep_times_consistent(fake: FakePipedrive) -> None:
    deal_id = next(d["id"] for d in fake.records("deals", archived=False) if d["status"] == "open")
    won = fake.update("deals", deal_id, status="won")
    assert won["won_time"] == won["close_time"] == won["update_time"] and won["lost_time"] is None
    reopened = fake.update("deals", deal_id, status="open")
    assert reopened["won_time"] is None and reopened["close_time"] is None
    with pytest.raises(ValueError):
        fake.update("deals", deal_id, status="archived")


def test_deletes(fake: FakePipedrive, client: FakeClient) -> None:
    fake.delete("persons", 3)
    assert 3 not in {p["id"] for p in client.v2_all("/api/v2/persons", limit=500)}
    gone = fake.records("persons", deleted=True)
    assert 3 in {p["id"] for p in gone}
    assert next(p for p in gone if p["id"] == 3)["is_deleted"] is True
    deal_id = fake.ids("deals", archived=False)[0]
    stamp = _v2(fake.now)
    fake.delete("deals", deal_id)
    assert deal_id not in {d["id"] for d in client.v2_all("/api/v2/deals", limit=500)}
    deleted = client.v2_all("/api/v2/deals", status="deleted", limit=500)
    mine = next(d for d in deleted if d["id"] == deal_id)
    assert mine["status"] == "deleted" and mine["is_deleted"] and mine["update_time"] == stamp
    fake.delete("notes", 2)
    assert 2 not in {n["id"] for n in client.v1_all("/v1/notes")}
    for entity in ("organizations", "products", "activities", "stages", "pipelines"):
        first = fake.ids(entity)[0]
        fake.delete(entity, first)
        assert first not in {x["id"] for x in client.v2_all(f"/api/v2/{entity}", limit=500)}
    with pytest.raises(ValueError, match="archived"):
        fake.archive("persons", 1)
    with pytest.raises(KeyError):
        fake.update("deals", 10**6, title="x")


def test_records_are_what_the_endpoints_serve(fake: FakePipedrive, client: FakeClient) -> None:
    assert client.v2_all("/api/v2/organizations", limit=500) == fake.records("organizations")
    assert client.v1_all("/v1/notes") == fake.records("notes")
    assert client.v1_all("/v1/leads") == fake.records("leads", archived=False)
    assert client.v2_all("/api/v2/dealFields", limit=500) == fake.field_definitions("deals")
    assert client.v1_all("/v1/leadFields") == fake.field_definitions("leads")
    assert client.v1_all("/v1/noteFields") == fake.field_definitions("notes")


def test_field_lookups(fake: FakePipedrive) -> None:
    assert len(fake.field_key("deals", "🔥🔥")) == 40
    assert fake.field_key("deal", "Größe") == fake.field_key("dealFields", "Größe")
    assert fake.field_key("leads", "Größe") == fake.field_key("deals", "Größe")
    with pytest.raises(LookupError, match="2 custom fields"):
        fake.field_key("deals", "Source")
    with pytest.raises(LookupError):
        fake.field_key("persons", "Título")
    key = fake.field_key_for_type("organizations", "address")
    assert fake.field("organizations", key).field_type == "address"


def test_field_definition_mutations(fake: FakePipedrive, client: FakeClient) -> None:
    stamps = {d["id"]: d["update_time"] for d in fake.records("deals")}
    key = fake.add_field("deals", "Contract tier", "enum", options=["Gold", "Silver"])
    defs = {f["field_code"]: f for f in client.v2_all("/api/v2/dealFields", limit=500)}
    assert defs[key]["field_name"] == "Contract tier" and defs[key]["is_custom_field"]
    assert [o["label"] for o in defs[key]["options"]] == ["Gold", "Silver"]
    deals = client.v2_all("/api/v2/deals", limit=500)
    assert all(d["custom_fields"][key] is None for d in deals)
    assert {d["id"]: d["update_time"] for d in deals} == {
        i: stamps[i] for i in (d["id"] for d in deals)
    }
    lead_fields = {f["key"]: f for f in client.v1_all("/v1/leadFields")}
    assert lead_fields[key]["name"] == "Contract tier"
    assert all(lead[key] is None for lead in client.v1_all("/v1/leads"))

    gold = defs[key]["options"][0]["id"]
    fake.update("deals", 1, custom_fields={key: gold})
    fake.rename_field("deals", key, "Tier")
    fake.rename_option("deals", key, gold, "Platinum")
    defs = {f["field_code"]: f for f in client.v2_all("/api/v2/dealFields", limit=500)}
    assert defs[key]["field_name"] == "Tier"
    assert defs[key]["options"][0]["label"] == "Platinum"
    fake.delete_option("deals", key, gold)
    defs = {f["field_code"]: f for f in client.v2_all("/api/v2/dealFields", limit=500)}
    assert [o["label"] for o in defs[key]["options"]] == ["Silver"]
    assert fake.record("deals", 1)["custom_fields"][key] == gold  # the stale id stays
    assert gold in fake.stale_option_ids("deals", key)

    before = fake.record("deals", 1)["update_time"]
    fake.delete_field("deals", key)
    assert key not in {f["field_code"] for f in client.v2_all("/api/v2/dealFields", limit=500)}
    assert key not in {f["key"] for f in client.v1_all("/v1/leadFields")}
    assert all(key not in d["custom_fields"] for d in client.v2_all("/api/v2/deals", limit=500))
    assert all(key not in lead for lead in client.v1_all("/v1/leads"))
    assert fake.record("deals", 1)["update_time"] == before
    with pytest.raises(ValueError, match="standard"):
        fake.delete_field("deals", "title")
    person_key = fake.add_field("person", "Shoe size", "double")
    assert all(p["custom_fields"][person_key] is None for p in client.v2_all("/api/v2/persons"))
    with pytest.raises(ValueError):
        fake.add_field("deals", "Bad", "nonsense")


def test_a_field_type_change_converts_stored_values_in_place(
    fake: FakePipedrive, client: FakeClient
) -> None:
    stamps = {d["id"]: d["update_time"] for d in fake.records("deals")}
    enum_key = fake.field_key_for_type("deals", "enum")
    double_key = fake.field_key_for_type("deals", "double")
    text_key = fake.field_key_for_type("deals", "varchar")
    before = {d["id"]: d["custom_fields"] for d in fake.records("deals")}
    word = next(v for v in (c[text_key] for c in before.values()) if v)
    fake.change_field_type("deals", enum_key, "set")
    fake.change_field_type("deals", double_key, "monetary")
    fake.change_field_type("deals", text_key, "enum", [word])
    defs = {f["field_code"]: f for f in client.v2_all("/api/v2/dealFields", limit=500)}
    assert defs[enum_key]["field_type"] == "set" and defs[double_key]["field_type"] == "monetary"
    [option] = defs[text_key]["options"]
    assert option["label"] == word
    for deal in client.v2_all("/api/v2/deals", limit=500):
        old, new = before[deal["id"]], deal["custom_fields"]
        assert new[enum_key] == (None if old[enum_key] is None else [old[enum_key]])
        money = None if old[double_key] is None else {"value": old[double_key], "currency": "EUR"}
        assert new[double_key] == money
        assert new[text_key] == (option["id"] if old[text_key] == word else None)
        assert deal["update_time"] == stamps[deal["id"]], "no record changes its update_time"
    lead = client.v1_all("/v1/leads")[0]
    assert f"{double_key}_currency" in lead, "leads carry the deal fields in the new shape"


def test_compact_tables_behave_the_same() -> None:
    """Big tables keep records only as JSON bytes; every feature must still work."""
    plain = FakePipedrive(seed=9, scale=SMALL)
    with FakePipedrive(seed=9, scale=SMALL, compact_threshold=10) as fake:
        assert fake.tables["deals"].compact and fake.tables["deals"].by_seq[0].data is None
        assert fake.records("deals") == plain.records("deals")
        c = FakeClient(fake)
        assert c.v2_all("/api/v2/deals", owner_id=2) == [
            d for d in plain.records("deals", archived=False) if d["owner_id"] == 2
        ]
        money = fake.field_key_for_type("deals", "monetary")
        updated = fake.update("deals", 3, title="T", custom_fields={money: None})
        assert updated["title"] == "T" and updated["custom_fields"][money] is None
        key = fake.add_field("deals", "New one", "date")
        assert all(d["custom_fields"][key] is None for d in c.v2_all("/api/v2/deals", limit=500))
        fake.delete_field("deals", key)
        fake.delete_field("deals", money)
        served = c.v2_all("/api/v2/deals", limit=500, sort_by="update_time")
        assert all(
            key not in d["custom_fields"] and money not in d["custom_fields"] for d in served
        )
        assert served[-1]["id"] == 3
        assert c.v2_all("/api/v2/persons", limit=500) == fake.records("persons")
        c.close()


def test_cli_serves_until_interrupted() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sources.pipedrive_fake",
            "--port",
            "0",
            "--token",
            "cli-token",
            "--deals",
            "12",
            "--persons",
            "5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
            r = requests.get(
                f"{url}/api/v2/persons", headers={"x-api-token": "cli-token"}, timeout=10
            )
            assert r.status_code == 200 and len(r.json()["data"]) <= 5
        finally:
            proc.terminate()
            proc.communicate(timeout=10)


def test_big_scale_is_fast_enough() -> None:
    started = time.perf_counter()
    fake = FakePipedrive(scale={"deals": 20_000, "persons": 200}, custom_field_count=40)
    generated = time.perf_counter() - started
    assert generated < 10, generated  # about 0.4 s on a laptop
    fake.warm()
    query = {"limit": "500", "sort_by": "update_time"}
    fake._v2_list("deals", "live", query)
    started = time.perf_counter()
    for _ in range(10):
        response = fake._v2_list("deals", "live", query)
    per_page = (time.perf_counter() - started) / 10
    assert response.payload.count(b'"custom_fields"') == 500
    assert per_page < 0.05, per_page  # a few ms in practice
    started = time.perf_counter()
    fake.update("deals", 7, title="x")  # patches the cached indexes instead of rebuilding
    fake._v2_list("deals", "live", query)
    assert time.perf_counter() - started < 0.5
