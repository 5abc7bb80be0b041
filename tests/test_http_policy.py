"""The request policy decides from statuses and failures alone (no sockets, no sleeps)."""

from __future__ import annotations

import email.utils

import pytest

from sources.pipedrive.http.client import HttpSettings
from sources.pipedrive.http.errors import (
    AuthError,
    BudgetExhausted,
    EntityUnavailable,
    RequestFailed,
    TemporaryError,
)
from sources.pipedrive.http.policy import (
    Accept,
    Fail,
    RenewAuth,
    RequestPolicy,
    Retry,
    error_detail,
    retry_after_seconds,
    says_budget,
)
from sources.pipedrive.http.redact import register_secret

SETTINGS = HttpSettings(
    max_attempts=3,
    backoff_base=1.0,
    backoff_max=5.0,
    max_rate_limit_retries=2,
    max_rate_limit_wait=60.0,
)
NOW = 1_700_000_000.0


def policy(settings: HttpSettings = SETTINGS) -> RequestPolicy:
    return RequestPolicy(settings, "deals: GET /api/v2/deals", jitter=lambda low, high: high)


def test_success_is_accepted() -> None:
    assert policy().on_response(200, {}, b"{}", NOW) == Accept()
    assert policy().on_response(204, {}, b"", NOW) == Accept()


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 599])
def test_server_errors_back_off_then_give_up(status: int) -> None:
    p = policy()
    first = p.on_response(status, {}, b"", NOW)
    second = p.on_response(status, {}, b"", NOW)
    assert isinstance(first, Retry) and isinstance(second, Retry)
    assert (first.wait, second.wait) == (1.0, 2.0)  # exponential, jitter at its top
    assert not first.rate_limited
    assert first.why.endswith("; retry 1 of 2")
    third = p.on_response(status, {}, b"", NOW)
    assert isinstance(third, Fail) and isinstance(third.error, TemporaryError)
    assert "gave up after 3 attempts" in str(third.error)


def test_backoff_is_capped_and_jittered() -> None:
    p = RequestPolicy(SETTINGS, "x", jitter=lambda low, high: low)
    assert p.backoff(1) == 0.5
    assert p.backoff(10) == SETTINGS.backoff_max * 0.5


def test_transport_failures_share_the_attempt_count_with_statuses() -> None:
    p = policy()
    assert isinstance(p.on_failure("timed out"), Retry)
    assert isinstance(p.on_response(503, {}, b"", NOW), Retry)
    last = p.on_failure("connection failed (ConnectionError)")
    assert isinstance(last, Fail)
    assert "(connection failed (ConnectionError))" in str(last.error)


def test_a_rate_limit_waits_what_the_server_asks() -> None:
    decision = policy().on_response(429, {"retry-after": "7"}, b"{}", NOW)
    assert decision == Retry(7.0, "rate limited, waiting 7s", rate_limited=True)


def test_a_rate_limit_without_a_wait_backs_off() -> None:
    decision = policy().on_response(429, {}, b"{}", NOW)
    assert isinstance(decision, Retry) and decision.rate_limited and decision.wait == 1.0


def test_a_wait_longer_than_the_limit_means_the_budget_is_spent() -> None:
    decision = policy().on_response(429, {"retry-after": "3600"}, b"{}", NOW)
    assert isinstance(decision, Fail) and isinstance(decision.error, BudgetExhausted)
    assert decision.error.retry_after == 3600.0


def test_a_body_naming_the_budget_means_it_is_spent_whatever_the_wait() -> None:
    body = b'{"error": "Daily API token budget exhausted"}'
    decision = policy().on_response(429, {"retry-after": "2"}, body, NOW)
    assert isinstance(decision, Fail) and isinstance(decision.error, BudgetExhausted)


def test_rate_limit_waits_are_bounded() -> None:
    p = policy()
    for _ in range(SETTINGS.max_rate_limit_retries):
        assert isinstance(p.on_response(429, {"retry-after": "1"}, b"", NOW), Retry)
    last = p.on_response(429, {"retry-after": "1"}, b"", NOW)
    assert isinstance(last, Fail) and type(last.error) is TemporaryError
    assert "still rate limited after 3 waits" in str(last.error)


def test_rate_limits_do_not_use_up_attempts() -> None:
    p = policy()
    for _ in range(SETTINGS.max_rate_limit_retries):
        p.on_response(429, {"retry-after": "1"}, b"", NOW)
    assert isinstance(p.on_failure("timed out"), Retry)


def test_a_401_renews_the_credentials_once() -> None:
    p = policy()
    first = p.on_response(401, {}, b"", NOW)
    assert isinstance(first, RenewAuth) and isinstance(first.otherwise, AuthError)
    second = p.on_response(401, {}, b"", NOW)
    assert isinstance(second, Fail) and isinstance(second.error, AuthError)


@pytest.mark.parametrize("status", [402, 403, 404, 410])
def test_unavailable_statuses_name_the_status_and_the_reason(status: int) -> None:
    decision = policy().on_response(status, {}, b'{"error": "scope missing"}', NOW)
    assert isinstance(decision, Fail) and isinstance(decision.error, EntityUnavailable)
    assert decision.error.status == status
    assert str(decision.error).endswith("deals: GET /api/v2/deals (scope missing)")


@pytest.mark.parametrize("status", [400, 405, 422, 418])
def test_other_client_errors_fail_at_once(status: int) -> None:
    decision = policy().on_response(status, {}, b"", NOW)
    assert isinstance(decision, Fail) and isinstance(decision.error, RequestFailed)
    assert decision.error.status == status


def test_retry_after_forms() -> None:
    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert retry_after_seconds({"retry-after": "12.5"}, NOW) == 12.5
    assert retry_after_seconds({"retry-after": "-3"}, NOW) == 0.0
    assert retry_after_seconds({"retry-after": date}, NOW) == pytest.approx(30.0)
    assert retry_after_seconds({"x-ratelimit-reset": "4"}, NOW) == 4.0
    assert retry_after_seconds({"retry-after": "soon", "x-ratelimit-reset": "4"}, NOW) == 4.0
    assert retry_after_seconds({}, NOW) is None


def test_says_budget() -> None:
    assert says_budget(b"You have reached the DAILY LIMIT")
    assert says_budget(b'{"error":"token budget"}')
    assert not says_budget(b'{"error":"Too many requests"}')


def test_error_detail_forms_and_redaction() -> None:
    register_secret("s3cr3t-token-value")
    assert error_detail(b'{"error": "bad"}') == " (bad)"
    assert error_detail(b'{"message": "worse"}') == " (worse)"
    assert error_detail(b'{"errors": {"url": ["invalid"]}}') == " (url: ['invalid'])"
    assert error_detail(b"<html>") == ""
    assert error_detail(b"[1]") == ""
    assert "s3cr3t-token-value" not in error_detail(b'{"error": "token s3cr3t-token-value"}')
