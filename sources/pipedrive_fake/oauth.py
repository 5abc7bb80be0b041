"""OAuth 2 of the fake: app installs, rotating refresh tokens, expiring bearer tokens, scopes.

The token endpoint (`POST /oauth/token`, served by the same server as the API) follows
Pipedrive's documented behaviour ("Marketplace OAuth and API proxy status codes"):

* 200 `{"access_token", "token_type": "Bearer", "refresh_token", "scope", "expires_in",
  "api_domain"}`; `scope` is comma-separated like Pipedrive's ("base,deals:read,...");
  `expires_in` is the access token's lifetime less one second (3600 → 3599), as Pipedrive
  reports it.
* Refresh tokens rotate: a successful refresh returns a new refresh token and the old one stops
  working.
* Errors have the shape `{"success": false, "message": "<Pipedrive's message>", "error":
  "<RFC 6749 code>"}`: 400 invalid_request / unsupported_grant_type / invalid_grant
  ("Invalid grant: refresh_token is invalid"), 401 invalid_client ("Invalid client: client is
  invalid" / "Invalid client: cannot retrieve client credentials").

Access tokens expire on the fake clock (`FakePipedrive.now`), never on the wall clock: move
the clock (`advance`) or call `expire_access_tokens()` to expire them deterministically.
"""

from __future__ import annotations

import base64
import hmac
import random
import threading
from dataclasses import dataclass, field
from typing import Any

# every scope the fake's endpoints ask for (a token with all of them reaches every endpoint)
ALL_SCOPES: tuple[str, ...] = (
    "base",
    "deals:read",
    "deals:full",
    "activities:read",
    "activities:full",
    "contacts:read",
    "contacts:full",
    "products:read",
    "products:full",
    "projects:read",
    "projects:full",
    "leads:read",
    "leads:full",
    "users:read",
    "goals:read",
    "goals:full",
    "recents:read",
    "phone-integration",
    "admin",
)


@dataclass
class OAuthInstall:
    """One app install: its client and the refresh token currently valid (it rotates)."""

    client_id: str
    scopes: tuple[str, ...]
    access_ttl: float
    refresh_token: str  # the current one; every refresh replaces it
    refreshes: int = 0  # successful refreshes so far
    revoked: bool = False
    access_tokens: list[str] = field(default_factory=list)  # every access token issued


@dataclass
class AccessGrant:
    token: str
    scopes: frozenset[str]
    expires_ms: float
    install: OAuthInstall | None = None
    revoked: bool = False


class OAuthError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"success": False, "message": self.message, "error": self.error}


def _scopes(scopes: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    chosen = list(ALL_SCOPES if scopes is None else scopes)
    if "base" not in chosen:
        chosen.insert(0, "base")  # always granted
    return tuple(dict.fromkeys(chosen))


class OAuthRegistry:
    """Clients, installs and tokens of the fake (thread-safe)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"{seed}/oauth")
        self._lock = threading.Lock()
        self.clients: dict[str, str] = {}  # client id → secret
        self.installs: list[OAuthInstall] = []
        self._refresh: dict[str, OAuthInstall] = {}  # valid refresh tokens
        self._access: dict[str, AccessGrant] = {}

    def _token(self, kind: str) -> str:
        raw = self._rng.getrandbits(256).to_bytes(32, "big")
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return f"v1u:{text}" if kind == "access" else f"{self._rng.randint(10**6, 10**7)}:{text}"

    def register(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        scopes: list[str] | tuple[str, ...] | None,
        access_ttl: float,
    ) -> OAuthInstall:
        with self._lock:
            known = self.clients.get(client_id)
            if known is not None and known != client_secret:
                raise ValueError(f"client {client_id!r} is registered with another secret")
            if refresh_token in self._refresh:
                raise ValueError("that refresh token is in use already")
            self.clients[client_id] = client_secret
            install = OAuthInstall(client_id, _scopes(scopes), access_ttl, refresh_token)
            self.installs.append(install)
            self._refresh[refresh_token] = install
            return install

    def issue(
        self, scopes: list[str] | tuple[str, ...] | None, access_ttl: float, now_ms: int
    ) -> str:
        with self._lock:
            return self._issue(frozenset(_scopes(scopes)), access_ttl, now_ms, None)

    def _issue(
        self, scopes: frozenset[str], ttl: float, now_ms: int, install: OAuthInstall | None
    ) -> str:
        token = self._token("access")
        self._access[token] = AccessGrant(token, scopes, now_ms + ttl * 1000, install)
        if install is not None:
            install.access_tokens.append(token)
        return token

    def revoke_refresh(self, token: str) -> None:
        with self._lock:
            install = self._refresh.pop(token, None)
            if install is None:
                raise KeyError("no such valid refresh token")
            install.revoked = True

    def revoke_access(self, token: str) -> None:
        with self._lock:
            self._access[token].revoked = True

    def expire_all(self, now_ms: int) -> None:
        with self._lock:
            for grant in self._access.values():
                grant.expires_ms = min(grant.expires_ms, now_ms)

    def authenticate(self, token: str, now_ms: int) -> AccessGrant | None:
        """The grant of a valid (known, unrevoked, unexpired) access token, else None."""
        with self._lock:
            grant = self._access.get(token)
            if grant is None or grant.revoked or now_ms >= grant.expires_ms:
                return None
            return grant

    # -- the token endpoint --

    def token_request(
        self, form: dict[str, str], authorization: str | None, now_ms: int, api_domain: str
    ) -> dict[str, Any]:
        """Answer a POST /oauth/token (raises OAuthError)."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                client_id, _, secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = secret = None
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing parameter: grant_type")
        if grant_type not in ("authorization_code", "refresh_token", "exchange_api_token"):
            raise OAuthError(
                400, "unsupported_grant_type", "Unsupported grant type: grant_type is invalid"
            )
        if not client_id or not secret:
            raise OAuthError(
                401, "invalid_client", "Invalid client: cannot retrieve client credentials"
            )
        with self._lock:
            known = self.clients.get(client_id)
            if known is None or not hmac.compare_digest(known.encode(), secret.encode()):
                raise OAuthError(401, "invalid_client", "Invalid client: client is invalid")
            if grant_type == "authorization_code":
                raise OAuthError(
                    400, "invalid_grant", "Invalid grant: authorization_code is invalid"
                )
            if grant_type == "exchange_api_token":
                raise OAuthError(400, "invalid_grant", "Invalid grant: api_token is invalid")
            old = form.get("refresh_token") or ""
            install = self._refresh.get(old)
            if install is None or install.client_id != client_id:
                raise OAuthError(400, "invalid_grant", "Invalid grant: refresh_token is invalid")
            del self._refresh[old]
            new = self._token("refresh")
            install.refresh_token = new
            install.refreshes += 1
            self._refresh[new] = install
            access = self._issue(frozenset(install.scopes), install.access_ttl, now_ms, install)
            return {
                "access_token": access,
                "token_type": "Bearer",
                "refresh_token": new,
                "scope": ",".join(install.scopes),
                "expires_in": max(0, int(install.access_ttl) - 1),
                "api_domain": api_domain,
            }


def parse_form(body: bytes) -> dict[str, str]:
    from urllib.parse import parse_qs

    try:
        text = body.decode()
    except UnicodeDecodeError:
        return {}
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
