"""Small HTTP helpers for tests that talk to a running `FakePipedrive` (plain `requests`)."""

from __future__ import annotations

from typing import Any

import requests

from .fake import FakePipedrive


class FakeClient:
    """A `requests` session against a fake, token in the `x-api-token` header."""

    def __init__(self, fake: FakePipedrive, token: str | None = None, timeout: float = 10) -> None:
        self.fake = fake
        self.session = requests.Session()
        self.timeout = timeout
        tok = fake.token if token is None else token
        if tok:
            self.session.headers["x-api-token"] = tok

    def close(self) -> None:
        self.session.close()

    def get(self, path: str, **params: Any) -> requests.Response:
        """GET `path` ("/api/v2/deals", "/v1/leads"); None-valued params are dropped."""
        clean = {k: v for k, v in params.items() if v is not None}
        return self.session.get(self.fake.url(path), params=clean, timeout=self.timeout)

    def json(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.get(path, **params)
        assert r.status_code == 200, (r.status_code, r.text[:500])
        return r.json()

    def v2_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every page body of a cursor-paginated list (v2, or v1 with next_cursor), from the
        first page or from `cursor=`."""
        pages = []
        cursor = params.pop("cursor", None)
        while True:
            body = self.json(path, **params, cursor=cursor)
            pages.append(body)
            cursor = body["additional_data"]["next_cursor"]
            if not cursor:
                return pages
            assert len(pages) < 100_000, "pagination does not end"

    def v2_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return [item for page in self.v2_pages(path, **params) for item in page["data"]]

    def v1_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every page body of an offset-paginated v1 list (follows next_start, else start+limit)."""
        pages = []
        start = params.pop("start", 0)
        while True:
            body = self.json(path, **params, start=start)
            pages.append(body)
            pagination = body["additional_data"]["pagination"]
            if not pagination["more_items_in_collection"]:
                return pages
            start = pagination.get("next_start", start + len(body["data"] or []))
            assert len(pages) < 100_000, "pagination does not end"

    def v1_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return [item for page in self.v1_pages(path, **params) for item in page["data"] or []]
