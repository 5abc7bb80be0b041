"""Reading one stream (endpoint) of an entity page by page, with its cursor state.

Three modes (see `entities.Mode`):

* UPDATED_SINCE asks for `updated_since` = the highest `update_time` loaded so far (inclusive) and
  pages in `update_time` order, so a record updated while we page moves behind the cursor and is
  read again, never skipped. Rows sitting exactly on the boundary timestamp that were already
  loaded unchanged are recognised by a content hash and not loaded twice. With v1 offset
  pagination a moved or deleted row shifts the offsets, so pages overlap by a few rows, and a
  pass disturbed by more concurrent updates than that does not advance the cursor.
* NEWEST_FIRST (lists without `updated_since`) sorts newest first and stops at the first page
  reaching back past the cursor.
* FULL re-reads everything and emits only rows whose content changed; the ids it saw let the
  runner flag rows that vanished.

Each reader keeps its stream's state (cursor, resume point, full-read hashes) through
`sync_state.StreamState`, committed with the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .context import RunContext
from .convert import TIMESTAMP, iso_datetime
from .entities import Entity, Mode, Pagination, Stream
from .http import (
    CursorPaginator,
    EntityUnavailable,
    OffsetPaginator,
    Page,
    Paginator,
    RequestFailed,
    SinglePage,
)
from .http.client import PageItems, RowItems
from .sync_state import Cursor, ResumePoint, StreamState, rfc3339

GROUP_ROWS = 5_000  # columnar pages converted together (arrow's cost per call is per group)
OFFSET_OVERLAP = 10  # rows re-read at each v1 page boundary
IDS_PER_REQUEST = 100  # the most records a v2 list returns for its `ids` parameter

PageBuilder = Callable[[list[dict[str, Any]]], pa.Table]


class ColumnarPath(Protocol):
    """The columnar fast path of an entity (see `columnar`): decode in the fetching thread,
    build the page table from the decoded columns (None: take the exact path)."""

    def decode(self, content: bytes) -> dict[str, Any] | None: ...

    def build(self, items: PageItems, constants: Mapping[str, Any]) -> pa.Table | None: ...


def row_hash(row: Mapping[str, Any]) -> str:
    """A short, stable digest of a record's content."""
    return hashlib.blake2b(
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()


def table_row_hashes(table: pa.Table, indices: list[int]) -> list[str]:
    """Digests of some rows of a page table (nulls left out, so columns that other rows of
    the page brought along do not change them): equal content, equal digest, whichever path
    (columnar or exact) built the table."""
    rows = table.take(indices).to_pylist()
    return [row_hash({k: v for k, v in row.items() if v is not None}) for row in rows]


def grouped_pages(pages: Iterator[Page], chunk_pages: int | None) -> Iterator[tuple[Page, int]]:
    """(page, how many pages it stands for): consecutive pages whose items can be joined
    come as one page of about `GROUP_ROWS` rows, positioned where the last of them ends.

    A group never crosses a chunk boundary, a page that cannot be joined comes at once, and
    when the list fails midway the pages read before the failure are handed out first.
    """
    group: list[Page] = []
    taken = 0
    rows = 0  # in the group

    def flush() -> Iterator[tuple[Page, int]]:
        nonlocal rows
        rows = 0
        parts = [page.items for page in group]
        joined = type(parts[0]).joined(parts) if len(parts) > 1 else None
        if joined is None:
            yield from ((page, 1) for page in group)
        else:
            yield replace(group[-1], items=joined), len(group)
        group.clear()

    try:
        for page in pages:
            taken += 1
            items = page.items.resolve()
            if not items.joinable:  # the exact path's rows: nothing to join
                yield from flush()
                yield replace(page, items=items), 1
                continue
            group.append(replace(page, items=items))
            rows += len(items)
            if rows >= GROUP_ROWS or page.is_last or (chunk_pages and taken % chunk_pages == 0):
                yield from flush()
    except Exception:
        yield from flush()
        raise
    yield from flush()


def make_paginator(entity: Entity, limit: int, position: Any = None, overlap: int = 0) -> Paginator:
    if entity.pagination is Pagination.CURSOR:
        return CursorPaginator(limit=limit, cursor=position)
    if entity.pagination is Pagination.OFFSET:
        return OffsetPaginator(limit=limit, start=int(position or 0), overlap=overlap)
    return SinglePage()


def _to_datetime(value: str | None) -> datetime | None:
    return iso_datetime(value) if value else None


@dataclass
class _Pass:
    """One UPDATED_SINCE pass: the `updated_since` it asks for and, with v1 offset pagination,
    what it needs to notice rows moving behind its offsets."""

    since: str | None
    offset: bool
    started: datetime | None = None  # the server's time at the first page
    moved: int = 0  # rows updated after the pass began
    previous_ids: set[str] = field(default_factory=set)  # the previous page's, for the overlap

    def new_rows(self, page: Page, rows: list[dict[str, Any]], pk: str) -> list[dict[str, Any]]:
        """The page's rows less those the previous page overlapped with."""
        self.started = self.started or page.server_time
        fresh = [r for r in rows if str(r.get(pk)) not in self.previous_ids]
        self.previous_ids = {str(r.get(pk)) for r in rows}
        return fresh


class StreamReader:
    """Reads one stream of one entity into page tables, keeping its state current."""

    def __init__(
        self,
        ctx: RunContext,
        entity: Entity,
        stream: Stream,
        state: StreamState,
        build: PageBuilder,
        chunk_pages: int | None = None,
        columnar: ColumnarPath | None = None,
    ) -> None:
        self.ctx = ctx
        self.entity = entity
        self.stream = stream
        self.state = state
        self.build = build
        self.chunk_pages = chunk_pages
        self.columnar = columnar
        self.seen_ids: set[Any] = set()
        self.complete = False  # every page was read (needed before trusting seen_ids)
        self.full_read = False  # the pass started from the very beginning (no since, no resume)
        self.more = False
        self.pages = 0  # pages read from the API by `read` (however they were grouped)

    @property
    def label(self) -> str:
        return self.entity.name if self.stream.key == self.entity.name else self.stream.key

    def _pages(
        self,
        params: dict[str, Any],
        position: Any,
        overlap: int = 0,
        path: str | None = None,
        columnar: bool = False,
        limit: int | None = None,
    ) -> Iterator[Page]:
        client = self.ctx.client
        limit = limit or min(client.settings.page_limit, self.stream.page_limit or 500)
        return client.iter_pages(
            self.entity.api,
            path or self.stream.path,
            params,
            make_paginator(self.entity, limit, position, overlap),
            cost=self.stream.token_cost,
            label=self.label,
            data_key=self.stream.data_key,
            decode=self.columnar.decode if columnar and self.columnar is not None else None,
        )

    def _table(self, items: PageItems) -> pa.Table | None:
        """The page's table: columnar when the fast path takes the page, else exact."""
        items = items.resolve()
        if not len(items):
            return None
        if self.columnar is not None:
            table = self.columnar.build(items, dict(self.stream.set_columns))
            if table is not None:
                return table
        return self.build(items.rows())

    def read(self) -> Iterator[pa.Table]:
        if self.stream.mode is Mode.UPDATED_SINCE:
            yield from self._read_incremental()
        elif self.stream.mode is Mode.NEWEST_FIRST:
            yield from self._read_newest_first()
        else:
            yield from self._read_full()

    # -- UPDATED_SINCE -----------------------------------------------------------------------
    def _read_incremental(self) -> Iterator[pa.Table]:
        state = self.state
        cursor = state.cursor()
        cursor.since = cursor.since or _to_datetime(self.ctx.options.start_date)
        resume = state.resume
        params = dict(self.stream.params)
        position = None
        pass_since = rfc3339(cursor.since) if cursor.since else None
        if resume:
            pass_since, position = resume.updated_since, resume.position
        if pass_since:
            params["updated_since"] = pass_since
        self.full_read = pass_since is None and position is None
        this_pass = _Pass(pass_since, offset=self.entity.pagination is Pagination.OFFSET)
        try:
            finished = yield from self._read_pass(params, position, cursor, this_pass)
        except RequestFailed as exc:
            if resume and exc.status == 400:
                # the saved cursor is no longer accepted: restart from the committed timestamp
                state.clear_resume()
                yield from self._read_incremental()
                return
            raise
        if finished and this_pass.moved > OFFSET_OVERLAP and pass_since is not None:
            # more rows moved behind the offsets than the overlap covers: some may have been
            # skipped, so the next run reads this whole window again (everything read is kept)
            state.rewind(pass_since)

    def _read_pass(
        self, params: dict[str, Any], position: Any, cursor: Cursor, this_pass: _Pass
    ) -> Generator[pa.Table, None, bool]:
        """The pages of one pass, the state saved after each; False when it stopped at the
        chunk boundary (the resume point says where it goes on)."""
        offset = this_pass.offset
        pages_iter = self._pages(
            params, position, OFFSET_OVERLAP if offset else 0, columnar=not offset
        )
        grouped = (
            ((page, 1) for page in pages_iter)
            if offset
            else grouped_pages(pages_iter, self.chunk_pages)
        )
        pages = 0  # in this pass, for the chunk boundary
        for page, count in grouped:
            table = self._incremental_table(page, cursor, this_pass)
            self.state.save_cursor(cursor)
            if page.is_last:
                self.state.clear_resume()
            else:
                self.state.save_resume(ResumePoint(page.next_position, this_pass.since))
            pages += count
            self.pages += count
            if table is not None and table.num_rows:
                yield table
            if page.is_last:
                self.complete = True
            elif self.chunk_pages and pages >= self.chunk_pages:
                self.more = True
                return False
        return True

    def _incremental_table(self, page: Page, cursor: Cursor, this_pass: _Pass) -> pa.Table | None:
        """The page's table less the boundary rows loaded already; the cursor advanced."""
        items = page.items
        if this_pass.offset:
            items = RowItems(this_pass.new_rows(page, page.rows, self.entity.id_column))
        table = self._table(items)
        if table is None:
            return None
        if cursor.since is not None and cursor.boundary:
            table = self._drop_known_boundary_rows(table, cursor.since, cursor.boundary)
        if table.num_rows:
            cursor.since, cursor.boundary = self._advance(table, cursor.since, cursor.boundary)
            if this_pass.offset and this_pass.started is not None:
                this_pass.moved += self._count_since(table, this_pass.started)
        return table

    def _count_since(self, table: pa.Table, moment: datetime) -> int:
        column = table[self.entity.cursor_field]
        return int(pc.sum(pc.greater_equal(column, pa.scalar(moment, TIMESTAMP))).as_py() or 0)

    def _drop_known_boundary_rows(
        self, table: pa.Table, since: datetime, boundary: dict[str, str]
    ) -> pa.Table:
        on_boundary = pc.equal(table[self.entity.cursor_field], pa.scalar(since, TIMESTAMP))
        indices = pc.indices_nonzero(pc.fill_null(on_boundary, False)).to_pylist()
        if not indices:
            return table
        ids = table[self.entity.id_column].take(indices).to_pylist()
        hashes = table_row_hashes(table, indices)
        drop = {
            i
            for i, key, digest in zip(indices, ids, hashes, strict=True)
            if boundary.get(str(key)) == digest
        }
        if not drop:
            return table
        return table.filter(pa.array([i not in drop for i in range(table.num_rows)]))

    def _advance(
        self, table: pa.Table, since: datetime | None, boundary: dict[str, str]
    ) -> tuple[datetime | None, dict[str, str]]:
        column = table[self.entity.cursor_field]
        page_max = pc.max(column).as_py()
        if page_max is None:
            return since, boundary
        if since is None or page_max > since:
            since, boundary = page_max, {}
        if page_max == since:
            at_max = pc.equal(column, pa.scalar(since, TIMESTAMP))
            indices = pc.indices_nonzero(pc.fill_null(at_max, False)).to_pylist()
            ids = table[self.entity.id_column].take(indices).to_pylist()
            boundary.update(zip(map(str, ids), table_row_hashes(table, indices), strict=True))
        return since, boundary

    # -- NEWEST_FIRST --------------------------------------------------------------------------
    def _read_newest_first(self) -> Iterator[pa.Table]:
        """Newest first until a page reaches back past the cursor (no updated_since exists)."""
        known = self.state.cursor()
        since, boundary = known.since, known.boundary
        self.full_read = since is None
        newest, new_boundary = since, dict(boundary)
        previous_ids: set[str] = set()
        pk = self.entity.id_column
        for page in self._pages(dict(self.stream.params), None, OFFSET_OVERLAP):
            self.pages += 1
            rows = [r for r in page.rows if str(r.get(pk)) not in previous_ids]
            previous_ids = {str(r.get(pk)) for r in page.rows}
            if not rows:
                self.complete = page.is_last
                if page.is_last:
                    break
                continue
            table = self.build(rows)
            reached_back = False
            if since is not None:
                older = pc.fill_null(
                    pc.less(table[self.entity.cursor_field], pa.scalar(since, TIMESTAMP)), False
                )
                reached_back = bool(pc.any(older).as_py())
                keep = pc.invert(older)
                table = table.filter(keep)
                if boundary and table.num_rows:
                    table = self._drop_known_boundary_rows(table, since, boundary)
            if table.num_rows:
                newest, new_boundary = self._advance(table, newest, new_boundary)
                yield table
            if reached_back or page.is_last:
                self.complete = True
                break
        self.state.save_cursor(Cursor(newest, new_boundary))

    # -- by id (event batches) -------------------------------------------------------------
    def read_ids(self, ids: list[Any]) -> Iterator[pa.Table]:
        """The current rows of these ids, through the list's `ids` parameter (up to 100 per
        request: one page each). The stream's state is not touched; `seen_ids` collects the
        ids the list returned (a record it does not return is deleted or not visible)."""
        for start in range(0, len(ids), IDS_PER_REQUEST):
            batch = ids[start : start + IDS_PER_REQUEST]
            params = {**self.stream.params, "ids": ",".join(str(i) for i in batch)}
            for page in self._pages(params, None, columnar=True, limit=IDS_PER_REQUEST):
                self.pages += 1
                table = self._table(page.items)
                if table is not None:
                    self.seen_ids.update(table[self.entity.id_column].to_pylist())
                    yield table

    def read_each(self, ids: list[Any]) -> Iterator[pa.Table]:
        """The current rows of these ids, one request each on the stream's detail endpoint
        (v1: 2 tokens a record). A record the API no longer has (404) or no longer holds as
        active (a deleted note) is left out of the rows and of `seen_ids`."""
        assert self.stream.detail_path is not None
        rows = []
        for record_id in ids:
            try:
                body, _ = self.ctx.client.get_json(
                    self.entity.api,
                    self.stream.detail_path.format(id=record_id),
                    cost=self.stream.detail_cost,
                    label=self.label,
                )
            except EntityUnavailable as exc:
                if exc.status == 404:
                    continue
                raise
            self.pages += 1
            row = body.get("data")
            if isinstance(row, dict) and row.get("active_flag") is not False:
                rows.append(row)
                self.seen_ids.add(row.get(self.entity.id_column))
        if rows:
            yield self.build(rows)

    # -- id listing (reconcile) ----------------------------------------------------------------
    def list_ids(self) -> set[Any]:
        """Every id the stream's endpoint lists right now (all pages, rows not built)."""
        params = dict(self.stream.listing_params or self.stream.params)
        params.pop("updated_since", None)
        pk = self.entity.id_column
        ids: set[Any] = set()
        for page in self._pages(params, None, OFFSET_OVERLAP):
            ids.update(row.get(pk) for row in page.rows)
        return ids

    # -- FULL ----------------------------------------------------------------------------------
    def _read_full(self) -> Iterator[pa.Table]:
        previous = self.state.hashes
        current: dict[str, str] = {}
        pk = self.entity.id_column
        for page in self._pages(dict(self.stream.params), None, OFFSET_OVERLAP):
            self.pages += 1
            changed = []
            for row in page.rows:
                key = str(row.get(pk))
                if key in current:
                    continue  # an overlapping row re-read at a page boundary
                digest = row_hash(row)
                current[key] = digest
                self.seen_ids.add(row.get(pk))
                if previous.get(key) != digest:
                    changed.append(row)
            if changed:
                yield self.build(changed)
        self.complete = True
        self.state.save_hashes(current)

    # -- PER_PARENT ----------------------------------------------------------------------------
    def read_children(self, parent_ids: list[Any]) -> Iterator[list[dict[str, Any]]]:
        """The raw rows belonging to these parent records (one list per batch or record; the
        HTTP client keeps several of them in flight)."""
        entity = self.entity
        client = self.ctx.client
        limit = min(client.settings.page_limit, self.stream.page_limit or 500)
        options: dict[str, Any] = {
            "paginator": lambda: make_paginator(entity, limit),
            "cost": self.stream.token_cost,
            "label": self.label,
            "data_key": self.stream.data_key,
        }
        if entity.ids_param:
            batches = [
                parent_ids[start : start + entity.parent_batch]
                for start in range(0, len(parent_ids), entity.parent_batch)
            ]
            lists = [
                (self.stream.path, {**self.stream.params, entity.ids_param: ",".join(map(str, b))})
                for b in batches
            ]
            for pages in client.iter_lists(entity.api, lists, **options):
                self.pages += len(pages)
                yield [item for page in pages for item in page.rows]
            return
        parent_key = entity.parent_key or "parent_id"
        lists = [(self.stream.path.format(id=p), dict(self.stream.params)) for p in parent_ids]
        for parent_id, pages in zip(
            parent_ids, client.iter_lists(entity.api, lists, **options), strict=True
        ):
            self.pages += len(pages)
            rows = [{**item, parent_key: parent_id} for page in pages for item in page.rows]
            if entity.synthetic_key:
                for row in rows:
                    row[entity.synthetic_key] = row_hash(row)
            yield rows
