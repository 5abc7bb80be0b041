"""deal_history: one row per version of a deal, grown by each run (and by the backfill)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Syncer

from pipelines.pipedrive_sync.warehouse import open_duckdb

DAY = 86_400


def _history(syncer: Syncer, deal_id: int) -> list[dict[str, Any]]:
    with open_duckdb(syncer.db_path) as con:
        cursor = con.execute(
            "SELECT * FROM deal_history WHERE deal_id = ? ORDER BY valid_from", [deal_id]
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _stages(syncer: Syncer, pipeline_id: int = 1) -> list[int]:
    return [
        s["id"]
        for s in sorted(syncer.fake.records("stages"), key=lambda s: s["order_nr"])
        if s["pipeline_id"] == pipeline_id
    ]


def _when(served: str) -> datetime:
    return datetime.fromisoformat(served.replace("Z", "+00:00")).astimezone(UTC)


def test_a_deal_moved_through_three_stages_over_three_runs_has_three_versions(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    first, second, third = _stages(syncer)[:3]
    added = fake.add("deals", stage_id=first, value=1000.0, currency="EUR", tick=False)
    deal = added["id"]
    assert syncer.run(entities="deals").code == 0

    fake.advance(3 * DAY)
    moved = fake.update("deals", deal, stage_id=second, tick=False)
    fake.advance(DAY)
    retitled = fake.update(
        "deals", deal, title="Not a new version: the title is not tracked", tick=False
    )
    assert syncer.run(entities="deals").code == 0

    fake.advance(5 * DAY)
    last = fake.update("deals", deal, stage_id=third, value=2500.0, tick=False)
    assert syncer.run(entities="deals").code == 0
    assert syncer.run(entities="deals").code == 0  # nothing changed: nothing added

    history = _history(syncer, deal)
    assert [(h["stage_id"], h["value"]) for h in history] == [
        (first, 1000.0),
        (second, 1000.0),
        (third, 2500.0),
    ]
    # each version starts when Pipedrive last changed the deal before a run saw it: the
    # second run saw the stage change of day 3 with the title change of day 4
    seen = [added, retitled, last]
    starts = [_when(served["update_time"]) for served in seen]
    assert [h["valid_from"] for h in history] == starts
    assert [h["valid_to"] for h in history] == [*starts[1:], None]
    assert history[1]["valid_to"] - history[1]["valid_from"] == timedelta(days=5)
    # the exact moments of the stage changes
    assert [h["stage_change_time"] for h in history] == [
        None,
        _when(moved["update_time"]),
        _when(last["update_time"]),
    ]
    assert {h["recorded_from"] for h in history} == {"sync"}
    assert all(h["currency"] == "EUR" and h["pipeline_id"] == 1 for h in history)


def test_every_synced_deal_has_exactly_one_current_version(syncer: Syncer) -> None:
    assert syncer.run(entities="deals").code == 0
    rows = syncer.query(
        "SELECT count(*), count(DISTINCT deal_id), count(*) FILTER (WHERE valid_to IS NULL)"
        " FROM deal_history"
    )
    deals = syncer.query("SELECT count(*) FROM deals")[0][0]
    assert rows == [(deals, deals, deals)]
    mismatched = syncer.query(
        "SELECT count(*) FROM deals d JOIN deal_history h ON h.deal_id = d.id"
        " AND h.valid_to IS NULL WHERE h.stage_id IS DISTINCT FROM d.stage_id"
        " OR h.status IS DISTINCT FROM d.status OR h.value IS DISTINCT FROM d.value"
        " OR h.valid_from <> d.update_time"
    )
    assert mismatched == [(0,)]


def test_versions_left_open_by_a_killed_run_are_closed_by_the_next(syncer: Syncer) -> None:
    fake = syncer.fake
    first, second = _stages(syncer)[:2]
    deal = fake.add("deals", stage_id=first)["id"]
    assert syncer.run(entities="deals").code == 0
    fake.advance(DAY)
    fake.update("deals", deal, stage_id=second)
    assert syncer.run(entities="deals").code == 0
    # a kill between the load and closing the versions: both still open, plus a repeat
    with open_duckdb(syncer.db_path, read_only=False) as con:
        con.execute("UPDATE deal_history SET valid_to = NULL WHERE deal_id = ?", [deal])
        con.execute(
            "INSERT INTO deal_history SELECT * REPLACE (valid_from + INTERVAL 1 HOUR AS valid_from)"
            " FROM deal_history WHERE deal_id = ? AND stage_id = ?",
            [deal, second],
        )
    assert syncer.run(entities="deals").code == 0
    history = _history(syncer, deal)
    assert [h["stage_id"] for h in history] == [first, second]
    assert history[0]["valid_to"] == history[1]["valid_from"] and history[1]["valid_to"] is None


def test_a_deal_deleted_in_pipedrive_gets_a_deleted_version(syncer: Syncer) -> None:
    fake = syncer.fake
    deal = fake.add("deals")["id"]
    assert syncer.run(entities="deals").code == 0
    fake.advance(DAY)
    fake.delete("deals", deal)
    assert syncer.run(entities="deals").code == 0
    history = _history(syncer, deal)
    assert [(h["status"], h["is_deleted"]) for h in history] == [
        ("open", False),
        ("deleted", True),
    ]


def test_a_renamed_option_is_rewritten_in_the_history_too(syncer: Syncer) -> None:
    fake = syncer.fake
    key = fake.field_key_for_type("deals", "enum")
    option = fake.field("deals", key).option_ids()[0]
    deal = fake.add("deals", custom_fields={key: option})["id"]
    fake.add("deals")  # so that the next run does not read that deal again (its cursor)
    assert syncer.run(entities="deals").code == 0
    column = syncer.query(f"SELECT column_name FROM custom_fields WHERE field_key = '{key}'")[0][0]
    fake.rename_option("deals", key, option, "Renamed option")
    assert syncer.run(entities="deals", refresh_fields=True).code == 0
    assert syncer.query(f"SELECT {column} FROM deal_history WHERE deal_id = {deal}") == [
        ("Renamed option",)
    ]
    assert len(_history(syncer, deal)) == 1


@pytest.mark.parametrize("hard", [False, True])
def test_a_deal_that_vanished_from_pipedrive_gets_a_deleted_version(
    syncer: Syncer, hard: bool
) -> None:
    assert syncer.run(entities="deals", hard_deletes=hard).code == 0
    gone = 10**9  # a deal the warehouse has and Pipedrive no longer lists at all
    with open_duckdb(syncer.db_path, read_only=False) as con:
        con.execute(f"INSERT INTO deals SELECT * REPLACE ({gone} AS id) FROM deals LIMIT 1")
        con.execute(
            f"INSERT INTO deal_history SELECT * REPLACE ({gone} AS deal_id) FROM deal_history"
            " WHERE is_deleted IS NOT TRUE LIMIT 1"
        )
    result = syncer.run(entities="deals", reconcile=True, hard_deletes=hard)
    assert result.code == 0 and result.vanished["deals"] == 1
    history = _history(syncer, gone)
    assert [h["is_deleted"] for h in history] == [False, True]
    assert history[0]["valid_to"] == history[1]["valid_from"] and history[1]["valid_to"] is None
    assert history[1]["stage_id"] == history[0]["stage_id"]
