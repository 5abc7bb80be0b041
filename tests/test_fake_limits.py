"""Auth, rate limits, the daily token budget, fault injection and the request log of the fake."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import pytest
import requests

from sources.pipedrive_fake import FakePipedrive, FaultRule, RequestRecord
from sources.pipedrive_fake.testing import FakeClient

SMALL = {"deals": 30, "persons": 10, "organizations": 5, "activities": 10, "products": 5,
         "leads": 10, "notes": 10}  # fmt: skip
UNAUTHORIZED = {
    "success": False,
    "error": "unauthorized access",
    "errorCode": 401,
    "error_info": "Please check developers.pipedrive.com",
}


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    with FakePipedrive(token="secret-token", scale=SMALL) as f:
        yield f


def _ratelimit_headers_ok(r: requests.Response) -> None:
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert r.headers[name].isdigit(), name
    assert 1 <= int(r.headers["x-ratelimit-reset"]) <= 2
    parsedate_to_datetime(r.headers["Date"])


# --- auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v2/deals", "/v1/leads", "/api/v2/nothing-here"])
@pytest.mark.parametrize("token", [None, "wrong-token", "secret-token "])
def test_bad_or_missing_token_gets_the_real_401(
    fake: FakePipedrive, path: str, token: str | None
) -> None:
    headers = {"x-api-token": token} if token else {}
    r = requests.get(fake.url(path), headers=headers, timeout=5)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    assert r.headers["content-type"] == "application/json"
    _ratelimit_headers_ok(r)
    rec = fake.requests[-1]
    assert rec.status == 401 and rec.token_valid is False and rec.token_in_url is False


def test_token_in_the_url_is_recorded(fake: FakePipedrive, client: FakeClient) -> None:
    client.get("/api/v2/deals", limit=1)
    assert not fake.token_leaked_in_url
    r = requests.get(fake.url("/api/v2/deals"), params={"api_token": "secret-token"}, timeout=5)
    assert r.status_code == 200  # the real API accepts it, so a leak would go unnoticed
    assert fake.requests[-1].token_in_url and fake.token_leaked_in_url
    fake.reset_requests()
    requests.get(fake.url("/api/v2/deals?x=secret-token"), timeout=5)
    assert fake.requests[-1].token_in_url


def test_request_log_and_hook(fake: FakePipedrive, client: FakeClient) -> None:
    seen: list[RequestRecord] = []
    fake.on_request(seen.append)
    client.get("/api/v2/persons", limit=3, sort_by="update_time")
    client.get("/api/v2/unknown")
    requests.post(
        fake.url("/api/v2/deals"),
        json={"title": "x"},
        headers={"x-api-token": "secret-token"},
        timeout=5,
    )
    log = fake.requests
    assert [r.path for r in log] == ["/api/v2/persons", "/api/v2/unknown", "/api/v2/deals"]
    assert log[0].query == {"limit": "3", "sort_by": "update_time"}
    assert [r.status for r in log] == [200, 404, 405]
    assert log[0].token_valid and log[0].cost == 10 and log[0].api == "v2"
    assert log[0].endpoint == "persons" and log[2].method == "POST"
    assert [r.n for r in seen] == [r.n for r in log]
    assert seen[0].status == 200  # the same record, completed after the response
    fake.on_request(None)
    fake.reset_requests()
    assert fake.requests == []


# --- rate limits ------------------------------------------------------------------------------------


def test_every_response_carries_ratelimit_and_date_headers(
    fake: FakePipedrive, client: FakeClient
) -> None:
    for r in (
        client.get("/api/v2/deals"),
        client.get("/api/v2/deals", limit=9999),
        client.get("/api/v2/nope"),
        requests.get(fake.url("/v1/leads"), timeout=5),
    ):
        _ratelimit_headers_ok(r)
    date = parsedate_to_datetime(client.get("/api/v2/deals").headers["Date"])
    assert date == fake.now  # the server's clock is the fake clock


def test_burst_limit_gives_429_with_retry_after() -> None:
    with FakePipedrive(token="t", scale=SMALL, rate_limit=5) as fake:
        c = FakeClient(fake)
        fake.reset_rate_window()
        got = [c.get("/api/v2/pipelines") for _ in range(7)]
        assert [r.status_code for r in got] == [200] * 5 + [429] * 2
        assert [r.headers["x-ratelimit-remaining"] for r in got] == [
            "4",
            "3",
            "2",
            "1",
            "0",
            "0",
            "0",
        ]
        assert all(r.headers["x-ratelimit-limit"] == "5" for r in got)
        blocked = got[-1]
        assert 1 <= int(blocked.headers["Retry-After"]) <= 2
        assert blocked.json()["success"] is False and blocked.json()["errorCode"] == 429
        assert "budget" not in blocked.text
        assert fake.tokens_used == 25  # 429s cost nothing
        fake.reset_rate_window()
        assert c.get("/api/v2/pipelines").status_code == 200


def test_daily_budget_gives_429_until_midnight() -> None:
    with FakePipedrive(token="t", scale=SMALL, daily_budget=42) as fake:
        c = FakeClient(fake)
        assert c.get("/api/v2/deals").status_code == 200  # 10
        assert c.get("/api/v2/deals/archived").status_code == 200  # 20
        assert c.get("/api/v2/pipelines").status_code == 200  # 5
        assert fake.tokens_used == 35
        r = c.get("/v1/leads")  # 20 more would exceed 42
        assert r.status_code == 429
        assert "budget" in r.json()["error"].lower()
        assert int(r.headers["Retry-After"]) == 12 * 3600  # fake clock: 12:00 UTC
        _ratelimit_headers_ok(r)
        assert c.get("/api/v2/stages").status_code == 200  # 5 still fits
        assert c.get("/api/v2/stages").status_code == 429
        assert fake.tokens_used == 40
        fake.reset_budget()
        assert c.get("/v1/leads/archived").status_code == 200
        assert fake.tokens_used == 40
        assert [r.cost for r in fake.requests] == [10, 20, 5, 0, 5, 0, 40]


# --- faults ----------------------------------------------------------------------------------------


def test_status_fault_json_and_html(fake: FakePipedrive, client: FakeClient) -> None:
    fake.add_fault(FaultRule(path=r"/deals$", kind="status", status=503, times=2))
    fake.add_fault(
        FaultRule(path=r"/persons$", kind="status", status=502, body="<html>Bad gateway</html>")
    )
    assert [client.get("/api/v2/deals").status_code for _ in range(3)] == [503, 503, 200]
    r = client.get("/api/v2/persons")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert client.get("/api/v2/persons").status_code == 200
    r500 = FaultRule(kind="status")
    fake.add_fault(r500)
    r = client.get("/v1/notes")
    assert r.status_code == 500 and r.json()["success"] is False
    _ratelimit_headers_ok(r)
    assert r500.exhausted and fake.requests[-1].fault == "status"


def test_html_and_malformed_faults(fake: FakePipedrive, client: FakeClient) -> None:
    fake.add_fault(FaultRule(path="leads", kind="html"))
    r = client.get("/v1/leads")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text.lstrip().startswith("<")
    fake.add_fault(FaultRule(path="deals", kind="malformed"))
    r = client.get("/api/v2/deals")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    assert r.text.startswith('{"success":true,"data":[')
    assert client.get("/api/v2/deals").json()["success"] is True


def test_drop_fault_closes_the_connection(fake: FakePipedrive, client: FakeClient) -> None:
    fake.add_fault(FaultRule(path="deals", kind="drop"))
    with pytest.raises(requests.exceptions.ConnectionError):
        client.get("/api/v2/deals")
    assert fake.requests[-1].status is None and fake.requests[-1].fault == "drop"
    assert client.get("/api/v2/deals").status_code == 200


def test_stall_fault_triggers_client_timeouts(fake: FakePipedrive) -> None:
    fake.add_fault(FaultRule(path="deals", kind="stall", delay=3))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(
            fake.url("/api/v2/deals"), headers={"x-api-token": "secret-token"}, timeout=0.3
        )
    assert time.monotonic() - started < 2
    r = requests.get(fake.url("/api/v2/deals"), headers={"x-api-token": "secret-token"}, timeout=5)
    assert r.status_code == 200
    # a short stall answers normally, late
    fake.add_fault(FaultRule(path="persons", kind="stall", delay=0.2))
    started = time.monotonic()
    r = requests.get(
        fake.url("/api/v2/persons"), headers={"x-api-token": "secret-token"}, timeout=5
    )
    assert r.status_code == 200 and r.json()["data"] and time.monotonic() - started >= 0.2


def test_rate_limit_fault(fake: FakePipedrive, client: FakeClient) -> None:
    fake.add_fault(FaultRule(path="stages", kind="rate_limit", retry_after=7, times=1))
    r = client.get("/api/v2/stages")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["errorCode"] == 429
    _ratelimit_headers_ok(r)
    assert client.get("/api/v2/stages").status_code == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"success": True}, {"success": True}),
        ({"success": True, "data": None}, {"success": True, "data": None}),
        ('{"success":true,"data":[{"id":"7"}]}', {"success": True, "data": [{"id": "7"}]}),
        (b'{"success":false,"error":"boom"}', {"success": False, "error": "boom"}),
    ],
)
def test_body_fault(fake: FakePipedrive, client: FakeClient, body: object, expected: dict) -> None:
    fake.add_fault(FaultRule(path="deals", kind="body", body=body))
    r = client.get("/api/v2/deals")
    assert r.status_code == 200 and r.json() == expected


def test_after_and_times_and_clear(fake: FakePipedrive, client: FakeClient) -> None:
    rule = fake.add_fault(
        FaultRule(path=r"/api/v2/deals$", kind="status", status=500, after=2, times=2)
    )
    codes = [client.get("/api/v2/deals").status_code for _ in range(6)]
    assert codes == [200, 200, 500, 500, 200, 200]
    assert (rule.seen, rule.fired) == (6, 2)
    assert client.get("/api/v2/deals/archived").status_code == 200  # the regex did not match
    fake.add_fault(FaultRule(path="deals", kind="status", status=500, times=None))
    assert {client.get("/api/v2/deals").status_code for _ in range(4)} == {500}
    fake.clear_faults()
    assert client.get("/api/v2/deals").status_code == 200
    # faulted requests cost no tokens
    assert [r.cost for r in fake.requests if r.fault] == [0] * 6


def test_stop_hangs_up_on_kept_alive_connections() -> None:
    fake = FakePipedrive(token="t", scale=SMALL).start()
    c = FakeClient(fake)
    assert c.get("/api/v2/pipelines").status_code == 200
    fake.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        c.get("/api/v2/pipelines")
    c.close()
    with fake:  # restartable
        assert FakeClient(fake).get("/api/v2/pipelines").status_code == 200


def test_unknown_fault_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultRule(kind="explode")
