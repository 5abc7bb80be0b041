"""How requests prove who they are. Credentials only ever travel in headers."""

from __future__ import annotations

from typing import Protocol

from .redact import register_secret


class Auth(Protocol):
    def headers(self) -> dict[str, str]:
        """Headers to add to the next request."""
        ...

    def on_unauthorized(self) -> bool:
        """Called on a 401; True if credentials were renewed and the request may be retried."""
        ...


class ApiTokenAuth:
    """A personal API token in the `x-api-token` header (never in the URL)."""

    def __init__(self, token: str) -> None:
        self._token = token
        register_secret(token)

    def headers(self) -> dict[str, str]:
        return {"x-api-token": self._token}

    def on_unauthorized(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ApiTokenAuth(***)"
