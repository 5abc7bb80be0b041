"""Rate limits, transient faults, budget exhaustion and bad input, against the fake's injection."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import FAST_HTTP, SMALL_SCALE, TOKEN, Syncer, all_deals, assert_matches_fake

from sources.pipedrive_fake import FakePipedrive, FaultRule

CORE = ("deals", "persons", "organizations", "activities", "products", "pipelines", "stages")


def _assert_all_match(syncer: Syncer) -> None:
    for table in CORE:
        expected = all_deals(syncer.fake) if table == "deals" else syncer.fake.records(table)
        assert_matches_fake(syncer, table, expected)


def test_proactive_throttling_keeps_a_run_under_the_burst_limit(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakePipedrive(token=TOKEN, seed=7, scale=dict(SMALL_SCALE), rate_limit=8) as fake:
        syncer = Syncer(fake, tmp_path, monkeypatch)
        result = syncer.run(http=replace(FAST_HTTP, page_limit=100))
        assert result.code == 0, result.message
        assert result.metrics.rate_limited == 0
        assert [r for r in fake.requests if r.status == 429] == []
        assert result.ctx is not None and result.ctx.client.limiter.throttled > 0
        _assert_all_match(syncer)


def test_a_429_storm_is_waited_out(syncer: Syncer) -> None:
    syncer.fake.add_fault(FaultRule(path=r"/api/v2/", kind="rate_limit", times=3, retry_after=0.05))
    result = syncer.run()
    assert result.code == 0, result.message
    assert result.metrics.rate_limited == 3
    _assert_all_match(syncer)


@pytest.mark.parametrize(
    "rule",
    [
        FaultRule(path=r"/deals$", kind="status", status=502, times=2),
        FaultRule(path=r"/persons$", kind="status", status=503, body="<html>down</html>", times=2),
        FaultRule(path=r"/organizations$", kind="html", times=2),
        FaultRule(path=r"/activities$", kind="malformed", times=2),
        FaultRule(path=r"/products$", kind="drop", times=2),
        FaultRule(path=r"/deals$", kind="stall", delay=2.5, times=1, after=1),
    ],
    ids=["502", "503-html", "html-200", "malformed", "dropped", "stall"],
)
def test_transient_faults_are_retried_and_the_sync_ends_equal(
    syncer: Syncer, rule: FaultRule
) -> None:
    syncer.fake.add_fault(rule)
    result = syncer.run()
    assert result.code == 0, result.message
    assert rule.fired == rule.times
    assert result.metrics.retries >= rule.times
    _assert_all_match(syncer)


def test_retries_running_out_exit_75_keep_what_loaded_and_the_next_run_converges(
    syncer: Syncer,
) -> None:
    rule = syncer.fake.add_fault(
        FaultRule(path=r"/persons$", kind="status", status=503, times=None)
    )
    # one entity after another: deals are read (and loaded) before persons fail
    result = syncer.run(options={"parallel_entities": 1})
    assert result.code == 75
    assert "persons" in result.message and "gave up" in result.message
    # the work done before the failure is committed
    assert syncer.query("SELECT count(*) FROM deals")[0][0] > 0
    syncer.fake.clear_faults()
    assert rule.fired >= FAST_HTTP.max_attempts
    assert syncer.run().code == 0
    _assert_all_match(syncer)


def test_daily_budget_exhaustion_commits_progress_exits_75_and_resumes(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakePipedrive(token=TOKEN, seed=7, scale=dict(SMALL_SCALE), daily_budget=200) as fake:
        syncer = Syncer(fake, tmp_path, monkeypatch)
        first = syncer.run(options={"chunk_pages": 1})
        assert first.code == 75
        assert "budget" in first.message
        loaded = syncer.query("SELECT count(*) FROM deals")[0][0]
        assert 0 < loaded < len(all_deals(fake))
        fake.reset_budget()
        fake.daily_budget = None
        second = syncer.run()
        assert second.code == 0, second.message
        _assert_all_match(syncer)
        # resumed: the deals already loaded were not fetched again from the start
        assert sum(r.rows for r in second.reports if r.name == "deals") < len(all_deals(fake))


def test_a_page_without_data_fails_clearly_and_advances_no_state(syncer: Syncer) -> None:
    syncer.fake.add_fault(FaultRule(path=r"/api/v2/persons$", kind="body", body={"success": True}))
    with pytest.raises(Exception) as caught:
        syncer.run()
    from pipelines.pipedrive_sync.exit_codes import classify

    failure = classify(caught.value)
    assert failure.code == 1
    assert "persons" in failure.message and "GET /api/v2/persons" in failure.message
    assert "no 'data'" in failure.message
    # nothing was committed for persons: a clean rerun loads everything
    syncer.fake.clear_faults()
    assert syncer.run().code == 0
    _assert_all_match(syncer)


def test_data_null_is_an_empty_page(syncer: Syncer) -> None:
    syncer.fake.add_fault(
        FaultRule(path=r"/api/v2/stages$", kind="body", body={"success": True, "data": None})
    )
    result = syncer.run()
    assert result.code == 0
    assert {r.name: r.rows for r in result.reports}["stages"] == 0


def test_odd_values_load_as_well_as_possible(syncer: Syncer) -> None:
    fake = syncer.fake
    deal = fake.records("deals")[0]
    weird = {
        **deal,
        "value": "not a number",
        "custom_fields": None,
        "brand_new_field": {"nested": [1, {"deep": True}]},
        "title": "\u202etxet\u202c \U0001f525 " + "y" * 70_000,
    }
    body = {"success": True, "data": [weird], "additional_data": {"next_cursor": None}}
    fake.add_fault(FaultRule(path=r"/api/v2/deals$", kind="body", body=body, times=1))
    result = syncer.run(entities="deals")
    assert result.code == 0, result.message
    row = syncer.query(
        f"SELECT value, value__v_text, brand_new_field, length(title) FROM deals WHERE id = {deal['id']}"
    )
    assert row == [(None, "not a number", '{"nested":[1,{"deep":true}]}', len(weird["title"]))]


def test_settings_never_put_the_token_in_a_url(syncer: Syncer) -> None:
    syncer.run()
    assert not syncer.fake.token_leaked_in_url
    assert all(r.token_valid for r in syncer.fake.requests)


def test_http_settings_are_configurable(syncer: Syncer) -> None:
    slow = replace(FAST_HTTP, max_attempts=1)
    syncer.fake.add_fault(FaultRule(path=r"/api/v2/stages$", kind="status", status=500))
    result = syncer.run(http=slow)
    assert result.code == 75  # one attempt only: no retry


CORRUPT_MIDDLE = (
    b'{"success": true, "data": [{"id": 1, oops}], "additional_data": {"next_cursor": null}}'
)


def test_a_body_broken_in_the_middle_is_read_again(syncer: Syncer) -> None:
    """The next page is requested from the envelope's tail while the records still parse; a
    body that then fails to parse is fetched again with the usual validation."""
    rule = syncer.fake.add_fault(
        FaultRule(path=r"/api/v2/products$", kind="body", body=CORRUPT_MIDDLE, times=1)
    )
    result = syncer.run()
    assert result.code == 0, result.message
    assert rule.fired == 1
    _assert_all_match(syncer)


def test_a_broken_body_that_pointed_elsewhere_stops_the_run_safely(syncer: Syncer) -> None:
    """Its tail said "last page" while the page read again has more: nothing after it was
    trusted, the run stops (75) and the next one converges."""
    syncer.fake.add_fault(
        FaultRule(path=r"/api/v2/deals$", kind="body", body=CORRUPT_MIDDLE, times=1)
    )
    result = syncer.run()
    assert result.code == 75, result.message
    assert "read again" in result.message
    assert syncer.run().code == 0
    _assert_all_match(syncer)
