"""How requests prove who they are. Credentials only ever travel in headers (and, to the
OAuth token endpoint, in the form body its specification asks for)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from .errors import AuthError, TemporaryError
from .policy import Accept, Decision, Fail, RenewAuth, RequestPolicy, Retry, json_object, not_json
from .ratelimit import RateLimiter
from .redact import redact, register_secret
from .transport import HttpSettings, RequestMetrics, Transport

TOKEN_LABEL = "OAuth token endpoint"


class Auth(Protocol):
    def headers(self) -> dict[str, str]:
        """Headers to add to the next request."""
        ...

    def on_unauthorized(self, sent: Mapping[str, str]) -> bool:
        """Called on a 401 with the headers that were sent; True if credentials were renewed
        (or renewed meanwhile by another thread) and the request may be retried."""
        ...

    def use_transport(self, transport: Transport) -> None:
        """Send the auth's own requests (a token refresh) through the client's `transport`."""
        ...


class ApiTokenAuth:
    """A personal API token in the `x-api-token` header (never in the URL)."""

    def __init__(self, token: str) -> None:
        self._token = token
        register_secret(token)

    def headers(self) -> dict[str, str]:
        return {"x-api-token": self._token}

    def on_unauthorized(self, sent: Mapping[str, str]) -> bool:
        return False

    def use_transport(self, transport: Transport) -> None:
        pass  # a personal token is never renewed

    def __repr__(self) -> str:
        return "ApiTokenAuth(***)"


class TokenStore(Protocol):
    """Where a rotating OAuth refresh token survives between runs."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, data: dict[str, Any]) -> None: ...


class FileTokenStore:
    """A JSON file (mode 0600) replaced atomically, guarded by a lock file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            raise OAuthError(f"the OAuth token store {self.path} is corrupt; delete it") from None
        return data if isinstance(data, dict) else None

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


class OAuthError(AuthError):
    """The OAuth grant failed (revoked or rotated-away refresh token, wrong client)."""


def _rejected(status: int, content: bytes) -> OAuthError:
    """The one-line error for a refusal, with what the endpoint said (redacted)."""
    body = json_object(content) or {}
    detail = body.get("error_description") or body.get("message") or body.get("error")
    return OAuthError(
        f"the OAuth refresh was rejected ({status}"
        + (f": {redact(str(detail))}" if detail else "")
        + "); the refresh token may be revoked or already used — re-authorize the app"
    )


class TokenPolicy(RequestPolicy):
    """The status table's decisions for the token endpoint: what it retries is retried like
    any request; any other refusal means the grant is gone (exit 77), never renewed."""

    def on_response(
        self, status: int, headers: Mapping[str, str], content: bytes, now: float
    ) -> Decision:
        decision = super().on_response(status, headers, content, now)
        refused = isinstance(decision, RenewAuth) or (
            isinstance(decision, Fail) and not isinstance(decision.error, TemporaryError)
        )
        return Fail(_rejected(status, content)) if refused else decision


@dataclass
class OAuthGrant:
    access_token: str
    refresh_token: str
    expires_at: float
    lifetime: float
    scopes: frozenset[str]
    api_domain: str | None


class OAuthAuth:
    """OAuth 2 bearer auth that refreshes its access token before expiry and once on a 401.

    Pipedrive rotates refresh tokens: every refresh returns a new one and retires the old, so
    the new one is saved in the token store before anything else happens.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_url: str,
        store: TokenStore,
        *,
        leeway: float = 120.0,
        timeout: float = 30.0,
        clock: Any = time.time,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_url = token_url
        self.store = store
        self.leeway = leeway
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        register_secret(client_secret)
        register_secret(refresh_token)
        stored = store.load() or {}
        # the stored chain continues the configured refresh token; a newly configured token
        # (the app was re-authorized) starts a new chain
        continues = (
            stored.get("client_id") == client_id
            and stored.get("seed_refresh_token") == refresh_token
            and bool(stored.get("refresh_token"))
        )
        self._seed = refresh_token
        self._refresh_token = stored["refresh_token"] if continues else refresh_token
        register_secret(self._refresh_token)
        self._grant: OAuthGrant | None = None
        if continues and stored.get("access_token"):
            register_secret(stored["access_token"])
            self._grant = OAuthGrant(
                access_token=stored["access_token"],
                refresh_token=self._refresh_token,
                expires_at=float(stored.get("expires_at") or 0),
                lifetime=float(stored.get("lifetime") or 3600),
                scopes=frozenset(stored.get("scopes") or ()),
                api_domain=stored.get("api_domain"),
            )

    # -- Auth protocol -------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        grant = self.grant()
        return {"Authorization": f"Bearer {grant.access_token}"}

    def on_unauthorized(self, sent: Mapping[str, str]) -> bool:
        with self._lock:
            current = self._grant.access_token if self._grant else None
        if current is not None and sent.get("Authorization") != f"Bearer {current}":
            return True  # another thread refreshed since this request was sent
        self.refresh(stale=current)
        return True

    def use_transport(self, transport: Transport) -> None:
        self._transport = transport

    # -- grants --------------------------------------------------------------------------
    def grant(self) -> OAuthGrant:
        """A valid grant, refreshed first when it expires within `leeway` seconds."""
        with self._lock:
            grant = self._grant
        if grant is None:
            return self.refresh()
        # refresh ahead of expiry: `leeway` early, or half-way for very short-lived tokens
        early = min(self.leeway, grant.lifetime / 2)
        if grant.expires_at - early <= self._clock():
            return self.refresh(stale=grant.access_token)
        return grant

    @property
    def scopes(self) -> frozenset[str]:
        return self.grant().scopes

    @property
    def api_domain(self) -> str | None:
        return self.grant().api_domain

    def refresh(self, stale: str | None = None) -> OAuthGrant:
        """Exchange the refresh token for a new access token (and the next refresh token).

        With `stale`, nothing happens if another thread already replaced that access token.
        """
        with self._lock:
            if stale is not None and self._grant is not None and self._grant.access_token != stale:
                return self._grant
            body = self._request_grant()
            for secret in (body.get("access_token"), body.get("refresh_token")):
                register_secret(secret)
            scope = body.get("scope") or ""
            lifetime = float(body.get("expires_in") or 3600)
            grant = OAuthGrant(
                access_token=body["access_token"],
                refresh_token=body.get("refresh_token") or self._refresh_token,
                expires_at=self._clock() + lifetime,
                lifetime=lifetime,
                scopes=frozenset(s for s in scope.replace(",", " ").split() if s),
                api_domain=body.get("api_domain"),
            )
            # persist the rotated refresh token before anything else can fail
            self.store.save(
                {
                    "client_id": self.client_id,
                    "seed_refresh_token": self._seed,
                    "refresh_token": grant.refresh_token,
                    "access_token": grant.access_token,
                    "expires_at": grant.expires_at,
                    "lifetime": grant.lifetime,
                    "scopes": sorted(grant.scopes),
                    "api_domain": grant.api_domain,
                }
            )
            self._refresh_token = grant.refresh_token
            self._grant = grant
            return grant

    def _request_grant(self) -> dict[str, Any]:
        """The token endpoint's answer to a refresh, through the transport with the same
        retries, rate limiting and stop-aware waits as any API request."""
        transport = self._transport or Transport(
            HttpSettings(), RateLimiter(), RequestMetrics(), threading.Event()
        )
        policy = TokenPolicy(transport.settings, f"{TOKEN_LABEL}: POST {redact(self.token_url)}")
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        while True:
            sent = transport.attempt(
                policy,
                "POST",
                self.token_url,
                f"PIPEDRIVE_OAUTH_TOKEN_URL {self.token_url}",
                data=form,
                auth=(self.client_id, self._client_secret),
            )
            decision = sent.decision
            if sent.response is not None and isinstance(decision, Accept):
                transport.metrics.note_answered(TOKEN_LABEL)
                body = json_object(sent.response.content)
                if body is not None and "access_token" in body:
                    return body
                if body is not None:
                    raise _rejected(sent.response.status_code, sent.response.content)
                decision = policy.on_failure(not_json(sent.response.content))
            if isinstance(decision, Fail):
                raise decision.error
            assert isinstance(decision, Retry)  # TokenPolicy never renews credentials
            transport.wait(decision, TOKEN_LABEL)

    def __repr__(self) -> str:
        return f"OAuthAuth(client_id={self.client_id!r}, ***)"
