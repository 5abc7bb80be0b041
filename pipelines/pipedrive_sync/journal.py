"""The listener's journal: every acknowledged webhook event is on disk before its 2xx.

An append-only file of JSON lines: `{"seq": n, "at": t, "event": {...}}` per event, written
and fsync'd before the receiver answers (so `kill -9` after the answer loses nothing), and
`{"applied": n}` once the warehouse has committed a batch holding every event up to `n`.
Concurrent appends share their fsyncs (one fsync makes every line written before it durable),
and an event is handed to the applier only once durable, in `seq` order.

On open the file is replayed: events after the last `applied` mark are pending again, a torn
last line (a write that a kill interrupted: never acknowledged) is dropped, and the file is
rewritten with the pending events only. It is compacted the same way whenever everything is
applied and it has grown past `COMPACT_BYTES`. Retried deliveries repeat an event's `meta.id`:
an id seen recently is acknowledged without being written again.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sources.pipedrive.events import WebhookEvent

COMPACT_BYTES = 4 * 1024 * 1024
RECENT_IDS = 50_000  # event ids remembered to recognise retried deliveries


@dataclass(frozen=True)
class Entry:
    """One journaled event."""

    seq: int
    event: WebhookEvent
    received: float  # wall-clock seconds since the epoch

    def line(self) -> bytes:
        return orjson.dumps({"seq": self.seq, "at": self.received, "event": self.event.to_json()})


class Journal:
    """Durable, ordered hand-over of events from the receiver's threads to the applier."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Condition()
        self._sync_lock = threading.Lock()
        self._entries: list[Entry] = []  # written, not yet applied, in seq order
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._seq = 0
        self._durable = 0  # every entry up to this seq is on disk
        self._applied = 0
        self._size = 0
        self.replayed = 0  # pending events found on open
        self.dropped_lines = 0  # unreadable lines found on open (a torn last write)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._replay()
        self._fd = self._rewrite()

    # -- open ---------------------------------------------------------------------------------
    def _replay(self) -> None:
        entries: dict[int, Entry] = {}
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in raw.splitlines():
            record = _record(line)
            if record is None:
                self.dropped_lines += int(bool(line.strip()))
                continue
            if "applied" in record:
                self._applied = max(self._applied, int(record["applied"]))
            elif "seq" in record:
                entry = _entry(record)
                if entry is None:
                    self.dropped_lines += 1
                    continue
                entries[entry.seq] = entry
        self._seq = max([self._applied, *entries])
        self._entries = sorted(
            (e for e in entries.values() if e.seq > self._applied), key=lambda e: e.seq
        )
        self._durable = self._seq
        self.replayed = len(self._entries)
        for entry in self._entries:
            self._remember(entry.event.event_id)

    def _rewrite(self) -> int:
        """Write the pending entries to a new file and put it in place (atomically)."""
        fresh = self.path.with_name(self.path.name + ".new")
        content = b"".join(e.line() + b"\n" for e in self._entries)
        if self._applied:
            content = orjson.dumps({"applied": self._applied}) + b"\n" + content
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            os.write(fd, content)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(fresh, self.path)
        _sync_directory(self.path.parent)
        self._size = len(content)
        return fd

    # -- receiver side ------------------------------------------------------------------------
    def append(self, event: WebhookEvent) -> Entry | None:
        """Journal an event and return once it is on disk; None for a repeated delivery."""
        with self._lock:
            if event.event_id and event.event_id in self._recent:
                return None
            self._seq += 1
            entry = Entry(self._seq, event, time.time())
            line = entry.line() + b"\n"
            os.write(self._fd, line)
            self._size += len(line)
            self._entries.append(entry)
            self._remember(event.event_id)
        self._make_durable(entry.seq)
        return entry

    def _make_durable(self, seq: int) -> None:
        with self._sync_lock:
            if self._durable >= seq:
                return  # another append's fsync covered it
            with self._lock:
                upto, fd = self._seq, self._fd  # every line up to `upto` is written
            os.fsync(fd)
            with self._lock:
                self._durable = max(self._durable, upto)
                self._lock.notify_all()

    def _remember(self, event_id: str) -> None:
        if not event_id:
            return
        self._recent[event_id] = None
        self._recent.move_to_end(event_id)
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    # -- applier side -------------------------------------------------------------------------
    def pending(self, limit: int | None = None) -> list[Entry]:
        """Durable entries not applied yet, oldest first."""
        with self._lock:
            ready = [e for e in self._entries if e.seq <= self._durable]
        return ready[:limit] if limit else ready

    def wait(self, timeout: float) -> None:
        """Block until an entry becomes durable (or `timeout` passes)."""
        with self._lock:
            self._lock.wait(timeout)

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def mark_applied(self, upto: int) -> None:
        """Every entry up to `upto` is committed in the warehouse."""
        with self._lock:
            line = orjson.dumps({"applied": upto}) + b"\n"
            os.write(self._fd, line)
            self._size += len(line)
            self._applied = max(self._applied, upto)
            self._entries = [e for e in self._entries if e.seq > upto]
        self._make_durable_mark()
        if self._size > COMPACT_BYTES:
            self.compact()

    def _make_durable_mark(self) -> None:
        with self._sync_lock:
            with self._lock:
                fd = self._fd
            os.fsync(fd)

    def compact(self) -> None:
        """Rewrite the file with the entries not applied yet."""
        with self._sync_lock, self._lock:
            old = self._fd
            self._fd = self._rewrite()
            os.close(old)

    def close(self) -> None:
        with self._sync_lock, self._lock, suppress(OSError):
            os.close(self._fd)

    @property
    def size(self) -> int:
        return self._size


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    if "seq" in record and not isinstance(record.get("event"), dict):
        return None
    return record


def _entry(record: dict[str, Any]) -> Entry | None:
    try:
        return Entry(int(record["seq"]), WebhookEvent.from_json(record["event"]), record["at"])
    except (KeyError, TypeError, ValueError):
        return None


def _sync_directory(directory: Path) -> None:
    """Make a rename durable (the directory entry is data too)."""
    with _opened(directory) as fd:
        os.fsync(fd)


@contextmanager
def _opened(directory: Path) -> Iterator[int]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)
