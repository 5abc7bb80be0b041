"""Entities are extracted at the same time (`parallel_entities`), within the burst limit, and
load exactly what one-after-another extraction loads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_HTTP, SMALL_SCALE, TOKEN, Syncer, all_deals, assert_matches_fake

from pipelines.pipedrive_sync.warehouse import open_duckdb
from sources.pipedrive.entities import Api
from sources.pipedrive.http import (
    ApiTokenAuth,
    CursorPaginator,
    EntityUnavailable,
    PipedriveClient,
)
from sources.pipedrive_fake import FakePipedrive
from sources.pipedrive_fake.server import FaultRule, RequestRecord


class FirstRequestHeld:
    """Holds the first request to any of `paths` until another request to them arrives (or
    `timeout` passes), and records whether one did: whether requests were in flight together.
    (Lists page by cursor, so the held list cannot itself ask again.)"""

    def __init__(self, *paths: str, timeout: float) -> None:
        self.paths = set(paths)
        self.timeout = timeout
        self.count = 0
        self.another = threading.Event()
        self.lock = threading.Lock()
        self.overlapped: bool | None = None

    def __call__(self, record: RequestRecord) -> None:
        if record.path not in self.paths:
            return
        with self.lock:
            self.count += 1
            first = self.count == 1
        if first:
            self.overlapped = self.another.wait(self.timeout)
        else:
            self.another.set()


def _sync_with_waiting_fake(
    syncer: Syncer, fake: FakePipedrive, parallel: int, timeout: float
) -> tuple[FirstRequestHeld, Any]:
    probe = FirstRequestHeld("/api/v2/deals", "/api/v2/persons", timeout=timeout)
    fake.on_request(probe)
    result = syncer.run(entities="deals,persons", options={"parallel_entities": parallel})
    fake.on_request(None)
    return probe, result


def test_entities_are_fetched_at_the_same_time(syncer: Syncer, fake: FakePipedrive) -> None:
    probe, result = _sync_with_waiting_fake(syncer, fake, parallel=3, timeout=20)
    assert result.code == 0, result.message
    assert probe.overlapped is True  # the other entity asked while the first one was held
    assert [r.name for r in result.reports] == ["deals", "persons"]
    assert_matches_fake(syncer, "persons", fake.records("persons"))
    assert_matches_fake(syncer, "deals", all_deals(fake))


def test_one_entity_at_a_time_when_parallel_entities_is_1(
    syncer: Syncer, fake: FakePipedrive
) -> None:
    probe, result = _sync_with_waiting_fake(syncer, fake, parallel=1, timeout=1)
    assert result.code == 0, result.message
    assert probe.overlapped is False  # nobody else asked while the first list was held


@pytest.fixture
def limited_fake() -> Iterator[FakePipedrive]:
    server = FakePipedrive(token=TOKEN, seed=7, scale=dict(SMALL_SCALE), rate_limit=6).start()
    try:
        yield server
    finally:
        server.stop()


def test_parallel_entities_stay_within_the_burst_limit(
    limited_fake: FakePipedrive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncer = Syncer(limited_fake, tmp_path, monkeypatch)
    settings = syncer.settings(options={"parallel_entities": 4})
    from pipelines.pipedrive_sync.runner import make_context, run_sync

    ctx = make_context(settings)
    result = run_sync(settings, ctx)
    assert result.code == 0, result.message
    statuses = [r.status for r in limited_fake.requests]
    assert len(statuses) > 12  # more than two windows' worth: the limit was really in play
    assert 429 not in statuses
    assert ctx.client.limiter.throttled > 0  # it waited for the window instead


def _table_contents(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the dataset, rows sorted, without dlt's per-load columns."""
    contents: dict[str, list[tuple[Any, ...]]] = {}
    with open_duckdb(db_path) as con:
        tables = [
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                " AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\'"
                " AND table_name NOT IN ('sync_runs', 'sync_identity')"
            ).fetchall()
        ]
        for table in tables:
            columns = [
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = ? ORDER BY column_name",
                    [table],
                ).fetchall()
                if c not in ("_dlt_load_id", "_dlt_id", "detected_at")
            ]
            select = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f'SELECT {select} FROM "{table}"').fetchall()
            contents[table] = sorted(rows, key=repr)
    return contents


def test_parallel_and_sequential_syncs_load_the_same_tables(
    fake: FakePipedrive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncers = {}
    for parallel in (1, 3):
        (tmp_path / f"parallel-{parallel}").mkdir()
        syncers[parallel] = Syncer(fake, tmp_path / f"parallel-{parallel}", monkeypatch)

    def sync_both() -> None:
        for parallel, syncer in syncers.items():
            monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / f"dlt-{parallel}"))
            result = syncer.run(options={"parallel_entities": parallel})
            assert result.code == 0, result.message

    sync_both()  # first syncs
    deal, person = fake.records("deals")[0], fake.records("persons")[0]
    fake.update("deals", deal["id"], title="changed in Pipedrive")
    fake.update("persons", person["id"], name="Renamed Person")
    fake.delete("organizations", fake.records("organizations")[0]["id"])
    sync_both()  # incremental syncs
    loaded = {parallel: _table_contents(syncer.db_path) for parallel, syncer in syncers.items()}
    assert loaded[1].keys() == loaded[3].keys()
    assert {"deals", "persons", "organizations", "activities"} <= loaded[1].keys()
    for table in loaded[1]:
        assert loaded[1][table] == loaded[3][table], table


@pytest.mark.parametrize(("prefetch", "overlapped"), [(4, True), (1, False)])
def test_independent_lists_are_in_flight_together_and_come_back_in_order(
    fake: FakePipedrive, prefetch: int, overlapped: bool
) -> None:
    """Per-parent lists (deal products per 100 deals, followers per record) are independent:
    the client keeps up to `prefetch` of them in flight instead of one round trip after another."""
    client = PipedriveClient(
        fake.base_url, ApiTokenAuth(TOKEN), replace(FAST_HTTP, prefetch=prefetch)
    )
    deal_ids = sorted(d["id"] for d in fake.records("deals"))
    batches = [deal_ids[i : i + 10] for i in range(0, len(deal_ids), 10)]
    lists = [("deals/products", {"deal_ids": ",".join(map(str, b))}) for b in batches]
    probe = FirstRequestHeld("/api/v2/deals/products", timeout=20 if overlapped else 1)
    fake.on_request(probe)
    results = list(
        client.iter_lists(Api.V2, lists, lambda: CursorPaginator(limit=50), cost=10, label="dp")
    )
    fake.on_request(None)
    assert probe.overlapped is overlapped
    assert len(results) == len(batches)
    for batch, pages in zip(batches, results, strict=True):
        got = sorted(row["id"] for page in pages for row in page.rows)
        assert got == sorted(p["id"] for p in fake.deal_products(batch))
    assert sum(len(page.rows) for pages in results for page in pages) > 0


def test_a_failed_list_is_raised_in_its_place_after_the_lists_before_it(
    fake: FakePipedrive,
) -> None:
    client = PipedriveClient(fake.base_url, ApiTokenAuth(TOKEN), FAST_HTTP)
    deal_ids = sorted(d["id"] for d in fake.records("deals"))
    lists = [("deals/products", {"deal_ids": str(i)}) for i in deal_ids[:12]]
    fake.add_fault(FaultRule(path=r"/deals/products$", status=403, after=5))
    got: list[list[Any]] = []
    with pytest.raises(EntityUnavailable):
        for pages in client.iter_lists(
            Api.V2, lists, lambda: CursorPaginator(limit=50), cost=10, label="dp"
        ):
            got.append(pages)
    assert 1 <= len(got) < len(lists)  # the lists before the failed one, none after it
    assert [p[0].request for p in got] == [
        client.describe(Api.V2, "deals/products", {**params, "limit": 50})
        for _, params in lists[: len(got)]
    ]
