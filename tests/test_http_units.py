"""Pure pieces of the HTTP layer: paginators, rate limiter, status table, redaction, URLs."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from sources.pipedrive.http import (
    CursorPaginator,
    OffsetPaginator,
    RateLimiter,
    redact,
    register_secret,
)
from sources.pipedrive.http.client import DeferredItems, normalize_base_url, peek_envelope
from sources.pipedrive.http.errors import (
    STATUS_TABLE,
    Action,
    BadResponse,
    TemporaryError,
    outcome_for,
)


def test_cursor_paginator_follows_next_cursor_until_null() -> None:
    pager = CursorPaginator(limit=500)
    assert pager.first_params() == {"limit": 500}
    assert pager.next_params({"additional_data": {"next_cursor": "abc"}}, [{}]) == {
        "limit": 500,
        "cursor": "abc",
    }
    assert pager.position == "abc"
    assert pager.next_params({"additional_data": {"next_cursor": None}}, []) is None
    assert pager.next_params({"additional_data": None}, []) is None


def test_cursor_paginator_resumes_from_saved_cursor() -> None:
    assert CursorPaginator(limit=10, cursor="xyz").first_params() == {"limit": 10, "cursor": "xyz"}


@pytest.mark.parametrize(
    ("pagination", "expected"),
    [
        ({"more_items_in_collection": True, "next_start": 500}, {"start": 500, "limit": 500}),
        ({"more_items_in_collection": True}, {"start": 3, "limit": 500}),  # next_start missing
        ({"more_items_in_collection": False, "next_start": 500}, None),
        ({"more_items_in_collection": False}, None),
    ],
)
def test_offset_paginator_edge_cases(pagination: dict, expected: dict | None) -> None:
    pager = OffsetPaginator(limit=500)
    assert pager.first_params() == {"start": 0, "limit": 500}
    body = {"additional_data": {"pagination": pagination}}
    assert pager.next_params(body, [{}, {}, {}]) == expected


def test_offset_paginator_overlap_rereads_but_always_advances() -> None:
    pager = OffsetPaginator(limit=100, overlap=10)
    body = {
        "additional_data": {"pagination": {"more_items_in_collection": True, "next_start": 100}}
    }
    assert pager.next_params(body, [{}] * 100) == {"start": 90, "limit": 100}
    stuck = {
        "additional_data": {"pagination": {"more_items_in_collection": True, "next_start": 90}}
    }
    assert pager.next_params(stuck, [{}] * 100) is None  # a server that does not advance


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_waits_for_window_reset_when_budget_runs_dry() -> None:
    clock = FakeClock()
    limiter = RateLimiter(reserve=1, clock=clock, sleep=clock.sleep)
    limiter.before_request()  # nothing known yet: go
    limiter.after_response({"x-ratelimit-remaining": "3", "x-ratelimit-reset": "2"})
    limiter.before_request()  # 3 -> 2
    limiter.before_request()  # 2 -> 1
    assert clock.slept == []
    limiter.before_request()  # 1 left is the reserve: wait for the window to reset
    assert clock.slept == [pytest.approx(2.0)]
    assert limiter.throttled == 1


def _window(remaining: int, limit: int = 10) -> dict[str, str]:
    return {
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": "2",
        "x-ratelimit-limit": str(limit),
    }


def test_rate_limiter_counts_requests_other_threads_still_have_in_flight() -> None:
    """Parallel entities: a response's `remaining` may predate requests already sent."""
    clock = FakeClock()
    limiter = RateLimiter(reserve=1, clock=clock, sleep=clock.sleep)
    limiter.before_request()
    limiter.after_response(_window(3))
    limiter.before_request()  # 3 -> 2
    limiter.before_request()  # 2 -> 1, two in flight
    # the first is answered with 2 remaining, but the other one is still on its way
    limiter.after_response(_window(2))
    limiter.before_request()  # 2 - 1 in flight = 1, the reserve: wait for the next window
    assert clock.slept == [pytest.approx(2.0)]


def test_a_new_window_is_as_big_as_the_last_one_said() -> None:
    """Without an answer yet in a new window, threads must not all go at once."""
    clock = FakeClock()
    limiter = RateLimiter(reserve=1, clock=clock, sleep=clock.sleep)
    limiter.before_request()
    limiter.after_response(_window(0, limit=3))
    limiter.before_request()  # none left: wait; the new window holds 3 (-> 2)
    assert clock.slept == [pytest.approx(2.0)]
    limiter.before_request()  # 2 -> 1
    assert clock.slept == [pytest.approx(2.0)]
    limiter.before_request()  # 1 is the reserve: wait for the next window
    assert clock.slept == [pytest.approx(2.0), pytest.approx(2.0)]


def test_a_late_answer_never_raises_what_a_fresher_one_said() -> None:
    """Parallel entities under load: answers are handled out of order; the window's last
    known state must not go back up to what an older answer said."""
    clock = FakeClock()
    limiter = RateLimiter(reserve=1, clock=clock, sleep=clock.sleep)
    limiter.after_response(_window(5, limit=6), limiter.before_request())
    first, second, third = (limiter.before_request() for _ in range(3))
    # the server counted all three: 2 left; the third's answer is handled first
    limiter.after_response(_window(2, limit=6), third)
    limiter.after_response(_window(3, limit=6), second)
    limiter.after_response(_window(4, limit=6), first)
    sent = 0
    while not clock.slept:
        limiter.before_request()
        sent += 1
    assert sent - 1 <= 2 - 1  # before the wait, at most what was left above the reserve


def test_requests_still_in_flight_count_against_the_next_window() -> None:
    """A request sent at the end of a window may reach Pipedrive in the next one."""
    clock = FakeClock()
    limiter = RateLimiter(reserve=1, clock=clock, sleep=clock.sleep)
    limiter.after_response(_window(2, limit=3), limiter.before_request())
    late = limiter.before_request()  # 2 -> 1, no answer for a long while
    limiter.before_request()  # the reserve: wait for the next window, 3 - 1 in flight -> 1
    assert clock.slept == [pytest.approx(2.0)]
    limiter.after_response(_window(2, limit=3), late)  # answered in the new window: stale
    limiter.before_request()  # 1 is the reserve: wait again
    assert clock.slept == [pytest.approx(2.0), pytest.approx(2.0)]


def test_until_the_first_answer_one_request_at_a_time() -> None:
    limiter = RateLimiter()
    limiter.before_request()
    second = threading.Thread(target=limiter.before_request)
    second.start()
    second.join(timeout=0.2)
    assert second.is_alive()  # held until the first answer tells the window
    limiter.after_response(_window(50, limit=60))
    second.join(timeout=5)
    assert not second.is_alive()


def test_rate_limiter_ignores_responses_without_headers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.after_response({})
    for _ in range(100):
        limiter.before_request()
    assert clock.slept == []


def test_every_listed_status_maps_to_an_action_and_a_message() -> None:
    for status, outcome in STATUS_TABLE.items():
        assert outcome.message, status
    assert outcome_for(401).action is Action.AUTH
    assert outcome_for(403).action is Action.UNAVAILABLE
    assert outcome_for(402).action is Action.UNAVAILABLE
    assert outcome_for(429).action is Action.RATE_LIMITED
    assert outcome_for(599).action is Action.RETRY
    assert outcome_for(418).action is Action.FAIL
    assert outcome_for(204).action is Action.OK


def test_redaction_masks_registered_secrets_and_credential_parameters() -> None:
    register_secret("s3cr3t-token-value")
    text = "GET /v1/deals?api_token=abcdef&x=1 failed for s3cr3t-token-value"
    masked = redact(text)
    assert "s3cr3t-token-value" not in masked
    assert "abcdef" not in masked
    assert "x=1" in masked
    assert redact("Authorization: Bearer eyJhbGciOi") == "Authorization: Bearer ***"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "https://api.pipedrive.com"),
        ("https://api.pipedrive.com/", "https://api.pipedrive.com"),
        ("https://acme.pipedrive.com/v1", "https://acme.pipedrive.com"),
        ("https://acme.pipedrive.com/api/v2", "https://acme.pipedrive.com"),
        ("acme.pipedrive.com", "https://acme.pipedrive.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_base_url_forms(given: str | None, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"success":true,"data":[{"id":1}],"additional_data":{"next_cursor":"c2"}}', "c2"),
        (b'{"data":[],"additional_data":{"next_cursor":null}}', None),
        (b'{"data":[{"additional_data":{"x":1}}],"additional_data":{"next_cursor":"c"}}', "c"),
    ],
)
def test_the_envelope_tail_gives_the_next_cursor(body: bytes, expected: str | None) -> None:
    assert peek_envelope(body) == {"additional_data": {"next_cursor": expected}}


@pytest.mark.parametrize(
    "body",
    [
        b'{"success":true,"data":[{"id":1}],"additional_data":{"next_cur',  # cut short
        b'{"success":true,"data":[]}',  # no additional_data
        b"<html>busy</html>",
        b'{"additional_data":{"next_cursor":"c"},"data":[' + b'{"id":1},' * 10_000 + b"{}]}",
        b'{"data":[{"additional_data":{"x":1}}]}',  # only inside a record
    ],
)
def test_a_body_without_a_readable_tail_is_parsed_in_full(body: bytes) -> None:
    assert peek_envelope(body) is None


def test_deferred_items_refetch_a_page_that_failed_to_decode() -> None:
    failed: Future[Any] = Future()
    failed.set_exception(BadResponse("GET /deals: not JSON"))
    envelope = {"additional_data": {"next_cursor": "c"}}
    good = {"data": [{"id": 1}, {"id": 2}], **envelope}
    counted: list[int] = []
    items = DeferredItems(failed, lambda: good, envelope, "GET /deals")
    items.on_count(counted.append)
    assert items.rows() == [{"id": 1}, {"id": 2}]
    assert counted == [2]
    elsewhere = DeferredItems(failed, lambda: good, {"additional_data": {}}, "GET /deals")
    with pytest.raises(TemporaryError, match="read again"):
        elsewhere.resolve()


def test_deferred_items_resolve_to_what_the_decode_thread_made() -> None:
    done: Future[Any] = Future()
    done.set_result([{"id": 7}])
    counted: list[int] = []
    items = DeferredItems(done, lambda: {}, {}, "GET /deals")
    assert len(items) == 1
    items.on_count(counted.append)
    assert counted == [1]
