"""The stage analytics views over deal_history, on a pipeline whose deals move over five runs.

deal_stage_history, stage_velocity, pipeline_daily and win_rate_monthly are checked against
values worked out by hand from what the deals did (see `moving_pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from conftest import SMALL_SCALE, TOKEN, Syncer

from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive_fake import FakePipedrive

DAY = 86_400
ENTITIES = "deals,pipelines,stages,users"


@dataclass
class Moves:
    """The pipeline the deals move in, its stages, the deals and when it all started."""

    pipeline: int
    stages: list[int]
    deals: dict[str, int]
    start: datetime


def moving_pipeline(fake: FakePipedrive, sync: Callable[[], None]) -> Moves:
    """A new pipeline of three stages and four deals, synced after each step:

    day 0   A (1000 EUR), B (500 USD), D (300 EUR) in stage 1, C (200 EUR) in stage 2
    day 2   B lost, C moved back to stage 1, D deleted
    day 3   A to stage 2 (a title change on day 4 is what the next run sees)
    day 9   A to stage 3
    day 12  A won
    """
    pipeline = fake.add("pipelines", name="Expansion", tick=False)["id"]
    stages = [fake.add("stages", pipeline_id=pipeline, tick=False)["id"] for _ in range(3)]
    start = fake.now

    def deal(stage: int, value: float, currency: str) -> int:
        added = fake.add(
            "deals", stage_id=stage, value=value, currency=currency, owner_id=2, tick=False
        )
        return int(added["id"])

    deals = {
        "A": deal(stages[0], 1000.0, "EUR"),
        "B": deal(stages[0], 500.0, "USD"),
        "C": deal(stages[1], 200.0, "EUR"),
        "D": deal(stages[0], 300.0, "EUR"),
    }
    sync()
    fake.advance(2 * DAY)
    fake.update("deals", deals["B"], status="lost", tick=False)
    fake.update("deals", deals["C"], stage_id=stages[0], tick=False)
    fake.delete("deals", deals["D"], tick=False)
    sync()
    fake.advance(DAY)
    fake.update("deals", deals["A"], stage_id=stages[1], tick=False)
    fake.advance(DAY)
    fake.update("deals", deals["A"], title="Expansion, signed soon", tick=False)
    sync()
    fake.advance(5 * DAY)
    fake.update("deals", deals["A"], stage_id=stages[2], tick=False)
    sync()
    fake.advance(3 * DAY)
    fake.update("deals", deals["A"], status="won", tick=False)
    sync()
    return Moves(pipeline, stages, deals, start)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Syncer, Moves]]:
    """One warehouse synced through the moves, shared by this module's (read-only) tests."""
    work = tmp_path_factory.mktemp("stage-views")
    with (
        pytest.MonkeyPatch.context() as patch,
        FakePipedrive(token=TOKEN, seed=7, scale=dict(SMALL_SCALE)) as fake,
    ):
        patch.setenv("DLT_DATA_DIR", str(work / "dlt-data"))
        syncer = Syncer(fake, work, patch)

        def sync() -> None:
            assert syncer.run(entities=ENTITIES).code == 0

        yield syncer, moving_pipeline(fake, sync)


@pytest.fixture
def syncer(warehouse: tuple[Syncer, Moves]) -> Syncer:
    return warehouse[0]


@pytest.fixture
def moves(warehouse: tuple[Syncer, Moves]) -> Moves:
    return warehouse[1]


def _rows(syncer: Syncer, sql: str, *params: Any) -> list[dict[str, Any]]:
    with open_duckdb(syncer.db_path) as con:
        cursor = con.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_deal_stage_history_has_one_row_per_stay_with_exact_days(
    syncer: Syncer, moves: Moves
) -> None:
    s1, s2, s3 = moves.stages
    t0 = moves.start
    rows = _rows(
        syncer,
        "SELECT * FROM deal_stage_history WHERE pipeline_id = ? ORDER BY deal_id, entered_at",
        moves.pipeline,
    )
    names = {v: k for k, v in moves.deals.items()}
    got = [
        (
            names[r["deal_id"]],
            r["stage_id"],
            r["entered_at"] - t0,
            None if r["left_at"] is None else r["left_at"] - t0,
            r["left_by"],
        )
        for r in rows
    ]
    day = timedelta(days=1)
    assert got == [
        ("A", s1, 0 * day, 3 * day, "next stage"),
        ("A", s2, 3 * day, 9 * day, "next stage"),  # entered on day 3, seen on day 4
        ("A", s3, 9 * day, 12 * day, "won"),
        ("B", s1, 0 * day, 2 * day, "lost"),
        ("C", s2, 0 * day, 2 * day, "earlier stage"),
        ("C", s1, 2 * day, None, None),
        ("D", s1, 0 * day, 2 * day, "deleted"),
    ]
    finished = [r["days_in_stage"] for r in rows if r["left_at"] is not None]
    assert finished == pytest.approx([3.0, 6.0, 3.0, 2.0, 2.0, 2.0])
    assert [r["stage_name"] for r in rows[:3]] == [
        syncer.fake.record("stages", s)["name"] for s in (s1, s2, s3)
    ]
    assert {r["pipeline_name"] for r in rows} == {"Expansion"}
    assert [r["is_current"] for r in rows] == [False] * 5 + [True, False]
    assert [r["deal_status"] for r in rows] == ["won"] * 3 + ["lost", "open", "open", "deleted"]
    assert [(r["value"], r["currency"]) for r in rows[3:5]] == [(500.0, "USD"), (200.0, "EUR")]


def test_stage_velocity_counts_entries_days_and_conversions(syncer: Syncer, moves: Moves) -> None:
    rows = _rows(
        syncer,
        "SELECT * FROM stage_velocity WHERE pipeline_id = ? ORDER BY stage_order_nr",
        moves.pipeline,
    )
    got = [
        (
            r["stage_id"],
            r["deals_entered"],
            r["deals_in_stage"],
            r["median_days"],
            r["p80_days"],
            r["next_stage_rate"],
            r["won_rate"],
        )
        for r in rows
    ]
    s1, s2, s3 = moves.stages
    assert got == [
        # stage 1: A 3 days (on), B 2 (lost), D 2 (deleted), C still there
        (s1, 4, 1, pytest.approx(2.0), pytest.approx(2.6), 0.25, 0.25),
        # stage 2: A 6 days (on), C 2 (back)
        (s2, 2, 0, pytest.approx(4.0), pytest.approx(5.2), 0.5, 0.5),
        (s3, 1, 0, pytest.approx(3.0), pytest.approx(3.0), 0.0, 1.0),
    ]


def test_pipeline_daily_reconstructs_open_deals_per_currency(syncer: Syncer, moves: Moves) -> None:
    s1, s2, s3 = moves.stages
    day0 = moves.start.date()
    rows = _rows(
        syncer,
        "SELECT day, stage_id, currency, open_deals, open_value FROM pipeline_daily"
        " WHERE pipeline_id = ? AND day <= ? ORDER BY day, stage_id, currency",
        moves.pipeline,
        day0 + timedelta(days=13),
    )
    by_day: dict[date, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_day.setdefault(r["day"], []).append(
            (r["stage_id"], r["currency"], r["open_deals"], r["open_value"])
        )

    def on(offset: int) -> list[tuple[Any, ...]]:
        return by_day.get(day0 + timedelta(days=offset), [])

    assert min(by_day) == day0
    assert on(0) == on(1) == [(s1, "EUR", 2, 1300.0), (s1, "USD", 1, 500.0), (s2, "EUR", 1, 200.0)]
    assert on(2) == [(s1, "EUR", 2, 1200.0)]  # B lost, D deleted, C back in stage 1
    assert on(3) == on(8) == [(s1, "EUR", 1, 200.0), (s2, "EUR", 1, 1000.0)]
    assert on(9) == on(11) == [(s1, "EUR", 1, 200.0), (s3, "EUR", 1, 1000.0)]
    assert on(12) == on(13) == [(s1, "EUR", 1, 200.0)]  # A won


def test_win_rate_monthly_counts_won_and_lost_per_owner(syncer: Syncer, moves: Moves) -> None:
    rows = _rows(
        syncer,
        "SELECT month, owner_id, owner_name, won, lost, win_rate FROM win_rate_monthly"
        " WHERE pipeline_id = ?",
        moves.pipeline,
    )
    owner = syncer.fake.record("users", 2)["name"]
    assert rows == [
        {
            "month": moves.start.date().replace(day=1),
            "owner_id": 2,
            "owner_name": owner,
            "won": 1,
            "lost": 1,
            "win_rate": 0.5,
        }
    ]


def test_the_table_reference_lists_every_column_of_the_views_and_the_history(
    syncer: Syncer,
) -> None:
    from pipelines.pipedrive_sync.docs import HISTORY_COLUMNS, VIEW_COLUMNS
    from sources.pipedrive.deal_history import TRACKED

    for view, documented in VIEW_COLUMNS.items():
        actual = list(syncer.columns(view))
        names = [name for name, _, _ in documented]
        if view == "deals_enriched":  # every deal column, then those its joins allow
            deal_columns = list(syncer.columns("deals"))
            assert actual[: len(deal_columns)] == deal_columns
            assert [n for n in names[1:] if n in actual] == actual[len(deal_columns) :]
            assert {"stage_order_nr", "is_open"} <= set(actual)
        else:
            assert actual == names, view
    history = list(syncer.columns("deal_history"))
    standard = [name for name, _, _ in HISTORY_COLUMNS] + [c for c in TRACKED]
    assert history[: len(standard)] == standard
