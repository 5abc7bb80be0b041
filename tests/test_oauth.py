"""OAuth apps: bearer auth, refresh before expiry and on 401, rotation across runs, scopes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FAST_HTTP, Syncer, all_deals, assert_matches_fake, run_cli

from pipelines.pipedrive_sync.runner import make_context, run_sync
from pipelines.pipedrive_sync.settings import resolve
from schemas.generate import load_spec
from sources.pipedrive.entities import ENTITIES
from sources.pipedrive_fake import FakePipedrive, FaultRule

CLIENT_ID, CLIENT_SECRET, SEED_REFRESH = (
    "app-client-id",
    "app-client-secret-xyz",
    "1000:seed-refresh",
)


@pytest.fixture
def oauth_env(fake: FakePipedrive, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("PIPEDRIVE_API_TOKEN", raising=False)
    monkeypatch.delenv("PIPEDRIVE_BASE_URL", raising=False)  # the token response says where
    monkeypatch.setenv("PIPEDRIVE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("PIPEDRIVE_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("PIPEDRIVE_REFRESH_TOKEN", SEED_REFRESH)
    monkeypatch.setenv("PIPEDRIVE_OAUTH_TOKEN_URL", fake.base_url + "/oauth/token")
    store = tmp_path / "oauth-store.json"
    monkeypatch.setenv("PIPEDRIVE_OAUTH_TOKEN_STORE", str(store))
    return store


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    settings = resolve(duckdb_path=str(tmp_path / "pipedrive.duckdb"), **overrides)
    settings.http = FAST_HTTP
    return settings


def _syncer(fake: FakePipedrive, tmp_path: Path) -> Syncer:
    syncer = Syncer.__new__(Syncer)
    syncer.fake = fake
    syncer.db_path = tmp_path / "pipedrive.duckdb"
    return syncer


def _token_requests(fake: FakePipedrive) -> list[Any]:
    return [r for r in fake.requests if r.path == "/oauth/token"]


def test_a_sync_with_only_oauth_credentials(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    install = fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH)
    result = run_sync(_settings(tmp_path))
    assert result.code == 0, result.message
    api_requests = [r for r in fake.requests if r.api]
    assert api_requests and all(
        r.headers.get("authorization", "").startswith("Bearer ") for r in api_requests
    )
    assert not any("x-api-token" in r.headers for r in api_requests)
    syncer = _syncer(fake, tmp_path)
    assert_matches_fake(syncer, "deals", all_deals(fake))
    # the rotated refresh token is stored (0600) and is the install's current one
    stored = orjson.loads(oauth_env.read_bytes())
    assert stored["refresh_token"] == install.refresh_token != SEED_REFRESH
    assert oauth_env.stat().st_mode & 0o077 == 0


def test_rotation_is_persisted_so_the_next_run_still_works(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH)
    assert run_sync(_settings(tmp_path)).code == 0
    fake.expire_access_tokens()  # the next run must refresh with the rotated token
    second = run_sync(_settings(tmp_path))
    assert second.code == 0, second.message
    assert len(_token_requests(fake)) == 2
    # the seed token was rotated away: using it again would fail
    assert all(r.status == 200 for r in _token_requests(fake))


def test_an_access_token_expiring_mid_run_is_refreshed_once_on_401(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH)
    expired: list[int] = []

    def expire_on_second_page(record: Any) -> None:
        if record.endpoint == "deals" and record.query.get("cursor") and not expired:
            expired.append(record.n)
            fake.expire_access_tokens()

    fake.on_request(expire_on_second_page)
    result = run_sync(_settings(tmp_path))
    assert result.code == 0, result.message
    assert expired
    assert [r for r in fake.requests if r.status == 401]  # pages in flight may all see it
    assert len(_token_requests(fake)) == 2  # but one refresh serves them all
    assert_matches_fake(_syncer(fake, tmp_path), "deals", all_deals(fake))


def test_the_access_token_is_refreshed_before_it_expires(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH, access_ttl=3600)
    settings = _settings(tmp_path)
    ctx = make_context(settings)
    now = [1_000_000.0]
    ctx.client.auth._clock = lambda: now[0]  # type: ignore[attr-defined]

    def age_the_token(record: Any) -> None:
        if record.endpoint == "persons":
            now[0] += 3550  # within the leeway before expiry
            fake.on_request(None)

    fake.on_request(age_the_token)
    result = run_sync(settings, ctx)
    assert result.code == 0, result.message
    assert len(_token_requests(fake)) == 2  # the initial grant and one proactive refresh
    assert [r for r in fake.requests if r.status == 401] == []


def test_a_revoked_refresh_token_exits_77_with_a_clear_message(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    install = fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH)
    assert run_sync(_settings(tmp_path)).code == 0
    fake.revoke_refresh_token(install.refresh_token)
    fake.expire_access_tokens()
    from pipelines.pipedrive_sync.exit_codes import classify

    with pytest.raises(Exception) as caught:
        run_sync(_settings(tmp_path))
    failure = classify(caught.value)
    assert failure.code == 77
    assert "re-authorize" in failure.message
    assert install.refresh_token not in failure.message and CLIENT_SECRET not in failure.message


@pytest.mark.parametrize("kind", ["status", "drop"])
def test_a_token_endpoint_failing_once_is_retried(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path, kind: str
) -> None:
    """A 503 (or a dropped connection) from the token endpoint is retried like any request."""
    fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH)
    fault = fake.add_fault(FaultRule(path=r"^/oauth/token$", kind=kind, status=503, times=1))
    result = run_sync(_settings(tmp_path))
    assert result.code == 0, result.message
    assert fault.fired == 1
    assert [r.status for r in _token_requests(fake) if r.fault is None] == [200]
    assert_matches_fake(_syncer(fake, tmp_path), "deals", all_deals(fake))


def test_a_token_endpoint_that_stays_down_exits_75_in_one_line(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH)
    fake.add_fault(FaultRule(path=r"^/oauth/token$", kind="status", status=503, times=None))
    env = {k: v for k, v in os.environ.items() if k != "PIPEDRIVE_BASE_URL"}
    env.update(
        DLT_DATA_DIR=str(tmp_path / "dlt-data"),
        SOURCES__PIPEDRIVE__MAX_ATTEMPTS="3",
        SOURCES__PIPEDRIVE__BACKOFF_BASE="0.01",
    )
    proc = run_cli(["run"], env, tmp_path)
    assert proc.returncode == 75, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "OAuth token endpoint" in proc.stderr and "gave up after 3 attempts" in proc.stderr
    assert len(_token_requests(fake)) == 3
    assert CLIENT_SECRET not in proc.stderr and SEED_REFRESH not in proc.stderr


def test_a_scope_limited_app_loads_what_it_may_and_names_what_it_skipped(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH, scopes=["deals:read"])
    result = run_sync(_settings(tmp_path))
    assert result.code == 0, result.message
    reports = {r.name: r for r in result.reports}
    assert reports["deals"].status == "ok" and reports["stages"].status == "ok"
    for name, scope in (("persons", "contacts:read"), ("activities", "activities:read")):
        assert reports[name].status == "skipped"
        assert scope in reports[name].message
    # skipped up front: not a single request to them
    assert not [r for r in fake.requests if r.endpoint in ("persons", "activities")]
    assert [r for r in fake.requests if r.status == 403] == []


def test_an_unexpected_403_skips_only_that_entity(syncer: Syncer) -> None:
    syncer.fake.restrict(r"/api/v2/products$", status=403)
    result = syncer.run()
    assert result.code == 0
    reports = {r.name: r for r in result.reports}
    assert reports["products"].status == "skipped" and "403" in reports["products"].message
    assert reports["deals"].status == "ok"


def test_a_feature_missing_from_the_plan_402_skips_that_entity(syncer: Syncer) -> None:
    syncer.fake.restrict(r"/api/v2/activities$", status=402)
    result = syncer.run()
    assert result.code == 0
    assert {r.name: r.status for r in result.reports}["activities"] == "skipped"


def test_entity_scopes_match_the_official_spec() -> None:
    for entity in ENTITIES:
        for stream in entity.streams:
            operation = load_spec(entity.api.value)["paths"]["/" + stream.path.split("?")[0]]["get"]
            scopes = {s for item in operation.get("security", []) for s in item.get("oauth2", [])}
            assert set(entity.scopes) == scopes, (entity.name, stream.path)


def test_oauth_secrets_appear_nowhere_but_the_token_store(
    fake: FakePipedrive, oauth_env: Path, tmp_path: Path
) -> None:
    install = fake.oauth_client(CLIENT_ID, CLIENT_SECRET, SEED_REFRESH)
    assert run_sync(_settings(tmp_path)).code == 0
    secrets = [CLIENT_SECRET.encode(), install.refresh_token.encode()]
    secrets += [t.encode() for t in install.access_tokens]
    leaked = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and path != oauth_env and any(s in path.read_bytes() for s in secrets)
    ]
    assert leaked == []
