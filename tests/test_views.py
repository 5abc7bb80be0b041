"""The analytics views: deals_enriched and open_pipeline_summary, checked against the fake."""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import CORE_ENTITIES, Syncer, all_deals

from pipelines.pipedrive_sync.runner import duckdb_destination, make_pipeline
from pipelines.pipedrive_sync.views import create_views


def _view_rows(syncer: Syncer, view: str) -> tuple[list[str], list[dict[str, Any]]]:
    from pipelines.pipedrive_sync.warehouse import open_duckdb

    with open_duckdb(syncer.db_path) as con:
        cursor = con.execute(f"SELECT * FROM {view}")
        names = [d[0] for d in cursor.description]
        return names, [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _names(fake: Any, entity: str) -> dict[int, str]:
    """id → name of the records the list endpoint serves (so the warehouse has them)."""
    return {r["id"]: r["name"] for r in fake.records(entity)}


def test_deals_enriched_is_every_deal_with_every_column_and_the_names(syncer: Syncer) -> None:
    assert syncer.run(entities=",".join([*CORE_ENTITIES, "users"])).code == 0
    fake = syncer.fake
    names, rows = _view_rows(syncer, "deals_enriched")
    deal_columns = list(syncer.columns("deals"))
    assert names[: len(deal_columns)] == deal_columns  # custom-field columns included
    assert {"titulo", "grosse", "jiage", "budget_currency"} <= set(names)
    assert names[len(deal_columns) :] == [
        "pipeline_name",
        "stage_name",
        "stage_order_nr",
        "owner_name",
        "organization_name",
        "person_name",
        "is_open",
    ]
    deals = {d["id"]: d for d in all_deals(fake)}
    assert sorted(r["id"] for r in rows) == sorted(deals)
    pipelines, stages = _names(fake, "pipelines"), _names(fake, "stages")
    orgs, persons = _names(fake, "organizations"), _names(fake, "persons")
    users = _names(fake, "users")
    stage_order = {s["id"]: s["order_nr"] for s in fake.records("stages")}
    for row in rows:
        deal = deals[row["id"]]
        assert row["owner_name"] == users[deal["owner_id"]]
        assert row["pipeline_name"] == pipelines.get(deal["pipeline_id"])
        assert row["stage_name"] == stages.get(deal["stage_id"])
        assert row["organization_name"] == orgs.get(deal["org_id"])
        assert row["person_name"] == persons.get(deal["person_id"])
        assert row["stage_order_nr"] == stage_order.get(deal["stage_id"])
        open_now = deal["status"] == "open" and not deal["is_deleted"] and not deal["is_archived"]
        assert row["is_open"] is open_now
    assert any(r["organization_name"] for r in rows) and any(r["person_name"] for r in rows)


def test_open_pipeline_summary_adds_up_the_open_deals(syncer: Syncer) -> None:
    syncer.run()
    fake = syncer.fake
    stages = {s["id"]: s for s in fake.records("stages")}
    pipelines = _names(fake, "pipelines")
    expected: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for deal in all_deals(fake):
        if deal["status"] != "open" or deal.get("is_deleted") or deal.get("is_archived"):
            continue
        stage = stages[deal["stage_id"]]
        probability = deal.get("probability")
        if probability is None:
            probability = stage.get("deal_probability")
        if probability is None:
            probability = 100
        key = (deal["pipeline_id"], deal["stage_id"], deal["currency"])
        expected[key][0] += 1
        expected[key][1] += deal["value"] or 0
        expected[key][2] += (deal["value"] or 0) * probability / 100
    _, rows = _view_rows(syncer, "open_pipeline_summary")
    got = {(r["pipeline_id"], r["stage_id"], r["currency"]): r for r in rows}
    assert set(got) == set(expected)
    for key, (count, total, weighted) in expected.items():
        row = got[key]
        assert row["open_deals"] == count
        assert row["total_value"] == pytest.approx(total)
        assert row["weighted_value"] == pytest.approx(weighted)
        assert row["pipeline_name"] == pipelines[key[0]]
        assert row["stage_name"] == stages[key[1]]["name"]
        assert row["stage_order_nr"] == stages[key[1]]["order_nr"]


def test_views_follow_new_custom_fields_and_dodge_name_collisions(syncer: Syncer) -> None:
    fake = syncer.fake
    syncer.run()
    key = fake.add_field("deals", "Stage name", "varchar")  # collides with the joined name
    deal_id = fake.records("deals")[0]["id"]
    fake.update("deals", deal_id, custom_fields={key: "my own stage label"})
    assert syncer.run().code == 0
    names, rows = _view_rows(syncer, "deals_enriched")
    assert "stage_name" in names and "stage_name_2" in names
    row = next(r for r in rows if r["id"] == deal_id)
    assert row["stage_name"] == "my own stage label"  # the deal's own column keeps its name
    stage = _names(fake, "stages")[fake.record("deals", deal_id)["stage_id"]]
    assert row["stage_name_2"] == stage


def test_views_need_their_tables(syncer: Syncer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert syncer.run(entities="persons,organizations").code == 0
    assert not caplog.records
    from pipelines.pipedrive_sync.warehouse import open_duckdb, table_names

    with open_duckdb(syncer.db_path) as con:
        kinds = table_names(con)
    assert "persons" in kinds and not [n for n, k in kinds.items() if k == "view"]


def test_owner_names_need_the_users_table(syncer: Syncer) -> None:
    without_users = "deals,pipelines,stages,persons,organizations"
    assert syncer.run(entities=without_users).code == 0
    names, _ = _view_rows(syncer, "deals_enriched")
    assert "owner_name" not in names and "owner_id" in names
    assert syncer.run(entities=without_users + ",users").code == 0
    _, rows = _view_rows(syncer, "deals_enriched")
    users = _names(syncer.fake, "users")
    assert {r["owner_name"] for r in rows} == {users[r["owner_id"]] for r in rows}


def test_create_views_reports_what_it_created(syncer: Syncer) -> None:
    assert syncer.run(entities="deals").code == 0  # no stages and pipelines: no summary
    settings = syncer.settings()
    destination, connection = duckdb_destination(syncer.db_path.resolve())
    try:
        assert create_views(make_pipeline(settings, destination)) == [
            "deals_enriched",
            "deal_stage_history",  # stage names and order need stages and pipelines: null
            "stage_velocity",
            "pipeline_daily",
            "win_rate_monthly",
        ]
    finally:
        connection.close()
    names, rows = _view_rows(syncer, "deals_enriched")
    assert names == [*syncer.columns("deals"), "is_open"]  # nothing to join
    assert len(rows) == len(all_deals(syncer.fake))


def test_a_broken_view_is_a_warning_not_a_failed_sync(
    syncer: Syncer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.pipedrive_sync import views

    monkeypatch.setitem(
        views.BUILDERS, "open_pipeline_summary", lambda ctx: "SELECT nope FROM deals"
    )
    with caplog.at_level(logging.WARNING):
        result = syncer.run()
    assert result.code == 0
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "view open_pipeline_summary not created"
    ]
    assert _view_rows(syncer, "deals_enriched")[1]


@pytest.mark.parametrize("file_name", ["pipedrive.duckdb", "renamed.duckdb"])
def test_views_work_whatever_the_file_is_called_when_opened_directly(
    syncer: Syncer, tmp_path: Path, file_name: str
) -> None:
    syncer.run()
    copy = tmp_path / "copies" / file_name
    copy.parent.mkdir()
    shutil.copy(syncer.db_path, copy)
    catalog = copy.stem
    with duckdb.connect(str(copy), read_only=True) as con:
        for view in ("deals_enriched", "open_pipeline_summary"):
            count = con.execute(f'SELECT count(*) FROM "{catalog}".main.{view}').fetchone()
            assert count and count[0] > 0
            assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == count
