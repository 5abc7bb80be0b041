"""Pipedrive's two pagination styles. A paginator only reads envelopes; it never does I/O."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, Protocol


class Paginator(Protocol):
    def first_params(self) -> dict[str, Any]: ...

    def next_params(self, body: dict[str, Any], items: Sized) -> dict[str, Any] | None:
        """Parameters for the following page, or None after the last page."""
        ...

    @property
    def position(self) -> Any:
        """Where the next page starts (a cursor or an offset), for resuming later."""
        ...


class CursorPaginator:
    """API v2: `limit` + opaque `cursor`; `additional_data.next_cursor` is null on the last page."""

    def __init__(self, limit: int = 500, cursor: str | None = None) -> None:
        self.limit = limit
        self._cursor = cursor

    @property
    def position(self) -> str | None:
        return self._cursor

    def first_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": self.limit}
        if self._cursor:
            params["cursor"] = self._cursor
        return params

    def next_params(self, body: dict[str, Any], items: Sized) -> dict[str, Any] | None:
        extra = body.get("additional_data") or {}
        cursor = extra.get("next_cursor") if isinstance(extra, dict) else None
        self._cursor = cursor or None
        if not cursor:
            return None
        return {"limit": self.limit, "cursor": cursor}


class OffsetPaginator:
    """API v1: `start`/`limit`; `additional_data.pagination` says whether more items exist.

    `overlap` re-reads that many rows of the previous page so that a few rows vanishing ahead
    of us (deleted or moved by a concurrent update) cannot make a row slip between two pages.
    """

    def __init__(self, limit: int = 500, start: int = 0, overlap: int = 0) -> None:
        self.limit = limit
        self._start = start
        self.overlap = overlap

    @property
    def position(self) -> int:
        return self._start

    def first_params(self) -> dict[str, Any]:
        return {"start": self._start, "limit": self.limit}

    def next_params(self, body: dict[str, Any], items: Sized) -> dict[str, Any] | None:
        extra = body.get("additional_data") or {}
        pagination = extra.get("pagination") if isinstance(extra, dict) else None
        if not isinstance(pagination, dict) or not pagination.get("more_items_in_collection"):
            return None
        next_start = pagination.get("next_start")
        if not isinstance(next_start, int):
            next_start = self._start + len(items)
        if next_start <= self._start:  # a server that does not advance would loop forever
            return None
        self._start = max(self._start + 1, next_start - self.overlap)
        return {"start": self._start, "limit": self.limit}


class SinglePage:
    """Endpoints that answer everything at once."""

    position = None

    def first_params(self) -> dict[str, Any]:
        return {}

    def next_params(self, body: dict[str, Any], items: Sized) -> dict[str, Any] | None:
        return None
