"""Record storage of the fake: rows with cached JSON bytes and cached sorted indexes.

A `Row` keeps the record (internal shape) and its served JSON bytes, rendered once and
re-rendered only after the row or its table's field definitions change. A `Table` keeps, per
sort key, one sorted index `[(sort value, seq)]` per partition ("live", "archived"), rebuilt
lazily when the table's version counter moved. Pages are cut from an index by bisection
(keyset pagination) and built by joining cached bytes.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import jsonio

Partition = str | None  # "live", "archived", or None (never listed, e.g. a deleted person)


class Row:
    __slots__ = (
        "archived",
        "at",
        "blob",
        "blob_ver",
        "data",
        "deleted",
        "id",
        "seq",
        "status",
        "ut",
    )

    def __init__(
        self,
        id: Any,
        seq: int,
        data: dict[str, Any],
        at: int,
        ut: int,
        status: str | None = None,
        archived: bool = False,
        deleted: bool = False,
    ) -> None:
        self.id = id
        self.seq = seq
        self.data: dict[str, Any] | None = data
        self.at = at  # add_time, epoch ms
        self.ut = ut  # update_time, epoch ms
        self.status = status
        self.archived = archived
        self.deleted = deleted
        self.blob: bytes | None = None
        self.blob_ver = -1


class Table:
    """All rows of one entity (deleted ones included) and their indexes."""

    def __init__(
        self,
        name: str,
        *,
        render: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        partition: Callable[[Row], Partition],
        sort_values: dict[str, Callable[[Row, dict[str, Any] | None], Any]],
        compactable: bool = True,
    ) -> None:
        self.name = name
        self.rows: dict[Any, Row] = {}
        self.by_seq: list[Row] = []
        self.render = render  # internal dict → served dict (None: identical)
        self.partition = partition
        self.sort_values = sort_values
        self.compactable = compactable
        self.compact = False  # drop dicts once rendered (big tables); they decode from bytes
        self.version = 0  # bumps when a row changes (indexes are stale)
        self.render_ver = 0  # bumps when field definitions change (every blob is stale)
        self.lock = threading.RLock()
        self._indexes: dict[str, tuple[int, dict[Partition, tuple[list[Any], list[Row]]]]] = {}

    # -- rows --

    def insert(self, row: Row) -> Row:
        self.rows[row.id] = row
        self.by_seq.append(row)
        self._changed(row, None)  # None: a new row
        return row

    def data(self, row: Row) -> dict[str, Any]:
        """The row's internal record (do not mutate; use `replace`)."""
        if row.data is not None:
            return row.data
        assert row.blob is not None
        return jsonio.loads(row.blob)  # compact tables: the served v2 shape is the internal one

    def blob(self, row: Row) -> bytes:
        if row.blob is None or row.blob_ver != self.render_ver:
            data = self.data(row)
            served = self.render(data) if self.render else data
            # orjson's bytes keep its whole (32 KiB) output buffer: store an exact-size copy
            row.blob = bytes(memoryview(jsonio.dumps(served)))
            row.blob_ver = self.render_ver
            if self.compact and self.compactable:
                row.data = None
        return row.blob

    def served(self, row: Row) -> dict[str, Any]:
        return jsonio.loads(self.blob(row))

    def snapshot(self, row: Row) -> dict[str, tuple[Partition, tuple[Any, int] | None]]:
        """Where a row sits in each up-to-date index; take it before changing the row."""
        out: dict[str, tuple[Partition, tuple[Any, int] | None]] = {}
        for sort_by, (ver, _parts) in self._indexes.items():
            if ver == self.version:
                p = self.partition(row)
                out[sort_by] = (p, self._key(sort_by, row) if p is not None else None)
        return out

    def replace(
        self,
        row: Row,
        data: dict[str, Any],
        before: dict[str, tuple[Partition, tuple[Any, int] | None]],
    ) -> None:
        """Give a row a new internal record; `before` is `snapshot(row)` taken before any of
        the row's attributes changed (the indexes are then patched, not rebuilt)."""
        row.data = data
        row.blob = None
        self._changed(row, before)

    def _key(self, sort_by: str, row: Row) -> tuple[Any, int]:
        fn = self.sort_values[sort_by]
        needs_data = sort_by not in ("id", "update_time", "add_time", "seq")
        return fn(row, self.data(row) if needs_data else None), row.seq

    def _changed(
        self, row: Row, before: dict[str, tuple[Partition, tuple[Any, int] | None]] | None
    ) -> None:
        old = self.version
        self.version += 1
        for sort_by, (ver, parts) in list(self._indexes.items()):
            if ver != old or (before is not None and sort_by not in before):
                del self._indexes[sort_by]  # rebuilt on the next read
                continue
            if before is not None:
                old_part, old_key = before[sort_by]
                if old_part is not None and old_key is not None:
                    keys, rows = parts[old_part]
                    i = bisect_left(keys, old_key)
                    if i >= len(rows) or rows[i] is not row:
                        del self._indexes[sort_by]
                        continue
                    del keys[i]
                    del rows[i]
            new_part = self.partition(row)
            if new_part is not None:
                key = self._key(sort_by, row)
                keys, rows = parts.setdefault(new_part, ([], []))
                i = bisect_left(keys, key)
                keys.insert(i, key)
                rows.insert(i, row)
            self._indexes[sort_by] = (self.version, parts)

    def fields_changed(self) -> None:
        self.render_ver += 1

    # -- indexes --

    def index(self, sort_by: str, partition: Partition) -> tuple[list[Any], list[Row]]:
        cached = self._indexes.get(sort_by)
        if cached is None or cached[0] != self.version:
            cached = (self.version, self._build(sort_by))
            self._indexes[sort_by] = cached
        return cached[1].get(partition, ([], []))

    def _build(self, sort_by: str) -> dict[Partition, tuple[list[Any], list[Row]]]:
        fn = self.sort_values[sort_by]
        groups: dict[Partition, list[tuple[Any, int, Row]]] = {}
        part = self.partition
        needs_data = sort_by not in ("id", "update_time", "add_time", "seq")
        for row in self.by_seq:
            p = part(row)
            if p is None:
                continue
            value = fn(row, self.data(row) if needs_data else None)
            groups.setdefault(p, []).append((value, row.seq, row))
        out: dict[Partition, tuple[list[Any], list[Row]]] = {}
        for p, items in groups.items():
            if sort_by not in ("id", "seq"):  # by_seq is already in seq (= id) order
                items.sort(key=lambda t: (t[0], t[1]))
            out[p] = ([(v, s) for v, s, _ in items], [r for _, _, r in items])
        return out

    def page(
        self,
        *,
        sort_by: str,
        descending: bool,
        partition: Partition,
        start_key: tuple[Any, int] | None,
        limit: int,
        since: int | None = None,
        until: int | None = None,
        pred: Callable[[Row], bool] | None = None,
    ) -> tuple[list[Row], Row | None, tuple[Any, int] | None]:
        """Rows from `start_key` (inclusive) in sort order, at most `limit`, plus the next row
        (the first of the following page) and its key."""
        keys, rows = self.index(sort_by, partition)
        window = _Window(since, until, sort_by == "update_time", pred)
        want = limit + 1
        if descending:
            out, last = _scan_down(keys, rows, start_key, want, window)
        else:
            out, last = _scan_up(keys, rows, start_key, want, window)
        if len(out) == want:
            return out[:limit], out[limit], keys[last]
        return out, None, None

    def listing(
        self,
        *,
        sort_by: str,
        descending: bool,
        partition: Partition,
        since: int | None = None,
        pred: Callable[[Row], bool] | None = None,
    ) -> list[Row]:
        """Every listed row of a partition in order (v1 offset pagination slices this)."""
        _keys, rows = self.index(sort_by, partition)
        seq: Iterable[Row] = reversed(rows) if descending else rows
        return [r for r in seq if (since is None or r.ut >= since) and (pred is None or pred(r))]

    def join(self, rows: Iterable[Row]) -> bytes:
        return b",".join([self.blob(r) for r in rows])


@dataclass(frozen=True)
class _Window:
    """Which rows a page scan takes: update times in [since, until), and `pred`."""

    since: int | None
    until: int | None
    by_time: bool  # the index is in update-time order: a scan may stop at the window's edge
    pred: Callable[[Row], bool] | None

    def takes(self, row: Row) -> bool:
        if self.since is not None and row.ut < self.since:
            return False
        if self.until is not None and row.ut >= self.until:
            return False
        return self.pred is None or self.pred(row)


def _scan_up(
    keys: list[Any], rows: list[Row], start_key: tuple[Any, int] | None, want: int, w: _Window
) -> tuple[list[Row], int]:
    """Up to `want` rows from `start_key` (inclusive) upwards, and the index of the last."""
    i = bisect_left(keys, start_key) if start_key is not None else 0
    if w.by_time and w.since is not None:
        i = max(i, bisect_left(keys, (w.since,)))
    out: list[Row] = []
    while i < len(rows) and len(out) < want:
        row = rows[i]
        i += 1
        if w.by_time and w.until is not None and row.ut >= w.until:
            break  # the rest is later still
        if w.takes(row):
            out.append(row)
    return out, i - 1


def _scan_down(
    keys: list[Any], rows: list[Row], start_key: tuple[Any, int] | None, want: int, w: _Window
) -> tuple[list[Row], int]:
    """Up to `want` rows from `start_key` (inclusive) downwards, and the index of the last."""
    i = bisect_right(keys, start_key) - 1 if start_key is not None else len(rows) - 1
    if w.by_time and w.until is not None:
        i = min(i, bisect_left(keys, (w.until,)) - 1)
    out: list[Row] = []
    while i >= 0 and len(out) < want:
        row = rows[i]
        i -= 1
        if w.by_time and w.since is not None and row.ut < w.since:
            break  # the rest is earlier still
        if w.takes(row):
            out.append(row)
    return out, i + 1


def time_sort(attr: str) -> Callable[[Row, Any], Any]:
    if attr == "update_time":
        return lambda r, _d: r.ut
    return lambda r, _d: r.at


def data_sort(key: str, default: Any) -> Callable[[Row, dict[str, Any] | None], Any]:
    def fn(_r: Row, d: dict[str, Any] | None) -> Any:
        v = d.get(key) if d is not None else None
        return default if v is None else v

    return fn


def seq_sort(r: Row, _d: Any) -> int:
    return r.seq
