"""Custom-field definitions for one run: fetched at most once, cached in dlt state between runs.

Definitions change rarely, and every `*Fields` call costs API tokens, so they are re-read when
the cached copy is older than `SyncOptions.fields_refresh`, when forced, or at once when a record
carries a custom field the cached definitions do not know (a field added since).
Pinned column names and the last-seen option labels live in dlt state too, so they are committed
atomically with the data they describe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dlt.common.pipeline import TPipelineState

from . import labels
from .context import RunContext
from .custom_fields import (
    ColumnPlan,
    FieldDef,
    FieldOption,
    LabelChange,
    build_plan,
    field_outputs,
    known_labels,
    option_label_changes,
    parse_definitions,
    renamed_options,
)
from .custom_fields import option_ids as _option_ids
from .entities import ENTITY_BY_NAME, Entity
from .http import CursorPaginator, EntityUnavailable, OffsetPaginator, Paginator
from .labels import OptionLabels, default_label_columns
from .schema import standard_types
from .sync_state import FieldState, field_state

# columns dlt adds and suffixes we use; custom fields must never take these names
SYSTEM_COLUMNS = frozenset({"_dlt_id", "_dlt_load_id", "custom_fields"})


def _now() -> datetime:
    return datetime.now(UTC)


class FieldCatalog:
    """Field definitions and column plans per entity, shared by all resources of a run."""

    def __init__(self, ctx: RunContext, source_state: TPipelineState | dict[str, Any]) -> None:
        self.ctx = ctx
        self._source_state: dict[str, Any] = source_state  # type: ignore[assignment]
        self._lock = threading.RLock()
        self._refreshed: set[str] = set()  # fields paths read from the API in this run
        self._recovered: set[str] = set()  # entities whose pins were checked against the mapping
        self._plans: dict[str, ColumnPlan] = {}
        self._option_labels: dict[str, list[OptionLabels]] = {}
        self.label_changes: dict[str, list[LabelChange]] = {}

    # -- definitions -----------------------------------------------------------------------
    def _entry(self, entity: Entity) -> FieldState:
        entry = field_state(self._source_state, entity.singular)
        if entity.singular not in self._recovered:
            self._recovered.add(entity.singular)
            recover_from_mapping(entry, self.ctx.stored.mapping_rows(entity.singular))
        return entry

    def _paginator(self, entity: Entity) -> Paginator:
        limit = self.ctx.client.settings.page_limit
        if entity.effective_fields_api.value == "v1":
            return OffsetPaginator(limit=limit)
        return CursorPaginator(limit=limit)

    def _fetch(self, entity: Entity) -> list[dict[str, Any]]:
        assert entity.fields_path is not None
        items: list[dict[str, Any]] = []
        for page in self.ctx.client.iter_pages(
            entity.effective_fields_api,
            entity.fields_path,
            {},
            self._paginator(entity),
            cost=entity.effective_fields_token_cost,
            label=entity.fields_path,
        ):
            items.extend(page.rows)
        return items

    def raw_definitions(self, entity: Entity, *, force: bool = False) -> list[dict[str, Any]]:
        """The entity's raw `*Fields` items, from the API when due (or forced), else cached."""
        with self._lock:
            entry = self._entry(entity)
            path = entity.fields_path or ""
            fetched_at = entry.fetched_at
            due = (
                force
                or self.ctx.options.force_fields_refresh
                or entry.definitions is None
                or fetched_at is None
                or _now() - fetched_at >= self.ctx.options.fields_refresh
            )
            if due and path not in self._refreshed:
                entry.save_definitions(self._fetch(entity), _now())
                self._refreshed.add(path)
                self._plans.pop(entity.singular, None)
            raw = entry.definitions
            assert raw is not None
            return raw

    def refreshed_this_run(self, entity: Entity) -> bool:
        return (entity.fields_path or "") in self._refreshed

    # -- plans ------------------------------------------------------------------------------
    def plan(self, entity: Entity, *, force: bool = False) -> ColumnPlan:
        """The column plan for an entity; assigns and pins names for new fields."""
        with self._lock:
            if force:
                self._plans.pop(entity.singular, None)
            if entity.singular in self._plans:
                return self._plans[entity.singular]
            raw = self.raw_definitions(entity, force=force)
            definitions = parse_definitions(raw, entity.effective_fields_api)
            entry = self._entry(entity)
            reserved = set(standard_types(entity.name)) | SYSTEM_COLUMNS
            reserved |= default_label_columns(entity, definitions)  # standard fields' labels
            previous = [FieldDef.from_dict(d) for d in entry.known.values()]
            superseded = _supersede_retyped(entry, definitions, previous, reserved)
            history = frozenset(c for columns in superseded.values() for c in columns)
            plan, pinned = build_plan(
                definitions, reserved, entry.pinned, previous=previous, taken=history
            )
            entry.pinned = pinned
            for field in definitions:
                if field.is_custom:
                    entry.known[field.key] = field.to_dict()
            current = {d.key for d in definitions if d.is_custom}
            # fields deleted in Pipedrive, and columns a field left when its type changed: the
            # runner keeps the values already loaded
            retired = {
                fp.field.key: [o.name for o in fp.outputs]
                for fp in plan.fields
                if fp.field.key not in current and fp.outputs
            }
            retired.update({f"{key} before its type changed": c for key, c in superseded.items()})
            entry.save_retired(retired)
            changes = option_label_changes(entry.labels, plan)
            if changes:
                self.label_changes.setdefault(entity.singular, []).extend(changes)
            plan = _with_removed_labels(entry, plan)
            self._plans[entity.singular] = plan
            return plan

    def take_reread(self, entity: Entity) -> bool:
        """True once when the entity must be read again from the start (a custom field changed
        its type: rows already loaded hold values of the old type)."""
        with self._lock:
            self.plan(entity)
            return self._entry(entity).take_reread()

    # -- labels of standard option fields (`labels`) -----------------------------------------
    def option_labels(self, entity: Entity, *, force: bool = False) -> list[OptionLabels]:
        """The label columns of the entity's standard option fields (from its definitions, or
        another list, see `labels.OPTION_LISTS`); a renamed option becomes a label change."""
        with self._lock:
            if force:
                self._option_labels.pop(entity.singular, None)
                self.plan(entity, force=True)
            if entity.singular in self._option_labels:
                return self._option_labels[entity.singular]
            plan = self.plan(entity)
            definitions = parse_definitions(
                self.raw_definitions(entity), entity.effective_fields_api
            )
            standard = standard_types(entity.name)
            found = labels.from_definitions(definitions, standard)
            for source, spec in labels.OPTION_LISTS.get(entity.name, {}).items():
                if source in standard and source not in {o.source for o in found}:
                    try:
                        rows = self._option_list(entity, spec.entity)
                    except EntityUnavailable:
                        continue  # the token may not read that list: its ids stay ids
                    found.append(labels.from_list(source, rows, spec))
            taken = {o.name for fp in plan.fields for o in fp.outputs}
            found = [labels.avoiding(o, taken) for o in found]
            self._note_renames(entity, found)
            self._option_labels[entity.singular] = found
            return found

    def _option_list(self, entity: Entity, name: str) -> list[dict[str, Any]]:
        """Rows of a list that names a field's options (lead labels…), re-read with the
        entity's definitions."""
        from .streams import make_paginator

        source = ENTITY_BY_NAME[name]
        stream = source.streams[0]
        lists = self._entry(entity).option_lists
        if name not in lists or self.refreshed_this_run(entity):
            rows: list[dict[str, Any]] = []
            limit = min(self.ctx.client.settings.page_limit, stream.page_limit or 500)
            for page in self.ctx.client.iter_pages(
                source.api,
                stream.path,
                dict(stream.params),
                make_paginator(source, limit),
                cost=stream.token_cost,
                label=f"{entity.fields_path}:{stream.path}",
                data_key=stream.data_key,
            ):
                rows.extend(page.rows)
            spec = next(s for s in labels.OPTION_LISTS[entity.name].values() if s.entity == name)
            lists[name] = [{k: r.get(k) for k in (spec.id_key, spec.label_key)} for r in rows]
        found: list[dict[str, Any]] = lists[name]
        return found

    def ignored_option_ids(self, entity: Entity) -> dict[str, list[str]]:
        """Label column → option ids still unknown after a refresh (deleted options)."""
        return self._entry(entity).unknown_option_ids

    def ignore_option_ids(self, entity: Entity, unknown: Mapping[str, Iterable[str]]) -> None:
        """Stop re-reading the definitions for these ids (they stay as their ids)."""
        with self._lock:
            ignored = self.ignored_option_ids(entity)
            for column, ids in unknown.items():
                known = ignored.setdefault(column, [])
                known.extend(sorted(set(ids) - set(known)))

    def _note_renames(self, entity: Entity, found: list[OptionLabels]) -> None:
        """Options renamed since the last run: label changes, like custom fields' options."""
        known = self._entry(entity).option_labels
        changes = []
        for option_labels in found:
            before = known.get(option_labels.column)
            kind = option_labels.field_type
            changes.extend(
                renamed_options(option_labels.column, kind, before, option_labels.labels)
            )
            known[option_labels.column] = dict(option_labels.labels)
        if changes:
            self.label_changes.setdefault(entity.singular, []).extend(changes)

    def cached_plan(self, entity: Entity) -> ColumnPlan | None:
        """The plan already made in this run (never fetches definitions)."""
        return self._plans.get(entity.singular)

    def deleted_options(self, entity: Entity) -> dict[str, list[str]]:
        """Option ids per field key that stayed unknown after a refresh (deleted options)."""
        return self._entry(entity).deleted_options

    def unknown_options(self, entity: Entity, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
        """(field key, option id) pairs in `rows` that the definitions do not know yet.

        Options remembered as deleted (still unknown after a refresh) are not reported again.
        """
        plan = self.plan(entity)
        deleted = self._entry(entity).deleted_options
        shape = entity.api
        unknown: set[tuple[str, str]] = set()
        for field_plan in plan.fields:
            field = field_plan.field
            if field.field_type not in ("enum", "set") or not field.is_active:
                continue
            known = set(field_plan.labels) | set(deleted.get(field.key, ()))
            for row in rows:
                holder = row.get("custom_fields") if shape.value == "v2" else row
                value = holder.get(field.key) if isinstance(holder, dict) else None
                for option in _option_ids(value):
                    if option not in known:
                        unknown.add((field.key, option))
        return unknown

    def remember_deleted_options(self, entity: Entity, pairs: set[tuple[str, str]]) -> None:
        """Option ids still unknown after a refresh belong to deleted options: stop asking."""
        deleted = self._entry(entity).deleted_options
        for key, option in pairs:
            ids = deleted.setdefault(key, [])
            if option not in ids:
                ids.append(option)

    def knows(self, entity: Entity, keys: set[str]) -> bool:
        """True when every custom-field key in `keys` is described by the current plan."""
        plan = self.plan(entity)
        known = {fp.field.key for fp in plan.fields}
        return keys <= known

    def mapping_rows(self, entity: Entity) -> list[dict[str, Any]]:
        """Rows of the `custom_fields` mapping table for one entity."""
        return [
            {
                "entity": entity.singular,
                "field_key": fp.field.key,
                "field_name": fp.field.name,
                "column_name": fp.column,
                "field_type": fp.field.field_type,
                "options": [{"id": o.id, "label": o.label} for o in fp.field.options],
                "is_active": fp.field.is_active,
            }
            for fp in self.plan(entity).fields
        ]


def recover_from_mapping(entry: FieldState, rows: Iterable[Mapping[str, Any]]) -> None:
    """Take pinned names, last-known labels and definitions from the warehouse's mapping.

    The `custom_fields` table says which column holds which field in the tables users query:
    its pins win over the state's, so a lost or reset dlt state never re-derives a name. Labels
    and definitions fill in only what the state lacks (a renamed option is then detected as
    a change against the labels the loaded rows carry).
    """
    for row in rows:
        key, column = row.get("field_key"), row.get("column_name")
        if not key or not column:
            continue
        entry.pinned[key] = column
        options = [o for o in row.get("options") or [] if isinstance(o, Mapping) and "id" in o]
        field_type = str(row.get("field_type") or "")
        if field_type and key not in entry.known:
            entry.known[key] = FieldDef(
                key=key,
                name=str(row.get("field_name") or ""),
                field_type=field_type,
                options=tuple(FieldOption(o["id"], str(o.get("label") or "")) for o in options),
                is_custom=True,
                is_active=row.get("is_active") is not False,
            ).to_dict()
        if field_type in ("enum", "set") and key not in entry.labels:
            entry.labels[key] = {str(o["id"]): str(o.get("label") or "") for o in options}


def _supersede_retyped(
    entry: FieldState,
    definitions: list[FieldDef],
    previous: list[FieldDef],
    reserved: set[str],
) -> dict[str, list[str]]:
    """Fields whose type changed since the last plan: flag the entity for a full re-read, and
    unpin those whose columns cannot hold the new type (they get new ones; the old columns
    keep their history). Returns field key → columns kept as history."""
    superseded = entry.superseded
    known = {d.key: d for d in previous}
    pinned = entry.pinned
    for field in definitions:
        old = known.get(field.key)
        if not field.is_custom or old is None or old.field_type == field.field_type:
            continue
        entry.flag_reread()
        column = pinned.get(field.key)
        if column is None:
            continue
        others = {
            o.name
            for key, other in pinned.items()
            if key != field.key
            for o in (field_outputs(known[key], other) if key in known else ())
        } | set(pinned.values()) - {column}
        if _fits(old, field, column, others | reserved):
            continue
        history = superseded.setdefault(field.key, [])
        history.extend(o.name for o in field_outputs(old, column) if o.name not in history)
        del pinned[field.key]
    return superseded


def _fits(old: FieldDef, new: FieldDef, column: str, taken: set[str]) -> bool:
    """Can `new` write into the columns `old` wrote as `column`: the same types where names
    meet, and new names that nothing else uses?"""
    old_types = {o.name: o.data_type for o in field_outputs(old, column)}
    for output in field_outputs(new, column):
        if output.name in old_types:
            if old_types[output.name] != output.data_type:
                return False
        elif output.name in taken:
            return False
    return True


def _with_removed_labels(entry: FieldState, plan: ColumnPlan) -> ColumnPlan:
    """Options removed from a definition keep the label last seen: rows loaded before and rows
    read after the removal hold the same text. Updates the remembered labels in `entry`."""
    removed = entry.removed_labels
    previous = entry.labels
    for fp in plan.fields:
        gone = {k: v for k, v in previous.get(fp.field.key, {}).items() if k not in fp.labels}
        if gone:
            removed.setdefault(fp.field.key, {}).update(gone)
    entry.labels = known_labels(plan)
    if not removed:
        return plan
    return ColumnPlan(
        tuple(
            replace(fp, labels={**removed[fp.field.key], **fp.labels})
            if fp.field.key in removed and fp.field.field_type in ("enum", "set")
            else fp
            for fp in plan.fields
        )
    )
