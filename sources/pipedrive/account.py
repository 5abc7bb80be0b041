"""The Pipedrive company the credentials belong to (`/v1/users/me`, 2 API tokens)."""

from __future__ import annotations

from .entities import ME_PATH, ME_TOKEN_COST, Api
from .http import BaseUrlError, EntityUnavailable, PipedriveClient
from .http.errors import base_url_not_found
from .identity import Company


def fetch_company(client: PipedriveClient) -> Company:
    """Ask Pipedrive whose credentials these are; a rejected token fails here (exit 77), a
    wrong API root too (exit 78: users/me exists on every account, a 404 is the URL's)."""
    try:
        body, _ = client.get_json(Api.V1, ME_PATH, cost=ME_TOKEN_COST, label=ME_PATH)
    except EntityUnavailable as exc:
        if exc.status == 404:
            raise BaseUrlError(base_url_not_found(client.base_url)) from None
        raise
    return Company.from_me(body.get("data") or {})
