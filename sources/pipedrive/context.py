"""Per-run shared state between the dlt source and whoever runs it (the CLI, a test, Airflow).

The source records what happened per entity here (rows, pages, skipped, stopped early); the
runner reads it to build the summary and pick the exit code. One `RunContext` per sync run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .entities import ENTITIES
from .http import PipedriveClient, StopRequested, TemporaryError
from .identity import DEFAULT_PIPELINE_NAME, Company, identity_to_write
from .stored import Stored


@dataclass(frozen=True)
class SyncOptions:
    """Behaviour knobs of the source (all configurable, see config/config.toml)."""

    start_date: str | None = None  # history start for a first sync (RFC 3339); None = everything
    chunk_pages: int | None = None  # commit progress every N pages per entity; None = one chunk
    fields_refresh: timedelta = timedelta(hours=6)  # re-read *Fields at most this often
    refresh_overrides: Mapping[str, timedelta] = field(default_factory=dict)  # entity → interval
    refresh_all: bool = False  # read every slow list now, whatever its cadence
    force_fields_refresh: bool = False
    hard_deletes: bool = False  # delete rows Pipedrive deleted instead of flagging them
    reconcile: frozenset[str] = frozenset()  # entities whose ids to list in full this run
    columnar: bool = True  # v2 pages through the columnar fast path (`columnar` module)
    # entities extracted at the same time (each in its own thread, one shared rate limiter);
    # 1 = one after another
    parallel_entities: int = 3

    def refresh_interval(self, entity: str, default: timedelta | None) -> timedelta | None:
        """How often an entity's slow lists are re-read (None: every run)."""
        if self.refresh_all:
            return None
        return self.refresh_overrides.get(entity, default)


@dataclass
class EntityReport:
    name: str
    rows: int = 0
    pages: int = 0
    status: str = "ok"  # ok | skipped | stopped
    message: str = ""
    more: bool = False  # stopped at a chunk boundary with pages left
    full_read: bool = False  # read everything from the beginning (a first sync)
    reconciled: bool = False  # every current id was listed, vanished rows can be flagged
    finished: bool = False  # the entity's resource has run to its end in this chunk


@dataclass
class RunContext:
    client: PipedriveClient
    options: SyncOptions = field(default_factory=SyncOptions)
    reports: dict[str, EntityReport] = field(default_factory=dict)
    stopped_by: TemporaryError | None = None
    complete_listings: dict[str, set[Any]] = field(default_factory=dict)
    # entity tables known empty in the destination before this chunk: appended, not merged
    empty_tables: frozenset[str] = frozenset()
    # entity → ids (an arrow array) of every row this run appended into a table that was empty
    # when it started: later chunks append too while their ids are new
    appended_ids: dict[str, Any] = field(default_factory=dict)
    # the warehouse's own records (identity, custom-field mapping) and whose credentials these
    # are: read and checked before anything is written, by the runner or by a bare source itself
    stored: Stored = field(default_factory=Stored)
    company: Company | None = None
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    prepared: bool = False
    # what the run is doing: preparing | fetching | loading | finishing (for progress views)
    phase: str = "preparing"
    # entity table → column hints of custom fields new to it that no row carried in this run
    # (the runner adds them to the warehouse table after the load)
    planned_columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    # an event batch (`pipedrive-sync listen`): entity → the ids to read through the lists'
    # `ids` parameter instead of reading the lists (their cursors stay where polls left them)
    event_ids: Mapping[str, frozenset[Any]] = field(default_factory=dict)
    # an event batch: per-parent entity → the parent ids whose children to read (None: a poll,
    # children of every parent row read)
    event_parents: Mapping[str, frozenset[Any]] | None = None
    # entity → ids of `event_ids` that no list returned: deleted (or no longer visible)
    missing_ids: dict[str, set[Any]] = field(default_factory=dict)
    # tells whoever runs the sync about a step as it starts or ends: (event, text, **numbers)
    notify: Callable[..., None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, name: str) -> EntityReport:
        with self._lock:
            return self.reports.setdefault(name, EntityReport(name))

    def stop(self, error: TemporaryError) -> None:
        """Stop fetching everywhere; what was fetched so far is still loaded and committed.

        The first reason is kept, except that a stop asked for by a signal wins (its exit
        status tells the service manager the run did what it was asked)."""
        with self._lock:
            if self.stopped_by is None or isinstance(error, StopRequested):
                self.stopped_by = error
        self.client.stop_event.set()

    @property
    def stop_requested(self) -> StopRequested | None:
        """The signal that asked this run to stop, if any."""
        stopped_by = self.stopped_by
        return stopped_by if isinstance(stopped_by, StopRequested) else None

    def record_listing(self, entity: str, ids: set[Any]) -> None:
        """Every id an entity has right now (from a complete read), for flagging vanished rows."""
        with self._lock:
            self.complete_listings[entity] = set(ids)

    def plan_columns(self, table: str, columns: Mapping[str, Any]) -> None:
        """Columns a loaded table lacks for fields no row has a value of yet."""
        with self._lock:
            self.planned_columns.setdefault(table, {}).update(columns)

    def record_missing(self, entity: str, ids: set[Any]) -> None:
        """Ids an event batch asked for that no list returned."""
        with self._lock:
            self.missing_ids.setdefault(entity, set()).update(ids)

    @property
    def stopping(self) -> bool:
        return self.client.stop_event.is_set()

    def ordered_reports(self) -> list[EntityReport]:
        """The reports in entity-table order (entities start in whatever order dlt runs them)."""
        order = {entity.name: i for i, entity in enumerate(ENTITIES)}
        return sorted(self.reports.values(), key=lambda r: (order.get(r.name, len(order)), r.name))

    @property
    def has_more(self) -> bool:
        return any(r.more for r in self.reports.values())

    def identity_row(self) -> dict[str, Any] | None:
        """The `sync_identity` row this run writes (a claim or an update), else None."""
        if self.company is None:
            return None
        identity = identity_to_write(self.stored.identity, self.company, self.pipeline_name)
        return identity.row() if identity is not None else None

    def tell(self, event: str, text: str, **numbers: Any) -> None:
        """Pass a note on a step (e.g. what the history backfill will cost) to `notify`."""
        if self.notify is not None:
            self.notify(event, text, **numbers)

    def begin_chunk(self) -> None:
        """Reset per-chunk flags before the next `pipeline.run` of a chunked sync."""
        for report in self.reports.values():
            report.more = False
            report.finished = False
