"""--backfill-history: older deal versions from the changelogs, resumable, within a budget."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import TOKEN, Syncer

from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive.http import HttpSettings
from sources.pipedrive_fake import FakePipedrive

DAY = 86_400
CLI = [sys.executable, "-m", "pipelines.pipedrive_sync"]


def _rows(syncer: Syncer, sql: str, *params: Any) -> list[dict[str, Any]]:
    with open_duckdb(syncer.db_path) as con:
        cursor = con.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _when(served: str) -> datetime:
    return datetime.fromisoformat(served.replace("Z", "+00:00")).astimezone(UTC)


def _changelog_reads(fake: FakePipedrive) -> Counter[str]:
    """Changelog pages the fake answered, per deal."""
    return Counter(
        r.path.split("/")[3]
        for r in fake.requests
        if r.status == 200 and re.fullmatch(r"/v1/deals/\d+/changelog", r.path)
    )


def test_the_backfill_recovers_what_happened_before_the_first_sync(syncer: Syncer) -> None:
    fake = syncer.fake
    stages = sorted(
        (s for s in fake.records("stages") if s["pipeline_id"] == 1), key=lambda s: s["order_nr"]
    )
    s1, s2 = stages[0]["id"], stages[1]["id"]
    added = fake.add("deals", stage_id=s1, value=800.0, currency="GBP", tick=False)
    deal = added["id"]
    fake.advance(2 * DAY)
    fake.update("deals", deal, stage_id=s2, value=900.0, tick=False)
    fake.advance(3 * DAY)
    won = fake.update("deals", deal, status="won", tick=False)
    assert syncer.run(entities="deals,stages,pipelines").code == 0
    assert [
        r["status"] for r in _rows(syncer, f"SELECT * FROM deal_history WHERE deal_id = {deal}")
    ] == ["won"]  # the sync saw the deal once, won

    result = syncer.run(entities="deals,stages,pipelines", backfill_history=True)
    assert result.code == 0, result.message
    assert result.backfill is not None and result.backfill.left == 0
    history = _rows(
        syncer, f"SELECT * FROM deal_history WHERE deal_id = {deal} ORDER BY valid_from"
    )
    start = _when(added["add_time"])
    assert [
        (h["valid_from"] - start, h["stage_id"], h["status"], h["value"], h["recorded_from"])
        for h in history
    ] == [
        (timedelta(0), s1, "open", 800.0, "changelog"),
        (timedelta(days=2), s2, "open", 900.0, "changelog"),
        (timedelta(days=5), s2, "won", 900.0, "changelog"),
    ]
    assert history[-1]["valid_to"] is None and history[-1]["won_time"] == _when(won["won_time"])
    assert all(h["currency"] == "GBP" for h in history)
    stays = _rows(
        syncer,
        f"SELECT stage_id, days_in_stage, left_by FROM deal_stage_history WHERE deal_id = {deal}"
        " ORDER BY entered_at",
    )
    assert stays == [
        {"stage_id": s1, "days_in_stage": 2.0, "left_by": "next stage"},
        {"stage_id": s2, "days_in_stage": 3.0, "left_by": "won"},
    ]
    # every deal's changelog was read once; a later run has nothing left to read
    reads = _changelog_reads(fake)
    assert len(reads) == len(fake.ids("deals", deleted=None)) and set(reads.values()) == {1}
    again = syncer.run(entities="deals", backfill_history=True)
    assert again.backfill is not None and again.backfill.plan.done
    assert _changelog_reads(fake) == reads


def test_the_generated_histories_become_versions_ending_in_the_current_state(
    syncer: Syncer,
) -> None:
    assert syncer.run(entities="deals", backfill_history=True).code == 0
    fake = syncer.fake
    changed = [d for d in fake.ids("deals", deleted=None) if fake.changelog("deals", d)]
    assert changed
    current = _rows(
        syncer,
        "SELECT count(*) AS n FROM deals d JOIN deal_history h ON h.deal_id = d.id"
        " AND h.valid_to IS NULL WHERE h.stage_id IS NOT DISTINCT FROM d.stage_id"
        " AND h.value IS NOT DISTINCT FROM d.value AND h.owner_id = d.owner_id",
    )
    assert current == [{"n": len(fake.ids("deals", deleted=None))}]
    for deal in changed[:20]:
        log = fake.changelog("deals", deal)  # newest first
        tracked = [e for e in log if e["field_key"] in ("stage_id", "value", "user_id")]
        history = _rows(
            syncer, f"SELECT * FROM deal_history WHERE deal_id = {deal} ORDER BY valid_from"
        )
        assert history[0]["valid_from"] == _when(fake.record("deals", deal)["add_time"]) or not (
            tracked
        )
        for entry in tracked:  # the value before each change is in the version before it
            when = datetime.fromisoformat(entry["time"]).replace(tzinfo=UTC)
            before = [h for h in history if h["valid_from"] < when][-1]
            column = {"user_id": "owner_id"}.get(entry["field_key"], entry["field_key"])
            old = before[column]
            assert (None if old is None else str(int(old) if column != "value" else old)) == (
                entry["old_value"]
                if column != "value" or entry["old_value"] is None
                else str(float(entry["old_value"]))
            )


def test_the_backfill_stops_at_its_allowance_and_resumes_on_the_next_run(
    syncer: Syncer,
) -> None:
    fake = syncer.fake
    assert syncer.run(entities="deals").code == 0
    deals = len(fake.ids("deals", deleted=None))
    reads: Counter[str] = Counter()
    runs = 0
    while True:
        runs += 1
        result = syncer.run(entities="deals", backfill_history=True, backfill_max_tokens=400)
        assert result.code == 0, result.message
        outcome = result.backfill
        assert outcome is not None and outcome.tokens <= 400
        if outcome.plan.done:
            break
        assert outcome.deals == min(20, outcome.plan.remaining)
        assert outcome.left == outcome.plan.remaining - outcome.deals
        assert runs < 20
    assert runs == -(-deals // 20) + 1  # the last run finds everything done
    reads = _changelog_reads(fake)
    assert len(reads) == deals and set(reads.values()) == {1}


def test_the_daily_budget_stops_the_backfill_with_75_and_the_next_day_resumes(
    tmp_path: Path,
) -> None:
    with FakePipedrive(token=TOKEN, seed=5, scale={"deals": 60}) as fake:
        env = _env(tmp_path, fake)
        first = _cli(["run", "--entities", "deals"], tmp_path, env)
        assert first.returncode == 0, first.stderr
        fake.daily_budget = fake.tokens_used + 200 + 20 * 25  # the sync, then 25 deals or so
        stopped = _cli(["run", "--entities", "deals", "--backfill-history"], tmp_path, env)
        assert stopped.returncode == 75, stopped.stderr
        assert "budget" in stopped.stderr and "history backfill" in stopped.stderr
        done_first = _changelog_reads(fake)
        assert 0 < len(done_first) < 60

        fake.reset_budget()  # midnight
        resumed = _cli(["run", "--entities", "deals", "--backfill-history"], tmp_path, env)
        assert resumed.returncode == 0, resumed.stderr
        reads = _changelog_reads(fake)
        assert len(reads) == len(fake.ids("deals", deleted=None))
        # read again: only deals whose changelogs were in flight (prefetched) when an earlier
        # deal met the budget, so the first run could not count them as done
        again = [deal for deal, n in reads.items() if n > 1]
        assert set(reads.values()) <= {1, 2} and len(again) <= HttpSettings().prefetch, again
        assert "complete" in resumed.stdout


def test_the_cost_is_shown_before_the_backfill_starts(tmp_path: Path) -> None:
    with FakePipedrive(token=TOKEN, seed=5, scale={"deals": 30}) as fake:
        env = _env(tmp_path, fake)
        assert _cli(["run", "--entities", "deals"], tmp_path, env).returncode == 0
        proc = _cli(
            ["run", "--entities", "deals", "--backfill-history", "--log-format", "json"],
            tmp_path,
            env,
        )
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        names = [e["event"] for e in events]
        started = events[names.index("backfill_started")]
        deals = len(fake.ids("deals", deleted=None))
        assert started["deals_left"] == deals and started["estimated_tokens"] == 20 * deals
        assert f"{deals} deals left, about {20 * deals:,} API tokens" in started["message"]
        finished = events[names.index("backfill_finished")]
        assert finished["deals"] == deals and finished["tokens"] == 20 * deals
        assert names.index("backfill_started") < names.index("backfill_finished")
        assert names.index("backfill_finished") < names.index("run_finished")
        plain = _cli(["run", "--entities", "deals", "--backfill-history"], tmp_path, env)
        assert "history backfill: complete" in plain.stdout


def _env(tmp_path: Path, fake: FakePipedrive) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEDRIVE_", "SOURCES__"))}
    env.update(
        DLT_DATA_DIR=str(tmp_path / "dlt-data"),
        PIPEDRIVE_API_TOKEN=TOKEN,
        PIPEDRIVE_BASE_URL=fake.base_url,
        SOURCES__PIPEDRIVE__BACKOFF_BASE="0.01",
        SOURCES__PIPEDRIVE__MAX_ATTEMPTS="2",
    )
    return env


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_cost_is_told_before_the_first_changelog_request(syncer: Syncer) -> None:
    from pipelines.pipedrive_sync.runner import make_context, run_sync

    assert syncer.run(entities="deals").code == 0
    settings = syncer.settings(entities="deals", backfill_history=True)
    ctx = make_context(settings)
    told: list[tuple[str, int]] = []
    ctx.notify = lambda event, text, **numbers: told.append(
        (event, sum(_changelog_reads(syncer.fake).values()))
    )
    assert run_sync(settings, ctx).code == 0
    deals = len(syncer.fake.ids("deals", deleted=None))
    assert told == [("backfill_started", 0), ("backfill_finished", deals)]
