"""Reading one stream (endpoint) of an entity page by page, with its cursor state.

Incremental streams ask for `updated_since` = the highest `update_time` loaded so far (inclusive)
and page in `update_time` order, so a record updated while we page moves behind the cursor and
is read again, never skipped. Rows sitting exactly on the boundary timestamp that were already
loaded unchanged are recognised by a content hash and not loaded twice.

Full-refresh streams re-read everything and emit only rows whose content changed; the ids they
saw let the runner flag rows that vanished.

State per stream (a plain dict inside dlt resource state, committed with the data):
    since     ISO timestamp, the highest update_time seen
    boundary  {id: hash} of rows whose update_time == since
    resume    {"cursor"|"start": ..., "updated_since": ...} when a chunk stopped mid-list
    hashes    {id: hash} (full-refresh streams only)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .context import RunContext
from .entities import Entity, Pagination, Stream
from .http import CursorPaginator, OffsetPaginator, Page, Paginator, RequestFailed, SinglePage
from .pages import TIMESTAMP

BOUNDARY_LIMIT = 20_000  # beyond this many rows on one timestamp, re-load instead of remembering

PageBuilder = Callable[[list[dict[str, Any]]], pa.Table]


def row_hash(row: Mapping[str, Any]) -> str:
    """A short, stable digest of a record's content."""
    return hashlib.blake2b(
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()


def make_paginator(entity: Entity, limit: int, position: Any = None, overlap: int = 0) -> Paginator:
    if entity.pagination is Pagination.CURSOR:
        return CursorPaginator(limit=limit, cursor=position)
    if entity.pagination is Pagination.OFFSET:
        return OffsetPaginator(limit=limit, start=int(position or 0), overlap=overlap)
    return SinglePage()


def _to_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class StreamReader:
    """Reads one stream of one entity into page tables, keeping its state dict current."""

    def __init__(
        self,
        ctx: RunContext,
        entity: Entity,
        stream: Stream,
        state: dict[str, Any],
        build: PageBuilder,
        chunk_pages: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.entity = entity
        self.stream = stream
        self.state = state
        self.build = build
        self.chunk_pages = chunk_pages
        self.seen_ids: set[Any] = set()
        self.complete = False  # every page was read (needed before trusting seen_ids)
        self.full_read = False  # the pass started from the very beginning (no since, no resume)
        self.more = False

    def _pages(self, params: dict[str, Any], position: Any) -> Iterator[Page]:
        client = self.ctx.client
        paginator = make_paginator(self.entity, client.settings.page_limit, position)
        return client.iter_pages(
            self.entity.api,
            self.stream.path,
            params,
            paginator,
            cost=self.stream.token_cost,
            label=self.entity.name if self.stream.key == self.entity.name else self.stream.key,
        )

    def read(self) -> Iterator[pa.Table]:
        if self.stream.incremental:
            yield from self._read_incremental()
        else:
            yield from self._read_full()

    # -- incremental -------------------------------------------------------------------------
    def _read_incremental(self) -> Iterator[pa.Table]:
        state = self.state
        cursor_field = self.entity.cursor_field
        since = _to_datetime(state.get("since")) or _to_datetime(self.ctx.options.start_date)
        boundary: dict[str, str] = dict(state.get("boundary") or {})
        resume = state.get("resume")
        params = dict(self.stream.params)
        position = None
        pass_since = _rfc3339(since) if since else None
        if resume:
            pass_since = resume.get("updated_since")
            position = resume.get("position")
        if pass_since:
            params["updated_since"] = pass_since
        self.full_read = pass_since is None and position is None

        pages = 0
        try:
            iterator = self._pages(params, position)
            for page in iterator:
                rows = page.items
                table = self.build(rows) if rows else None
                if table is not None and since is not None and boundary:
                    table, rows = self._drop_known_boundary_rows(table, rows, since, boundary)
                if table is not None and table.num_rows:
                    since, boundary = self._advance(table, rows, since, boundary, cursor_field)
                if since is not None:
                    state["since"] = _rfc3339(since)
                    state["boundary"] = boundary if len(boundary) <= BOUNDARY_LIMIT else {}
                if page.is_last:
                    state.pop("resume", None)
                else:
                    state["resume"] = {"position": page.next_position, "updated_since": pass_since}
                pages += 1
                if table is not None and table.num_rows:
                    yield table
                if page.is_last:
                    self.complete = True
                elif self.chunk_pages and pages >= self.chunk_pages:
                    self.more = True
                    return
        except RequestFailed as exc:
            if resume and exc.status == 400:
                # the saved cursor is no longer accepted: restart from the committed timestamp
                state.pop("resume", None)
                yield from self._read_incremental()
                return
            raise

    def _drop_known_boundary_rows(
        self,
        table: pa.Table,
        rows: list[dict[str, Any]],
        since: datetime,
        boundary: dict[str, str],
    ) -> tuple[pa.Table, list[dict[str, Any]]]:
        on_boundary = pc.equal(table[self.entity.cursor_field], pa.scalar(since, TIMESTAMP))
        indices = pc.indices_nonzero(pc.fill_null(on_boundary, False)).to_pylist()
        if not indices:
            return table, rows
        pk = self.entity.primary_key
        drop = {i for i in indices if boundary.get(str(rows[i].get(pk))) == row_hash(rows[i])}
        if not drop:
            return table, rows
        keep = [i not in drop for i in range(len(rows))]
        return table.filter(pa.array(keep)), [r for i, r in enumerate(rows) if i not in drop]

    def _advance(
        self,
        table: pa.Table,
        rows: list[dict[str, Any]],
        since: datetime | None,
        boundary: dict[str, str],
        cursor_field: str,
    ) -> tuple[datetime | None, dict[str, str]]:
        column = table[cursor_field]
        page_max = pc.max(column).as_py()
        if page_max is None:
            return since, boundary
        if since is None or page_max > since:
            since, boundary = page_max, {}
        if page_max == since:
            at_max = pc.equal(column, pa.scalar(since, TIMESTAMP))
            pk = self.entity.primary_key
            for i in pc.indices_nonzero(pc.fill_null(at_max, False)).to_pylist():
                boundary[str(rows[i].get(pk))] = row_hash(rows[i])
        return since, boundary

    # -- id listing (reconcile) ----------------------------------------------------------------
    def list_ids(self) -> set[Any]:
        """Every id the stream's endpoint lists right now (all pages, rows not built)."""
        params = dict(self.stream.listing_params or self.stream.params)
        params.pop("updated_since", None)
        pk = self.entity.primary_key
        ids: set[Any] = set()
        for page in self._pages(params, None):
            ids.update(row.get(pk) for row in page.items)
        return ids

    # -- full refresh --------------------------------------------------------------------------
    def _read_full(self) -> Iterator[pa.Table]:
        previous: dict[str, str] = self.state.get("hashes") or {}
        current: dict[str, str] = {}
        pk = self.entity.primary_key
        for page in self._pages(dict(self.stream.params), None):
            changed = []
            for row in page.items:
                key = str(row.get(pk))
                digest = row_hash(row)
                current[key] = digest
                self.seen_ids.add(row.get(pk))
                if previous.get(key) != digest:
                    changed.append(row)
            if changed:
                yield self.build(changed)
        self.complete = True
        self.state["hashes"] = current
