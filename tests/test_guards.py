"""Tests written against mutations that survived the rest of the suite.

Each test names the mistake it catches: a stream that fails after some pages, v1 offset lists
across pages with a record moving mid-list, a Retry-After longer than the burst window, a long
Retry-After that says nothing about the budget, a token echoed in an error body, and a token
that may read none of the selected entities.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_HTTP, TOKEN, Syncer, all_deals, assert_matches_fake

from sources.pipedrive.entities import Api
from sources.pipedrive.http import ApiTokenAuth, BudgetExhausted, PipedriveClient, RequestFailed
from sources.pipedrive.http.ratelimit import RateLimiter
from sources.pipedrive_fake import FakePipedrive, FaultRule
from sources.pipedrive_fake.server import RequestRecord


def test_a_stream_failing_after_some_pages_keeps_them_and_the_rerun_is_exact(
    syncer: Syncer, fake: FakePipedrive
) -> None:
    """Guards: the rows read before a failure are loaded together with the cursor that has
    moved past them (drop them, and the rerun starts after rows it never loaded)."""
    fake.add_fault(
        FaultRule(path=r"/api/v2/deals$", kind="status", status=503, after=2, times=None)
    )
    result = syncer.run(entities="deals")
    assert result.code == 75, result.message
    loaded = syncer.query("SELECT count(*) FROM deals")[0][0]
    assert loaded == 2 * FAST_HTTP.page_limit
    fake.clear_faults()
    seen = len(fake.requests)
    assert syncer.run(entities="deals").code == 0
    first = next(r for r in fake.requests[seen:] if r.path == "/api/v2/deals")
    assert "cursor" in first.query  # resumed after the pages it loaded, not started over
    assert_matches_fake(syncer, "deals", all_deals(fake))


@pytest.fixture
def many_leads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Syncer]:
    fake = FakePipedrive(token=TOKEN, seed=5, scale={"leads": 170, "notes": 160}).start()
    try:
        yield Syncer(fake, tmp_path, monkeypatch)
    finally:
        fake.stop()


def test_v1_offset_lists_across_pages_stay_exact_when_a_record_moves_mid_list(
    many_leads: Syncer,
) -> None:
    """Guards the overlap of v1 offset pages: a lead updated while the list is read moves to
    the end, every later row shifts one offset back, and the row on the page boundary would be
    skipped without re-reading a few rows at each boundary (and kept twice without dropping the
    re-read ones)."""
    syncer, fake = many_leads, many_leads.fake
    assert syncer.run(entities="leads,notes").code == 0
    for table in ("leads", "notes"):
        assert_matches_fake(syncer, table, fake.records(table))
    changed = [lead["id"] for lead in fake.records("leads")[:130]]
    for lead_id in changed:  # in this order: the first one heads the next run's list
        fake.update("leads", lead_id, title="changed")
    moved: list[str] = []

    def move_one(record: RequestRecord) -> None:
        later_page = record.path == "/v1/leads" and record.query.get("start") not in (None, "0")
        if later_page and not moved:  # read on the first page: every later row shifts back
            moved.append(changed[0])
            fake.update("leads", changed[0], title="moved while the list was read")

    fake.on_request(move_one)
    try:
        assert syncer.run(entities="leads").code == 0
    finally:
        fake.on_request(None)
    assert moved
    leads = [r for r in fake.requests if r.path == "/v1/leads"]
    assert len({r.query.get("start") for r in leads}) > 2  # several pages
    assert syncer.query("SELECT count(*) - count(DISTINCT id) FROM leads") == [(0,)]
    assert_matches_fake(syncer, "leads", fake.records("leads"))


def _client(fake: FakePipedrive, sleeps: list[float]) -> PipedriveClient:
    """A client whose rate limiter runs on a clock of its own: waits are recorded, not slept."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        if sum(sleeps) > 600:
            raise AssertionError(f"waited {sum(sleeps):.0f} s for the rate limit")

    limiter = RateLimiter(clock=lambda: now[0], sleep=sleep)
    return PipedriveClient(fake.base_url, ApiTokenAuth(TOKEN), FAST_HTTP, limiter=limiter)


def test_a_retry_after_longer_than_the_burst_window_is_honoured(fake: FakePipedrive) -> None:
    """Guards: the 429 wait is what Retry-After says, not capped at the 2-second window."""
    fake.add_fault(FaultRule(path=r"/api/v2/deals$", kind="rate_limit", retry_after=7, times=1))
    sleeps: list[float] = []
    body, _ = _client(fake, sleeps).get_json(Api.V2, "deals", cost=10, label="deals")
    assert body["data"]
    assert 7.0 in sleeps


def test_a_long_retry_after_is_the_daily_budget_even_unsaid(fake: FakePipedrive) -> None:
    """Guards: a wait beyond `max_rate_limit_wait` ends the run as a spent budget (exit 75,
    resumable) instead of sleeping for hours, whatever the body says."""
    fake.add_fault(FaultRule(path=r"/api/v2/deals$", kind="rate_limit", retry_after=3600))
    sleeps: list[float] = []
    with pytest.raises(BudgetExhausted) as raised:
        _client(fake, sleeps).get_json(Api.V2, "deals", cost=10, label="deals")
    assert raised.value.retry_after == 3600
    assert sleeps == []


def test_a_token_echoed_in_an_error_body_never_reaches_a_message(fake: FakePipedrive) -> None:
    """Guards: the API token is registered for redaction as soon as it is configured."""
    body: Any = {
        "success": False,
        "error": f"The token {TOKEN} is not valid here",
        "errorCode": 400,
    }
    fake.add_fault(FaultRule(path=r"/api/v2/deals$", kind="status", status=400, body=body))
    with pytest.raises(RequestFailed) as raised:
        _client(fake, []).get_json(Api.V2, "deals", cost=10, label="deals")
    assert "is not valid here" in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_a_token_that_may_read_no_selected_entity_exits_77(
    syncer: Syncer, fake: FakePipedrive
) -> None:
    """Guards: every entity skipped for a 403 is a credentials problem, not a success."""
    fake.restrict(r"/api/v2/(deals|persons)", 403)
    result = syncer.run(entities="deals,persons")
    assert result.code == 77
    assert "403" in result.message
    fake.unrestrict()
    assert syncer.run(entities="deals,persons").code == 0


class _LostConnection:
    """A dlt SQL client whose connection is gone: every statement fails transiently."""

    def __enter__(self) -> _LostConnection:
        return self

    def __exit__(self, *args: Any) -> None:
        return None

    def make_qualified_table_name(self, table: str) -> str:
        return f"pipedrive.{table}"

    def execute_sql(self, sql: str, *args: Any) -> Any:
        from dlt.destinations.exceptions import DatabaseTransientException

        raise DatabaseTransientException(ConnectionError("server closed the connection"))


class _Pipeline:
    def sql_client(self) -> _LostConnection:
        return _LostConnection()


def test_a_lost_connection_is_not_read_as_no_table_or_never_reconciled() -> None:
    """Guards: asking whether a table exists, or when ids were last reconciled, must not turn a
    broken connection into "no such table" (flagging nothing, reconciling again, appending
    into a table that has rows)."""
    from dlt.destinations.exceptions import DatabaseTransientException

    from pipelines.pipedrive_sync.history import last_reconciled
    from sources.pipedrive.postload import drop_duplicate_ids, mark_vanished

    pipeline: Any = _Pipeline()
    with pytest.raises(DatabaseTransientException):
        last_reconciled(pipeline)
    with pytest.raises(DatabaseTransientException):
        mark_vanished(pipeline, "persons", "id", {1, 2})
    with pytest.raises(DatabaseTransientException):
        drop_duplicate_ids(pipeline, ["deals"])
