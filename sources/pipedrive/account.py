"""The Pipedrive company the credentials belong to (`/v1/users/me`, 2 API tokens)."""

from __future__ import annotations

from .entities import ME_PATH, ME_TOKEN_COST, Api
from .http import PipedriveClient
from .identity import Company


def fetch_company(client: PipedriveClient) -> Company:
    """Ask Pipedrive whose credentials these are; a rejected token fails here (exit 77)."""
    body, _ = client.get_json(Api.V1, ME_PATH, cost=ME_TOKEN_COST, label=ME_PATH)
    return Company.from_me(body.get("data") or {})
