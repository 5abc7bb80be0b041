"""The Pipedrive company the credentials belong to (`/v1/users/me`, 2 API tokens)."""

from __future__ import annotations

from .entities import Api
from .http import PipedriveClient
from .identity import Company

ME_COST = 2


def fetch_company(client: PipedriveClient) -> Company:
    """Ask Pipedrive whose credentials these are; a rejected token fails here (exit 77)."""
    body, _ = client.get_json(Api.V1, "users/me", cost=ME_COST, label="users/me")
    return Company.from_me(body.get("data") or {})
