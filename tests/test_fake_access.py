"""Plan/permission restrictions and OAuth 2 (token endpoint, bearer auth, expiry, scopes)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sources.pipedrive_fake import ALL_SCOPES, FakePipedrive, FaultRule
from sources.pipedrive_fake import spec as pspec
from sources.pipedrive_fake.testing import FakeClient

SMALL = {"deals": 30, "persons": 10, "organizations": 5, "activities": 10, "products": 5,
         "leads": 10, "notes": 10}  # fmt: skip
CLIENT_ID, SECRET = "app-id", "app-secret"
INVALID_TOKEN = {
    "success": False,
    "error": "Invalid token: access token is invalid",
    "errorCode": 401,
    "error_info": "Please check developers.pipedrive.com",
}


@pytest.fixture
def fake() -> Iterator[FakePipedrive]:
    with FakePipedrive(token="api-token", scale=SMALL) as f:
        yield f


def _refresh(
    fake: FakePipedrive,
    refresh_token: str,
    auth: tuple[str, str] | None = (CLIENT_ID, SECRET),
    **extra: str,
) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return requests.post(fake.url("/oauth/token"), data=data, auth=auth, timeout=10)


def _get(fake: FakePipedrive, path: str, token: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(fake.url(path), headers=headers, params=params, timeout=10)


# --- restrictions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [402, 403])
def test_restricted_endpoints_answer_the_error_envelope(fake: FakePipedrive, status: int) -> None:
    c = FakeClient(fake)
    rule = fake.restrict(r"^/api/v2/projects", status=status)
    for path in ("/api/v2/projects", "/api/v2/projects/archived"):
        r = c.get(path)
        assert r.status_code == status
        body = r.json()
        assert body["success"] is False and body["errorCode"] == status and body["error"]
        assert body["data"] is None
    assert c.get("/api/v2/tasks").status_code == 200  # everything else still answers
    assert c.get("/api/v2/deals").status_code == 200
    used = fake.tokens_used
    c.get("/api/v2/projects")
    assert fake.tokens_used == used  # not charged
    assert fake.requests[-1].cost == 0
    assert FakeClient(fake, token="wrong").get("/api/v2/projects").status_code == 401
    fake.unrestrict(rule.path)
    assert c.get("/api/v2/projects").status_code == 200


def test_restriction_messages_and_lifting(fake: FakePipedrive) -> None:
    c = FakeClient(fake)
    fake.restrict("goals", 402, message="Goals are on the Professional plan")
    fake.restrict("callLogs", 403)
    assert c.get("/v1/goals/find").json()["error"] == "Goals are on the Professional plan"
    assert c.get("/v1/callLogs").status_code == 403
    fake.unrestrict()
    assert c.get("/v1/goals/find").status_code == 200 and c.get("/v1/callLogs").status_code == 200
    with pytest.raises(ValueError):
        fake.restrict("x", status=404)


# --- the token endpoint ---------------------------------------------------------------------------


def test_refresh_gives_an_access_token_that_works(fake: FakePipedrive) -> None:
    install = fake.oauth_client(CLIENT_ID, SECRET, "refresh-0", scopes=["deals:read"])
    r = _refresh(fake, "refresh-0")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"access_token", "token_type", "refresh_token", "scope", "expires_in",
                         "api_domain"}  # fmt: skip
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    assert body["api_domain"] == fake.base_url
    assert body["scope"].split(",") == ["base", "deals:read"]
    assert body["refresh_token"] != "refresh-0" and install.refresh_token == body["refresh_token"]
    r = _get(fake, "/api/v2/deals", body["access_token"], limit=5)
    assert r.status_code == 200 and len(r.json()["data"]) == 5
    assert fake.requests[-1].auth == "bearer" and fake.requests[-1].token_valid is False
    assert fake.requests[0].path == "/oauth/token" and fake.requests[0].auth is None
    form = dict(x.split("=") for x in fake.requests[0].body.decode().split("&"))
    assert form == {"grant_type": "refresh_token", "refresh_token": "refresh-0"}


def test_refresh_tokens_rotate(fake: FakePipedrive) -> None:
    install = fake.oauth_client(CLIENT_ID, SECRET, "first")
    second = _refresh(fake, "first").json()["refresh_token"]
    r = _refresh(fake, "first")  # the old one is used up
    assert r.status_code == 400
    assert r.json() == {"success": False, "message": "Invalid grant: refresh_token is invalid",
                        "error": "invalid_grant"}  # fmt: skip
    third = _refresh(fake, second).json()["refresh_token"]
    assert install.refresh_token == third and install.refreshes == 2
    assert _refresh(fake, second).status_code == 400
    assert _refresh(fake, third).status_code == 200


def test_revoked_refresh_token_and_unknown_one(fake: FakePipedrive) -> None:
    fake.oauth_client(CLIENT_ID, SECRET, "to-revoke")
    access = _refresh(fake, "to-revoke").json()
    fake.revoke_refresh_token(access["refresh_token"])
    r = _refresh(fake, access["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert _get(fake, "/v1/users/me", access["access_token"]).status_code == 200  # until expiry
    assert _refresh(fake, "never-issued").status_code == 400


def test_client_credentials(fake: FakePipedrive) -> None:
    fake.oauth_client(CLIENT_ID, SECRET, "rt")
    r = _refresh(fake, "rt", auth=(CLIENT_ID, "wrong"))
    assert r.status_code == 401
    assert r.json() == {"success": False, "message": "Invalid client: client is invalid",
                        "error": "invalid_client"}  # fmt: skip
    assert _refresh(fake, "rt", auth=("other-app", SECRET)).status_code == 401
    r = _refresh(fake, "rt", auth=None)
    assert r.status_code == 401
    assert r.json()["message"] == "Invalid client: cannot retrieve client credentials"
    # a failed attempt does not use the refresh token up; credentials may also come in the form
    r = _refresh(fake, "rt", auth=None, client_id=CLIENT_ID, client_secret=SECRET)
    assert r.status_code == 200
    # another app's refresh token is not valid for this client
    fake.oauth_client("app-2", "secret-2", "rt-2")
    assert _refresh(fake, "rt-2").status_code == 400


def test_token_request_errors(fake: FakePipedrive) -> None:
    fake.oauth_client(CLIENT_ID, SECRET, "rt")
    url = fake.url("/oauth/token")
    r = requests.post(url, data={"refresh_token": "rt"}, auth=(CLIENT_ID, SECRET), timeout=10)
    assert r.status_code == 400 and r.json()["message"] == "Missing parameter: grant_type"
    r = requests.post(url, data={"grant_type": "password"}, auth=(CLIENT_ID, SECRET), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = requests.post(
        url, json={"grant_type": "refresh_token", "refresh_token": "rt"},
        auth=(CLIENT_ID, SECRET), timeout=10,
    )  # fmt: skip
    assert r.status_code == 400 and "x-www-form-urlencoded" in r.json()["message"]
    assert requests.get(url, timeout=10).status_code == 405
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    r = requests.post(
        url,
        data="grant_type=refresh_token&refresh_token=rt",
        headers={"Authorization": f"Basic {basic}",
                 "Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )  # fmt: skip
    assert r.status_code == 200


def test_token_endpoint_takes_faults_but_no_budget_or_rate_limit() -> None:
    with FakePipedrive(token="t", scale=SMALL, rate_limit=1, daily_budget=1) as fake:
        install = fake.oauth_client(CLIENT_ID, SECRET, "rt")
        fake.add_fault(FaultRule(path="^/oauth/token$", kind="status", status=503, times=1))
        assert _refresh(fake, "rt").status_code == 503
        for _ in range(3):
            r = _refresh(fake, install.refresh_token)
            assert r.status_code == 200
            assert "x-ratelimit-limit" not in r.headers
        assert fake.tokens_used == 0 and install.refreshes == 3


# --- bearer auth ----------------------------------------------------------------------------------


def test_expiry_follows_the_fake_clock(fake: FakePipedrive) -> None:
    fake.oauth_client(CLIENT_ID, SECRET, "rt", access_ttl=60)
    body = _refresh(fake, "rt").json()
    assert body["expires_in"] == 59
    token = body["access_token"]
    assert _get(fake, "/api/v2/persons", token).status_code == 200
    fake.advance(59)
    assert _get(fake, "/api/v2/persons", token).status_code == 200
    fake.advance(1)
    r = _get(fake, "/api/v2/persons", token)
    assert r.status_code == 401 and r.json() == INVALID_TOKEN
    assert pspec.errors(pspec.validator_for("v1", "*", "401"), r.json()) == []
    assert fake.requests[-1].auth == "bearer"
    fresh = _refresh(fake, body["refresh_token"]).json()["access_token"]
    assert _get(fake, "/api/v2/persons", fresh).status_code == 200


def test_expire_access_tokens_and_revocation(fake: FakePipedrive) -> None:
    fake.oauth_client(CLIENT_ID, SECRET, "rt")
    body = _refresh(fake, "rt").json()
    other = fake.issue_access_token(scopes=["contacts:read"])
    assert _get(fake, "/api/v2/persons", other).status_code == 200
    fake.expire_access_tokens()
    assert _get(fake, "/api/v2/deals", body["access_token"]).status_code == 401
    assert _get(fake, "/api/v2/persons", other).status_code == 401
    renewed = _refresh(fake, body["refresh_token"]).json()["access_token"]
    assert _get(fake, "/api/v2/deals", renewed).status_code == 200  # new tokens are fine
    fake.revoke_access_token(renewed)
    assert _get(fake, "/api/v2/deals", renewed).status_code == 401
    assert _get(fake, "/api/v2/deals", "made-up").json() == INVALID_TOKEN


def test_scopes_are_enforced_per_endpoint(fake: FakePipedrive) -> None:
    token = fake.issue_access_token(scopes=["deals:read", "activities:read"])
    assert _get(fake, "/api/v2/deals", token).status_code == 200
    assert _get(fake, "/v1/notes", token).status_code == 200
    assert _get(fake, "/v1/users/me", token).status_code == 200  # base is always granted
    assert _get(fake, "/v1/currencies", token).status_code == 200
    assert _get(fake, "/api/v2/activityFields", token).status_code == 200  # SCOPE_EXTRAS
    assert _get(fake, "/api/v2/deals/3/followers", token).status_code == 200
    for path in ("/api/v2/persons", "/v1/leads", "/v1/users", "/v1/roles", "/api/v2/projects",
                 "/v1/goals/find", "/v1/callLogs", "/api/v2/persons/1/followers"):  # fmt: skip
        r = _get(fake, path, token)
        assert r.status_code == 403, path
        body = r.json()
        assert body["success"] is False and body["error"] == "Scope and URL mismatch"
        assert body["errorCode"] == 403 and path in body["error_info"]
    used = fake.tokens_used
    _get(fake, "/api/v2/persons", token)
    assert fake.tokens_used == used  # a 403 is not charged
    everything = fake.issue_access_token()
    assert set(ALL_SCOPES) <= set(fake.oauth._access[everything].scopes)
    for path in ("/api/v2/persons", "/v1/leads", "/v1/roles", "/v1/callLogs", "/v1/goals/find"):
        assert _get(fake, path, everything).status_code == 200, path


def test_api_token_auth_is_unchanged_and_recorded(fake: FakePipedrive) -> None:
    c = FakeClient(fake)
    assert c.get("/api/v2/deals").status_code == 200
    assert fake.requests[-1].auth == "api_token" and fake.requests[-1].token_valid
    assert c.get("/api/v2/deals", api_token="api-token").status_code == 200
    assert FakeClient(fake, token="nope").get("/api/v2/deals").status_code == 401
    assert fake.requests[-1].auth == "api_token"
    assert FakeClient(fake, token="").get("/api/v2/deals").status_code == 401
    assert fake.requests[-1].auth is None
    # a valid x-api-token wins over a stale bearer token
    r = requests.get(
        fake.url("/api/v2/deals"),
        headers={"x-api-token": "api-token", "Authorization": "Bearer stale"},
        timeout=10,
    )
    assert r.status_code == 200 and fake.requests[-1].auth == "api_token"
    r = requests.get(fake.url("/api/v2/deals"), headers={"Authorization": "Token x"}, timeout=10)
    assert r.status_code == 400 and "malformed" in r.json()["error"]
