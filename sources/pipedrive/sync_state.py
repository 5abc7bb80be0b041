"""The sync state of each stream, typed: the only code that reads or writes its dicts.

dlt keeps a resource state per entity, committed with the data in the warehouse's
`_dlt_pipeline_state` table. Under it, the state of each stream (endpoint) is a plain dict:

    pipeline state["sources"]["pipedrive"]["resources"][entity]["streams"][stream key] = {
        since     ISO timestamp, the highest cursor value seen
        boundary  {id: hash} of rows whose cursor value == since
        resume    {"position": cursor/offset, "updated_since": ...} when a chunk stopped mid-list
        hashes    {id: hash} (FULL mode)
        read_at   ISO timestamp of the last complete read of a stream on a cadence
    }

Next to the resources, the source state holds the custom-field catalog of each entity
(`custom_fields.<singular>`, see `FieldState`); the history backfill keeps its progress in its
own resource's state (`BackfillState`).

That format is what existing warehouses hold and resume from; it must not change. Everything
else goes through `StreamState`, `FieldState` and `BackfillState` (typed views writing through
to the dicts dlt commits) and the read-only helpers for a committed or local pipeline state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .convert import aware_datetime

SOURCE_KEY = "pipedrive"  # the dlt schema of the source, and the key of its state
BOUNDARY_LIMIT = 20_000  # beyond this many rows on one timestamp, re-load instead of remembering

_SINCE = "since"
_BOUNDARY = "boundary"
_RESUME = "resume"
_HASHES = "hashes"
_READ_AT = "read_at"


def rfc3339(value: datetime) -> str:
    """The cursor's stored form (and the form `updated_since` takes)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (none stored: None)."""
    return aware_datetime(value)


@dataclass
class Cursor:
    """How far an incremental stream has read: the highest cursor value seen, and the rows
    sitting exactly on it that were loaded already (id → content hash)."""

    since: datetime | None = None
    boundary: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResumePoint:
    """Where a pass that stopped at a chunk boundary goes on: the paginator's position and
    the `updated_since` the pass started with."""

    position: Any
    updated_since: str | None


class StreamState:
    """One stream's state: a typed view over the dict dlt commits with the data."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw

    # -- the cursor ----------------------------------------------------------------------
    @property
    def since(self) -> datetime | None:
        return _time(self._raw.get(_SINCE))

    @property
    def has_cursor(self) -> bool:
        return bool(self._raw.get(_SINCE))

    def cursor(self) -> Cursor:
        """A copy of the cursor (the reader advances it, then `save_cursor`s it)."""
        return Cursor(self.since, dict(self._raw.get(_BOUNDARY) or {}))

    def save_cursor(self, cursor: Cursor) -> None:
        """Store the cursor; a boundary too large to remember is dropped (those rows are then
        loaded again, which merging makes harmless). No cursor yet: nothing is stored."""
        if cursor.since is None:
            return
        self._raw[_SINCE] = rfc3339(cursor.since)
        self._raw[_BOUNDARY] = cursor.boundary if len(cursor.boundary) <= BOUNDARY_LIMIT else {}

    def rewind(self, since: str) -> None:
        """Read again from `since` (a stored `updated_since`) with no boundary rows known."""
        self._raw[_SINCE] = since
        self._raw[_BOUNDARY] = {}

    # -- the resume point ----------------------------------------------------------------
    @property
    def resume(self) -> ResumePoint | None:
        saved = self._raw.get(_RESUME)
        if not saved:
            return None
        return ResumePoint(saved.get("position"), saved.get("updated_since"))

    @property
    def resuming(self) -> bool:
        """A pass stopped midway and goes on at the next run."""
        return _RESUME in self._raw

    def save_resume(self, point: ResumePoint) -> None:
        self._raw[_RESUME] = {"position": point.position, "updated_since": point.updated_since}

    def clear_resume(self) -> None:
        self._raw.pop(_RESUME, None)

    # -- full reads ----------------------------------------------------------------------
    @property
    def hashes(self) -> dict[str, str]:
        """id → content hash of every row the last full read saw."""
        return self._raw.get(_HASHES) or {}

    def save_hashes(self, hashes: dict[str, str]) -> None:
        self._raw[_HASHES] = hashes

    # -- cadences ------------------------------------------------------------------------
    @property
    def read_at(self) -> datetime | None:
        """When a stream on a cadence was last read completely."""
        return _time(self._raw.get(_READ_AT))

    def mark_read(self, moment: datetime) -> None:
        self._raw[_READ_AT] = moment.isoformat()

    def due(self, interval: timedelta | None, now: datetime) -> bool:
        """Is a stream on a cadence due (no cadence, or a pass to finish: always)?"""
        if interval is None or self.resuming:
            return True
        last = self.read_at
        return last is None or now - last >= interval


class EntityStreams:
    """The stream states of one entity, inside its dlt resource state (written through)."""

    def __init__(self, resource_state: dict[str, Any]) -> None:
        self._streams: dict[str, Any] = resource_state.setdefault("streams", {})

    def stream(self, key: str) -> StreamState:
        return StreamState(self._streams.setdefault(key, {}))

    def forget(self) -> None:
        """Every stream starts over (a field changed its type: every row again)."""
        self._streams.clear()


# -- the custom-field catalog ------------------------------------------------------------------
_CUSTOM_FIELDS = "custom_fields"


class FieldState:
    """One entity's custom-field catalog, a typed view over its dict in the source state.

    raw, fetched_at    the `*Fields` items as last read, and when
    pinned             field key → the column name it keeps
    known              field key → its definition (`FieldDef.to_dict`), to plan deleted fields
    labels             field key → {option id: label} as last seen
    removed_labels     the same for options removed from a definition
    retired            field key → columns of a deleted field (or of a field's earlier type)
    superseded         field key → columns its earlier type wrote, kept as history
    reread             a field changed its type: read the entity again from the start
    option_lists, option_labels, unknown_option_ids, deleted_options   standard fields' labels
    """

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw

    # -- definitions --------------------------------------------------------------------
    @property
    def definitions(self) -> list[dict[str, Any]] | None:
        """The raw `*Fields` items as last read (None: never read)."""
        return self._raw.get("raw")

    @property
    def fetched_at(self) -> datetime | None:
        return _time(self._raw.get("fetched_at"))

    def save_definitions(self, items: list[dict[str, Any]], moment: datetime) -> None:
        self._raw["raw"] = items
        self._raw["fetched_at"] = moment.isoformat()

    @property
    def known(self) -> dict[str, dict[str, Any]]:
        return self._dict("known")

    # -- column names and labels ---------------------------------------------------------
    @property
    def pinned(self) -> dict[str, str]:
        return self._dict("pinned")

    @pinned.setter
    def pinned(self, value: dict[str, str]) -> None:
        self._raw["pinned"] = value

    @property
    def labels(self) -> dict[str, dict[str, str]]:
        return self._dict("labels")

    @labels.setter
    def labels(self, value: dict[str, dict[str, str]]) -> None:
        self._raw["labels"] = value

    @property
    def removed_labels(self) -> dict[str, dict[str, str]]:
        return self._dict("removed_labels")

    @property
    def retired(self) -> dict[str, list[str]]:
        """Read only; `save_retired` replaces it."""
        retired: dict[str, list[str]] = self._raw.get("retired") or {}
        return retired

    def save_retired(self, value: dict[str, list[str]]) -> None:
        self._raw["retired"] = value

    @property
    def superseded(self) -> dict[str, list[str]]:
        return self._dict("superseded")

    # -- a field that changed its type -------------------------------------------------
    def flag_reread(self) -> None:
        self._raw["reread"] = True

    def take_reread(self) -> bool:
        """Whether a re-read was flagged; the flag is cleared."""
        return bool(self._raw.pop("reread", False))

    # -- labels of standard option fields ----------------------------------------------
    @property
    def option_lists(self) -> dict[str, list[dict[str, Any]]]:
        return self._dict("option_lists")

    @property
    def option_labels(self) -> dict[str, dict[str, str]]:
        return self._dict("option_labels")

    @property
    def unknown_option_ids(self) -> dict[str, list[str]]:
        return self._dict("unknown_option_ids")

    @property
    def deleted_options(self) -> dict[str, list[str]]:
        return self._dict("deleted_options")

    def _dict(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] = self._raw.setdefault(key, {})
        return value


def field_state(source: dict[str, Any], singular: str) -> FieldState:
    """One entity's catalog in a source state dlt commits (created when missing)."""
    catalog: dict[str, Any] = source.setdefault(_CUSTOM_FIELDS, {})
    return FieldState(catalog.setdefault(singular, {}))


def committed_field_states(source: Mapping[str, Any]) -> Iterator[tuple[str, FieldState]]:
    """(entity singular, its catalog) in a source state; read them only."""
    for singular, raw in (source.get(_CUSTOM_FIELDS) or {}).items():
        yield singular, FieldState(raw)


# -- the history backfill ---------------------------------------------------------------------
class BackfillState:
    """The history backfill's progress in its resource's state: the deals it reads are those
    with `after` < id <= `until` (the range fixed by its first run), oldest first."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw

    @property
    def done(self) -> bool:
        return bool(self._raw.get("done"))

    @property
    def after(self) -> Any:
        return self._raw.get("after")

    @property
    def until(self) -> Any:
        return self._raw.get("until")

    def start(self, until: Any, moment: datetime) -> None:
        """Fix the range at the first run (later runs keep it)."""
        self._raw.setdefault("until", until)
        self._raw.setdefault("started_at", moment.isoformat())

    def advance(self, after: Any) -> None:
        self._raw["after"] = after

    def finish(self, moment: datetime) -> None:
        self._raw["done"] = True
        self._raw["finished_at"] = moment.isoformat()


# -- read-only views of a whole source state ---------------------------------------------------
def source_state(pipeline_state: Mapping[str, Any] | None, key: str = SOURCE_KEY) -> dict[str, Any]:
    """The source's part of a pipeline state (a local one, or one the warehouse committed)."""
    sources = (pipeline_state or {}).get("sources") or {}
    return sources.get(key) or {}


def put_source_state(pipeline_state: Any, adopted: dict[str, Any], key: str = SOURCE_KEY) -> None:
    """Put a whole source state (taken over from an older pipeline) into a pipeline state."""
    pipeline_state.setdefault("sources", {})[key] = adopted


def committed_resource(source: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One resource's state in a source state ({} when it never ran); read it only."""
    resources = source.get("resources") or {}
    state: dict[str, Any] = resources.get(name) or {}
    return state


def committed_streams(source: Mapping[str, Any], entity: str) -> Iterator[tuple[str, StreamState]]:
    """(stream key, its state) of one entity in a source state; read them only."""
    streams = committed_resource(source, entity).get("streams") or {}
    for key, raw in streams.items():
        yield key, StreamState(raw)


def committed_stream(source: Mapping[str, Any], entity: str, key: str) -> StreamState:
    """One stream's state in a source state (empty when it never ran); read it only."""
    return dict(committed_streams(source, entity)).get(key) or StreamState({})


def has_cursor(source: Mapping[str, Any], entity: str) -> bool:
    """Has any stream of the entity an incremental cursor yet?"""
    return any(state.has_cursor for _, state in committed_streams(source, entity))
