"""The `pipedrive` dlt source: one resource per row of the entity table.

Usable in any dlt pipeline with any destination:

    import dlt
    from sources.pipedrive import pipedrive_source

    pipeline = dlt.pipeline("pipedrive", destination="duckdb", dataset_name="main")
    pipeline.run(pipedrive_source(entities=["deals", "persons"]), loader_file_format="parquet")

The token comes from dlt secrets (`sources.pipedrive.api_token`) or the argument.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.destination.exceptions import SqlClientNotAvailable
from dlt.common.schema.utils import has_table_seen_data
from dlt.extract.resource import DltResource

from . import deal_history, labels
from .account import fetch_company
from .catalog import FieldCatalog
from .columnar import ColumnarPage, PageSchema, build_columnar, decode_page, parse_schema
from .context import EntityReport, RunContext, SyncOptions
from .custom_fields import ColumnPlan, custom_field_key
from .entities import ENTITY_BY_NAME, Api, Entity, Strategy, Stream, select_entities
from .http import (
    ApiTokenAuth,
    Auth,
    EntityUnavailable,
    HttpSettings,
    PipedriveClient,
    TemporaryError,
)
from .http.client import DEFAULT_BASE_URL, PageItems
from .identity import IDENTITY_COLUMNS, IDENTITY_TABLE, Identity, WrongCompany, check_company
from .pages import TableBatcher, build_table
from .schema import load_schema, table_columns
from .stored import read_stored
from .streams import StreamReader
from .sync_state import EntityStreams, StreamState


def _custom_keys(rows: list[dict[str, Any]], shape: Api) -> set[str]:
    """Custom-field keys present in a page (v2: inside custom_fields; v1: the fields of the
    top-level keys `is_custom_key` recognises)."""
    if shape is Api.V2:
        keys: set[str] = set()
        for row in rows:
            fields = row.get("custom_fields")
            if isinstance(fields, dict):
                keys.update(fields)
        return keys
    present: set[str] = set().union(*rows) if rows else set()
    return {field for field in map(custom_field_key, present) if field is not None}


class EntityExtractor:
    """Turns one entity-table row into the generator behind its dlt resource."""

    def __init__(
        self, ctx: RunContext, entity: Entity, catalog: Callable[[], FieldCatalog]
    ) -> None:
        self.ctx = ctx
        self.entity = entity
        self._catalog = catalog
        self.standard = {name: col["data_type"] for name, col in table_columns(entity.name).items()}
        self.readers: list[StreamReader] = []
        self._hinted = False
        self._hinted_plan: ColumnPlan | None = None  # the plan the last column hints came from
        # the exact path has planned a page: unknown fields and options are refreshed or
        # remembered as deleted, so the columnar path need not decline them
        self._planned_a_page = False
        self._schemas: dict[int, PageSchema] = {}
        self._made_catalog: FieldCatalog | None = None
        self._prior_ids: pa.Array | None = ctx.appended_ids.get(entity.name)
        appendable = (
            (entity.name in ctx.empty_tables or self._prior_ids is not None)
            and entity.strategy is Strategy.UPDATED_SINCE
            and not ctx.options.hard_deletes
            and entity.name not in ctx.event_ids
        )
        self._append_ids: set[Any] | None = set() if appendable else None  # ids this chunk
        self._history_hinted: list[str] | None = None  # tracked custom columns last hinted
        # the deals' candidate versions are appended with them, into a history that was empty
        self._history_appends = (
            appendable
            and entity.name == HISTORY_ENTITY
            and (
                deal_history.HISTORY_TABLE in ctx.empty_tables
                or deal_history.HISTORY_TABLE in ctx.appended_ids
            )
        )

    @property
    def catalog(self) -> FieldCatalog | None:
        if not self.entity.has_custom_fields:
            return None
        self._made_catalog = self._catalog()
        return self._made_catalog

    def _plan(self, rows: list[dict[str, Any]] | None = None) -> ColumnPlan | None:
        catalog = self.catalog
        if catalog is None:
            return None
        plan = catalog.plan(self.entity)
        if not rows:
            return plan
        if not catalog.knows(self.entity, _custom_keys(rows, self.entity.api)):
            # a field added since the cached definitions: read them again, once per run
            plan = catalog.plan(self.entity, force=not catalog.refreshed_this_run(self.entity))
        unknown = catalog.unknown_options(self.entity, rows)
        if unknown:
            if not catalog.refreshed_this_run(self.entity):
                # an option added since: its label must not land as a bare id
                plan = catalog.plan(self.entity, force=True)
                unknown = catalog.unknown_options(self.entity, rows)
            catalog.remember_deleted_options(self.entity, unknown)
        self._planned_a_page = True
        return plan

    def _builder(self, constants: dict[str, Any]) -> Callable[[list[dict[str, Any]]], pa.Table]:
        def build(rows: list[dict[str, Any]]) -> pa.Table:
            return build_table(rows, self.standard, self._plan(rows), self.entity.api, constants)

        return build

    def _ready_plan(self) -> tuple[bool, ColumnPlan | None]:
        """(ready, plan): the columnar path waits until the exact path has made the plan."""
        if not self.entity.has_custom_fields:
            return True, None
        catalog = self._made_catalog  # made in the extract thread, where dlt state is
        plan = catalog.cached_plan(self.entity) if catalog is not None else None
        return plan is not None and self._planned_a_page, plan

    def decode(self, content: bytes) -> dict[str, Any] | None:
        """`ColumnarPath.decode`: runs in the fetching thread."""
        ready, plan = self._ready_plan()
        if not ready:
            return None
        schema = self._schemas.get(id(plan))
        if schema is None:
            schema = parse_schema(self.standard, plan)
            self._schemas = {id(plan): schema}  # the plan object lives as long as the run
        return decode_page(content, schema)

    def build(self, items: PageItems, constants: Mapping[str, Any]) -> pa.Table | None:
        """`ColumnarPath.build`: the page's table, or None for the exact path (items this
        path did not decode, or a plan not ready)."""
        if not isinstance(items, ColumnarPage):
            return None
        ready, plan = self._ready_plan()
        if not ready:
            return None
        catalog = self._made_catalog
        deleted = catalog.deleted_options(self.entity) if catalog is not None else {}
        return build_columnar(items, self.standard, plan, constants, deleted)

    def _column_hints(self) -> dict[str, Any]:
        hints: dict[str, Any] = dict(table_columns(self.entity.name))
        plan = self._plan()
        if plan is not None:
            for name, column in plan.columns().items():
                hints.setdefault(name, column)
        for option_labels in self._option_labels():
            hints.setdefault(option_labels.column, option_labels.hint())
        if self.ctx.options.hard_deletes and "is_deleted" in hints:
            hints["is_deleted"] = {**hints["is_deleted"], "hard_delete": True}
        return hints

    def _due(self, stream: Stream, state: StreamState) -> bool:
        """Streams on a cadence (archived lists) are read only when their interval has passed."""
        interval = self.ctx.options.refresh_interval(self.entity.name, stream.refresh_every)
        return state.due(interval, datetime.now(UTC))

    def rows(self) -> Iterator[Any]:
        """The resource generator: every due stream page by page, then bookkeeping."""
        try:
            prepare(self.ctx)
            yield from self._rows()
            self._remember_appended()
        finally:
            self.ctx.report(self.entity.name).finished = True

    def _remember_appended(self) -> None:
        """After a chunk: the ids it appended join the run's, or appending ends for the run
        (for the deals' history too)."""
        appended = self.ctx.appended_ids
        if self.entity.name == HISTORY_ENTITY:
            appended.pop(deal_history.HISTORY_TABLE, None)
        if self._append_ids is None:
            appended.pop(self.entity.name, None)
            return
        arrays = [a for a in (self._prior_ids, pa.array(list(self._append_ids))) if a is not None]
        try:
            appended[self.entity.name] = pa.concat_arrays(
                [a for a in arrays if len(a)] or arrays[-1:]
            )
        except pa.ArrowInvalid:  # id types that do not combine: merge from now on
            appended.pop(self.entity.name, None)
            return
        if self._history_appends:
            appended[deal_history.HISTORY_TABLE] = appended[self.entity.name]

    def _rows(self) -> Iterator[Any]:
        ids = self.ctx.event_ids.get(self.entity.name)
        if ids is not None:
            yield from self._rows_by_id(ids)
            return
        report = self.ctx.report(self.entity.name)
        streams_state = self._streams_to_read(report)
        if streams_state is None:
            return
        batcher = TableBatcher(BATCH_ROWS)
        skipped: list[str] = []
        for stream in self.entity.streams:
            if self.ctx.stopping:
                report.status = "stopped"
                break
            stream_state = streams_state.stream(stream.key)
            if not self._due(stream, stream_state):
                continue
            reader = self._reader(stream, stream_state)
            self.readers.append(reader)
            failure: Exception | None = None
            pages_before = report.pages
            try:
                for table in reader.read():
                    report.rows += table.num_rows
                    report.pages = pages_before + reader.pages
                    yield from self._emit(batcher.add(table))
            except (EntityUnavailable, TemporaryError) as exc:
                failure = exc
            report.pages = pages_before + reader.pages
            # what was read is consistent with the stream state: always load it
            yield from self._emit(batcher.flush())
            if isinstance(failure, EntityUnavailable):
                skipped.append(str(failure))
                continue
            if isinstance(failure, TemporaryError):
                report.status = "stopped"
                report.message = str(self.ctx.stopped_by or failure)  # the cause, not the echo
                self.ctx.stop(failure)
                break
            if reader.complete and stream.refresh_every is not None:
                stream_state.mark_read(datetime.now(UTC))
            report.more = report.more or reader.more
        if report.status == "stopped":
            return
        if skipped:
            report.message = "; ".join(skipped)
            if len(skipped) == len(self.readers):
                report.status = "skipped"
                return
            report.status = "partial"
        report.full_read = bool(self.readers) and all(
            r.complete and r.full_read for r in self.readers
        )
        if not skipped:
            self._reconcile(report)
        self._note_new_columns()
        yield from self._metadata()

    def _streams_to_read(self, report: EntityReport) -> EntityStreams | None:
        """The entity's stream states, started over when a field changed its type (every row
        again, in the new type); None when the run stops before any row is read."""
        streams_state = EntityStreams(dlt.current.resource_state())
        if self._reread_due():
            streams_state.forget()
        return streams_state if self._labels_read(report) else None

    def _labels_read(self, report: EntityReport) -> bool:
        """Read what the label columns need before any row, so that no row is loaded without
        its labels; False when that failed and the run stops (as a list's failure stops it)."""
        if self.ctx.stopping:
            report.status = "stopped"
            return False
        try:
            self._option_labels()
        except EntityUnavailable:
            pass  # the definitions cannot be read: the first page says so, in its place
        except TemporaryError as exc:
            report.status = "stopped"
            report.message = str(self.ctx.stopped_by or exc)
            self.ctx.stop(exc)
            return False
        return True

    def _reread_due(self) -> bool:
        """Must the entity be read from the start (see `FieldCatalog.take_reread`)?"""
        catalog = self.catalog
        if catalog is None or self.ctx.stopping:
            return False
        try:
            return catalog.take_reread(self.entity)
        except (EntityUnavailable, TemporaryError):
            return False  # the definitions cannot be read now: the first page says so, in place

    def _note_new_columns(self) -> None:
        """When no row carried the column hints, the columns of fields new to a loaded table
        are added after the load (the mapping table names them from now on)."""
        if self._hinted or self.catalog is None:
            return
        table = dlt.current.source_schema().tables.get(self.entity.name)
        if table is None or not has_table_seen_data(table):
            return
        known = table.get("columns", {})
        missing = {name: c for name, c in self._column_hints().items() if name not in known}
        if missing:
            self.ctx.plan_columns(self.entity.name, missing)

    def _rows_by_id(self, ids: frozenset[Any]) -> Iterator[Any]:
        """An event batch: the current rows of these ids, asked of each list in turn (a deal
        is in /deals or in /deals/archived), or one by one where the entity has a detail
        endpoint (v1 leads, notes), through the same conversion as a poll. Ids not returned
        are recorded as missing. Cursors are not touched: polls go on where they left off."""
        report = self.ctx.report(self.entity.name)
        batcher = TableBatcher(BATCH_ROWS)
        wanted = set(ids)
        detail = self.entity.detail_stream
        streams = self.entity.streams if detail is None else (detail,)
        for stream in streams:
            if not wanted:
                break
            reader = self._reader(stream, StreamState({}))
            read = reader.read_ids if detail is None else reader.read_each
            pages_before = report.pages
            try:
                for table in read(sorted(wanted, key=str)):
                    report.rows += table.num_rows
                    report.pages = pages_before + reader.pages
                    yield from self._emit(batcher.add(table))
            except EntityUnavailable as exc:  # what the other lists returned still counts
                yield from self._emit(batcher.flush())
                report.message = str(exc)
                return
            except TemporaryError as exc:
                yield from self._emit(batcher.flush())
                report.status, report.message = "stopped", str(exc)
                self.ctx.stop(exc)
                return
            wanted -= reader.seen_ids
        yield from self._emit(batcher.flush())
        if wanted:
            self.ctx.record_missing(self.entity.name, wanted)
        yield from self._metadata()

    def _emit(self, table: pa.Table | None) -> Iterator[Any]:
        """Yield a batch; the first one carries the column hints (custom columns included).

        Into a table that is empty in the destination (a first sync's first chunk) batches are
        appended, which skips dlt's staging copy and merge (half the load time), as long as
        every id is new; the first repeated id turns the chunk back into a merge.
        """
        if table is None or table.num_rows == 0:
            return
        table = self._labelled(table)
        disposition: Literal["append", "merge"] | None = None
        if self._append_ids is not None:
            column = table[self.entity.id_column]
            ids = column.to_pylist()
            distinct = set(ids)
            if (
                len(distinct) < len(ids)
                or not self._append_ids.isdisjoint(distinct)
                or self._seen_in_earlier_chunks(column)
            ):
                self._append_ids = None
                disposition = "merge"
            else:
                self._append_ids |= distinct
                disposition = None if self._hinted else "append"
        yield from self._history(table, self._history_disposition())
        plan = self._current_plan()
        if not self._hinted or plan is not self._hinted_plan:
            # the first batch, or the first after the definitions were re-read: the column
            # types travel with it (arrow alone would make a JSON column text)
            self._hinted = True
            self._hinted_plan = plan
            hints = dlt.mark.make_hints(columns=self._column_hints())
            if disposition is not None:
                hints = dlt.mark.make_hints(
                    columns=self._column_hints(), write_disposition=disposition
                )
            yield dlt.mark.with_hints(table, hints)
        elif disposition == "merge":
            yield dlt.mark.with_hints(table, dlt.mark.make_hints(write_disposition="merge"))
        else:
            yield table

    def _current_plan(self) -> ColumnPlan | None:
        """The plan the batches are built with now (None: no custom fields)."""
        catalog = self._made_catalog
        return catalog.cached_plan(self.entity) if catalog is not None else None

    def _option_labels(self, table: pa.Table | None = None) -> list[labels.OptionLabels]:
        """The entity's label columns (`labels`); when `table` holds an option id the
        definitions do not know, they are read again first (once a run)."""
        catalog = self.catalog
        if catalog is None:
            return []
        found = catalog.option_labels(self.entity)
        if table is None:
            return found
        ignored = catalog.ignored_option_ids(self.entity)
        unknown = labels.unknown_ids(table, found, ignored)
        if unknown and not catalog.refreshed_this_run(self.entity):
            try:
                found = catalog.option_labels(self.entity, force=True)
            except (EntityUnavailable, TemporaryError):
                return found  # not now (a stopping run…): the unknown ids stay ids, asked again
            unknown = labels.unknown_ids(table, found, ignored)
        if unknown:  # still unknown after a refresh: deleted options, kept as their ids
            catalog.ignore_option_ids(self.entity, unknown)
        return found

    def _labelled(self, table: pa.Table) -> pa.Table:
        """The batch with its label columns (and a lead's value as columns)."""
        if self.entity.name == "leads":
            table = labels.add_lead_value(table)
        found = self._option_labels(table)
        return labels.add_labels(table, found) if found else table

    def _history_disposition(self) -> Literal["append", "merge"] | None:
        """How this batch's candidate versions are written, where that changes: appended from
        the first batch while the deals are, merged (the table's own way) once they are not."""
        if not self._history_appends:
            return None
        if self._append_ids is None:  # the deals turned into a merge: until a batch says so
            return "merge" if self._history_hinted is not None else None
        return "append" if self._history_hinted is None else None

    def _history(
        self, table: pa.Table, disposition: Literal["append", "merge"] | None
    ) -> Iterator[Any]:
        """Deals: the batch's candidate versions for `deal_history` (see `deal_history`)."""
        if self.entity.name != HISTORY_ENTITY:
            return
        custom = deal_history.tracked_custom_columns(self._plan())
        versions = deal_history.candidates(table, custom)
        if not versions.num_rows:
            return
        if custom == self._history_hinted and disposition is None:
            yield dlt.mark.with_table_name(versions, deal_history.HISTORY_TABLE)
            return
        self._history_hinted = custom  # the first batch, or tracked custom fields changed
        columns = deal_history.column_hints(self._column_hints(), custom)
        hints = dlt.mark.make_hints(
            table_name=deal_history.HISTORY_TABLE, columns=columns, write_disposition=disposition
        )
        yield dlt.mark.with_hints(versions, hints, create_table_variant=True)
        if disposition == "merge":
            self._history_appends = False

    def _seen_in_earlier_chunks(self, ids: pa.ChunkedArray) -> bool:
        if self._prior_ids is None or not len(self._prior_ids):
            return False
        try:
            return bool(pc.any(pc.is_in(ids, value_set=self._prior_ids)).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return True  # not comparable: merge, which is always right

    def _reader(self, stream: Stream, state: StreamState) -> StreamReader:
        return StreamReader(
            self.ctx,
            self.entity,
            stream,
            state,
            self._builder(dict(stream.set_columns)),
            chunk_pages=self.ctx.options.chunk_pages,
            columnar=self if self.ctx.options.columnar and self.entity.api is Api.V2 else None,
        )

    def _reconcile(self, report: EntityReport) -> None:
        """Record every live id, so the runner can flag rows Pipedrive no longer lists."""
        if self.entity.strategy is Strategy.FULL_REFRESH:
            if len(self.readers) == len(self.entity.streams) and all(
                r.complete for r in self.readers
            ):
                self.ctx.record_listing(
                    self.entity.name, set().union(*(r.seen_ids for r in self.readers))
                )
                report.reconciled = True
            return
        if self.entity.name not in self.ctx.options.reconcile or report.more:
            return
        try:  # every stream, also those not due this run: an archived row is not a deleted one
            ids = set().union(
                *(self._reader(s, StreamState({})).list_ids() for s in self.entity.streams)
            )
        except (TemporaryError, EntityUnavailable) as exc:
            report.message = f"reconcile postponed: {exc}"
            return
        self.ctx.record_listing(self.entity.name, ids)
        report.reconciled = True

    def _metadata(self) -> Iterator[Any]:
        """Mapping rows, raw definitions and label changes of this entity's custom fields."""
        catalog = self.catalog
        if catalog is None:
            return
        mapping = catalog.mapping_rows(self.entity)
        if mapping:
            yield dlt.mark.with_table_name(mapping, MAPPING_TABLE)
        raw = catalog.raw_definitions(self.entity)
        if raw:
            yield dlt.mark.with_table_name(raw, definitions_table(self.entity))
        with suppress(EntityUnavailable, TemporaryError):  # read before the rows, or never
            self._option_labels()  # renamed options of standard fields, even with no row read
        changes = catalog.label_changes.pop(self.entity.singular, [])
        if changes:
            now = datetime.now(UTC)
            rows = [
                {
                    "entity": self.entity.singular,
                    "table_name": self.entity.name,
                    "column_name": c.column,
                    "field_type": c.field_type,
                    "old_label": c.old_label,
                    "new_label": c.new_label,
                    "detected_at": now,
                    "applied_at": None,
                }
                for c in changes
            ]
            yield dlt.mark.with_table_name(rows, LABEL_CHANGES_TABLE)


BATCH_ROWS = 10_000  # rows per item handed to dlt (its per-item overhead is high)
HISTORY_ENTITY = "deals"  # whose rows also feed `deal_history`
MAPPING_TABLE = "custom_fields"
LABEL_CHANGES_TABLE = "custom_field_label_changes"


def definitions_table(entity: Entity) -> str:
    return f"{entity.singular}_fields"


def _register_metadata_tables(resource: DltResource, entity: Entity) -> None:
    """Hints for the secondary tables an entity resource writes (before its own columns, so
    the table variants do not inherit them)."""
    variants: list[tuple[str, Any, list[str], list[dict[str, Any]]]] = [
        (
            MAPPING_TABLE,
            "merge",
            ["entity", "field_key"],
            [
                {"name": "entity", "data_type": "text", "nullable": False},
                {"name": "field_key", "data_type": "text", "nullable": False},
                {"name": "options", "data_type": "json"},
                {"name": "is_active", "data_type": "bool"},
            ],
        ),
        (definitions_table(entity), "replace", [], []),
        (
            LABEL_CHANGES_TABLE,
            "append",
            [],
            [
                {"name": "detected_at", "data_type": "timestamp"},
                {"name": "applied_at", "data_type": "timestamp", "nullable": True},
            ],
        ),
    ]
    for table, disposition, primary_key, columns in variants:
        resource.apply_hints(
            table_name=table,
            write_disposition=disposition,
            primary_key=primary_key,
            columns=columns,  # type: ignore[arg-type]
            create_table_variant=True,
        )


class ChildExtractor:
    """A per-parent entity (deal products, followers): fetched for the parent rows of this run.

    Children of a parent are replaced as a set (merge key = the parent id), and a parent that
    lost all its children gets a tombstone row, so removed children disappear from the table.
    """

    def __init__(self, ctx: RunContext, entity: Entity) -> None:
        self.ctx = ctx
        self.entity = entity
        self.standard = {name: col["data_type"] for name, col in table_columns(entity.name).items()}
        self.parent = ENTITY_BY_NAME[entity.parent or ""]

    def transform(self, item: Any) -> Iterator[Any]:
        if not isinstance(item, pa.Table) or self.parent.id_column not in item.column_names:
            return  # custom-field metadata the parent also yields
        report = self.ctx.report(self.entity.name)
        if self.ctx.stopping or report.status == "skipped":
            return
        parent_ids = [i for i in item[self.parent.id_column].to_pylist() if i is not None]
        if self.ctx.event_parents is not None:  # an event batch names whose children to read
            wanted = self.ctx.event_parents.get(self.entity.name, frozenset())
            parent_ids = [i for i in parent_ids if i in wanted]
            if not parent_ids:
                return
        reader = StreamReader(
            self.ctx, self.entity, self.entity.streams[0], StreamState({}), self._build
        )
        parent_key = self.entity.parent_key or ""
        present: set[Any] = set()
        pages_before = report.pages
        try:
            for rows in _chunks_of(reader.read_children(parent_ids)):
                present.update(row.get(parent_key) for row in rows)
                report.pages = pages_before + reader.pages
                if rows:
                    report.rows += len(rows)
                    yield self._own(self._build(rows))
            emptied = [self._tombstone(p) for p in parent_ids if p not in present]
            if emptied:
                yield self._own(self._build(emptied))
        except EntityUnavailable as exc:
            report.status, report.message = "skipped", str(exc)
        except TemporaryError as exc:
            report.status, report.message = "stopped", str(self.ctx.stopped_by or exc)
            self.ctx.stop(exc)

    def _own(self, table: pa.Table) -> Any:
        # the parent's items carry the parent's hints: name our table so they do not leak in
        return dlt.mark.with_table_name(table, self.entity.name)

    def _build(self, rows: list[dict[str, Any]]) -> pa.Table:
        table = build_table(rows, self.standard, None, self.entity.api)
        if "is_deleted" in table.column_names:
            flags = [bool(row.get("is_deleted")) for row in rows]
            table = table.set_column(
                table.column_names.index("is_deleted"), "is_deleted", pa.array(flags, pa.bool_())
            )
        return table

    def _tombstone(self, parent_id: Any) -> dict[str, Any]:
        """A row that removes every stored child of `parent_id` and is not itself inserted."""
        row: dict[str, Any] = dict.fromkeys(self.entity.key_columns, 0)
        row[self.entity.parent_key or ""] = parent_id
        if "id" in row:
            row["id"] = -int(parent_id)  # unique per parent, never a real id
        row["is_deleted"] = True
        return row


def _chunks_of(batches: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """Join per-request batches into loads of reasonable size."""
    pending: list[dict[str, Any]] = []
    for batch in batches:
        pending.extend(batch)
        if len(pending) >= BATCH_ROWS:
            yield pending
            pending = []
    yield pending


def build_resources(
    ctx: RunContext, entities: Sequence[Entity]
) -> tuple[list[DltResource], dict[str, EntityExtractor]]:
    """One dlt resource per entity, sharing one run context and one field catalog.

    With `parallel_entities` > 1 the entity resources are dlt `parallelized` ones: each
    generator runs in dlt's extract thread pool, so entities fetch and convert at the same
    time while dlt's main thread writes their items. Everything they share is thread-safe: the
    HTTP client (one rate limiter, per-thread sessions), the field catalog, the run context.
    """
    catalog: list[FieldCatalog] = []
    catalog_lock = threading.Lock()

    def shared_catalog() -> FieldCatalog:
        # created on first use inside extract, where dlt source state is available
        with catalog_lock:
            if not catalog:
                catalog.append(FieldCatalog(ctx, dlt.current.source_state()))
            return catalog[0]

    parallel = ctx.options.parallel_entities > 1

    resources: dict[str, DltResource] = {}
    extractors: dict[str, EntityExtractor] = {}
    for entity in entities:
        if entity.strategy is Strategy.PER_PARENT:
            continue
        extractor = EntityExtractor(ctx, entity, shared_catalog)
        extractors[entity.name] = extractor
        resource = dlt.resource(
            extractor.rows(),
            name=entity.name,
            table_name=entity.name,
            primary_key=entity.primary_key,
            write_disposition="merge",
            parallelized=parallel,
        )
        if entity.has_custom_fields:
            _register_metadata_tables(resource, entity)
        if entity.name == HISTORY_ENTITY:
            resource.apply_hints(
                table_name=deal_history.HISTORY_TABLE,
                write_disposition="merge",
                primary_key=list(deal_history.KEY),
                create_table_variant=True,
            )
        resource.apply_hints(columns=table_columns(entity.name))  # type: ignore[arg-type]
        resources[entity.name] = resource
    for entity in entities:
        if entity.strategy is not Strategy.PER_PARENT:
            continue
        child = ChildExtractor(ctx, entity)

        def transform(item: Any, child: ChildExtractor = child) -> Iterator[Any]:
            yield from child.transform(item)

        columns = table_columns(entity.name)
        columns["is_deleted"] = {
            **columns.get("is_deleted", {}),
            "name": "is_deleted",
            "data_type": "bool",
            "hard_delete": True,  # tombstones remove a parent's children and are not stored
        }
        resources[entity.name] = dlt.transformer(  # type: ignore[call-overload]
            transform,
            data_from=resources[entity.parent or ""],
            name=entity.name,
            table_name=entity.name,
            primary_key=list(entity.key_columns),
            merge_key=entity.parent_key,
            write_disposition="merge",
            columns=columns,
        )
    return list(resources.values()), extractors


_PREPARE_LOCK = threading.Lock()


def prepare(ctx: RunContext) -> None:
    """Before the first row: read what the warehouse recorded and check it (once per run).

    The runner does this itself before anything is written (and marks the context prepared);
    a source in someone's own dlt pipeline does it here, through that pipeline's destination:
    another company's warehouse, or a dataset whose state another pipeline name keeps, stop
    the extract, so nothing is loaded.
    """
    with _PREPARE_LOCK:
        if ctx.prepared:
            return
        pipeline: Any = dlt.current.pipeline()
        try:
            with pipeline.sql_client() as client:
                ctx.stored = read_stored(client)
        except SqlClientNotAvailable:
            pass  # a destination dlt cannot query: nothing recorded to check against
        ctx.company = fetch_company(ctx.client)
        where = f"dataset {pipeline.dataset_name!r}"
        check_company(ctx.stored.identity, ctx.company, where)
        recorded = ctx.stored.identity
        if recorded is not None and recorded.pipeline_name != pipeline.pipeline_name:
            raise WrongCompany(
                f"{where} keeps its sync state under the pipeline name"
                f" {recorded.pipeline_name!r} (see its sync_identity table): run it with"
                f" dlt.pipeline({recorded.pipeline_name!r}, …) so cursors and column names"
                " carry on"
            )
        ctx.pipeline_name = pipeline.pipeline_name
        ctx.prepared = True


def identity_resource(ctx: RunContext) -> DltResource:
    """The `sync_identity` table: written by the first run into a dataset (the claim), and
    again only when the company's domain or name changed."""

    def identity() -> Iterator[dict[str, Any]]:
        prepare(ctx)
        row = ctx.identity_row()
        if row is not None:
            ctx.stored = replace(ctx.stored, identity=Identity.from_row(row))
            yield row

    return dlt.resource(  # type: ignore[call-overload]
        identity,
        name=IDENTITY_TABLE,
        write_disposition="merge",
        primary_key="company_id",
        columns=IDENTITY_COLUMNS,
    )


@dlt.source(section="pipedrive", max_table_nesting=0, schema=load_schema())
def pipedrive_source(
    api_token: str | None = dlt.secrets.value,
    base_url: str = DEFAULT_BASE_URL,
    entities: list[str] | None = None,
    start_date: str | None = None,
    ctx: RunContext | None = None,
    auth: Auth | None = None,
) -> Iterator[DltResource]:
    """Pipedrive entities as dlt resources (merge on id, incremental on update_time).

    `entities` selects tables (default: the core set); `start_date` limits history on the first
    run; pass a `RunContext` to share options, HTTP settings and the per-entity report.
    """
    if ctx is None:
        if auth is None:
            if not api_token:
                raise ValueError("a Pipedrive API token is required (sources.pipedrive.api_token)")
            auth = ApiTokenAuth(api_token)
        ctx = RunContext(
            client=PipedriveClient(base_url, auth, HttpSettings()),
            options=SyncOptions(start_date=start_date),
        )
    resources, _ = build_resources(ctx, select_entities(entities))
    yield identity_resource(ctx)
    yield from resources
