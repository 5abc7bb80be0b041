"""Readable labels next to the option ids of standard fields, and a lead's value as columns.

Pipedrive's `*Fields` definitions give the options of some standard fields too: a deal's,
person's or organization's labels (`label_ids`, several per record), who may see a record
(`visible_to`), a deal's marketing channel, an organization's industry, an activity's priority,
a product's category… Each such id column gets a label column beside it, with the same rule
as enum and set custom fields: one label (`<column>_label`, text) or a JSON array of labels
(`label_ids` → `labels`, json); an id the definitions do not know (a deleted option) is kept as
its id. Where the definitions give no options, another list does: a lead's labels come from
`/v1/leadLabels`, an activity's type from `/v1/activityTypes`.

Labels are added to the tables the converters built (`add_labels`), so both page paths get
them alike. A renamed option is rewritten in the rows already loaded through the custom
fields' label-change rows (`catalog`), so label columns always show the current label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .convert import per_distinct
from .custom_fields import FieldDef
from .schema import standard_types

# option fields whose ids are readable already (a deal's status is `open`, `won`…)
READABLE = frozenset({"status"})
MULTI_TYPES = frozenset({"set"})
OPTION_TYPES = frozenset({"enum", "set", "visible_to", "status", "billing_frequency"})


@dataclass(frozen=True)
class OptionLabels:
    """The label column of one id column: which labels its option ids stand for."""

    source: str  # the id column
    column: str  # the label column beside it
    multi: bool  # several ids (a JSON array) → a JSON array of labels
    labels: Mapping[str, str]  # option id as text → label

    @property
    def field_type(self) -> Literal["enum", "set"]:
        """enum or set, as the label-change rows name the kinds of label columns."""
        return "set" if self.multi else "enum"

    def hint(self) -> dict[str, Any]:
        kind = "json" if self.multi else "text"
        return {"name": self.column, "data_type": kind, "nullable": True}


def label_column(source: str, multi: bool) -> str:
    """`label_ids` → `labels`; `visible_to` → `visible_to_label`; `tags` (multi) → `tags_labels`."""
    if multi:
        return source[: -len("_ids")] + "s" if source.endswith("_ids") else f"{source}_labels"
    return f"{source}_label"


def from_definitions(
    definitions: Iterable[FieldDef], standard: Mapping[str, str]
) -> list[OptionLabels]:
    """Label columns of the standard option fields of an entity whose table has `standard`
    columns (name → dlt type); custom fields are the column plan's."""
    found: dict[str, OptionLabels] = {}
    for field in definitions:
        kind = field.field_type
        if field.is_custom or not field.options or kind not in OPTION_TYPES:
            continue
        if field.key in READABLE or field.key not in standard or field.key in found:
            continue
        if standard[field.key] == "bool":  # a note's pinned flags: true/false says it all
            continue
        multi = kind in MULTI_TYPES
        column = label_column(field.key, multi)
        if column in standard:
            continue
        labels: dict[str, str] = {}
        for option in field.options:
            labels.setdefault(str(option.id), option.label)
        found[field.key] = OptionLabels(field.key, column, multi, labels)
    return list(found.values())


@dataclass(frozen=True)
class OptionList:
    """Another list that names an id column's options, when the definitions give none."""

    entity: str  # the entity whose list it is
    id_key: str  # what the id column holds
    label_key: str  # the label
    multi: bool


# entity → id column → the list naming its options
OPTION_LISTS: Mapping[str, Mapping[str, OptionList]] = {
    "leads": {"label_ids": OptionList("lead_labels", "id", "name", multi=True)},
    "activities": {"type": OptionList("activity_types", "key_string", "name", multi=False)},
}


def from_list(source: str, rows: Iterable[Mapping[str, Any]], spec: OptionList) -> OptionLabels:
    """Label column of an id column whose options are another list's rows (lead labels…)."""
    labels: dict[str, str] = {}
    for row in rows:
        key, label = row.get(spec.id_key), row.get(spec.label_key)
        if key is not None and label is not None:
            labels.setdefault(str(key), str(label))
    return OptionLabels(source, label_column(source, spec.multi), spec.multi, labels)


def default_label_columns(entity: Any, definitions: Iterable[FieldDef]) -> set[str]:
    """The label columns an entity's standard option fields get: no custom field takes them."""
    standard = standard_types(entity.name)
    columns = {o.column for o in from_definitions(definitions, standard)}
    for source, spec in OPTION_LISTS.get(entity.name, {}).items():
        if source in standard:
            columns.add(label_column(source, spec.multi))
    return columns


def avoiding(labels: OptionLabels, taken: set[str]) -> OptionLabels:
    """`labels` under another column name when a custom field's column has its name (pinned
    by an earlier version)."""
    column = labels.column
    while column in taken:
        column = f"{column}_option"
    return replace(labels, column=column)


def add_labels(table: pa.Table, columns: Sequence[OptionLabels]) -> pa.Table:
    """`table` with each label column set beside its id column (replaced when present)."""
    for labels in columns:
        if labels.source not in table.column_names:
            continue
        values = table[labels.source].combine_chunks()
        array = _multi(values, labels) if labels.multi else _single(values, labels)
        if labels.column in table.column_names:
            table = table.drop_columns([labels.column])
        position = table.column_names.index(labels.source) + 1
        table = table.add_column(position, labels.column, array)
    return table


def unknown_ids(
    table: pa.Table, columns: Sequence[OptionLabels], ignored: Mapping[str, Iterable[str]]
) -> dict[str, set[str]]:
    """Label column → the ids in `table` that are none of its known options (one added since
    the definitions were read, or deleted), except the `ignored` ones."""
    found: dict[str, set[str]] = {}
    for labels in columns:
        if labels.source not in table.column_names:
            continue
        values = _as_text(table[labels.source].combine_chunks())
        if labels.multi:
            ids = {i for text in pc.unique(values).to_pylist() for i in _ids(text)}
        else:
            ids = {v for v in pc.unique(values).to_pylist() if v is not None}
        unknown = ids - set(labels.labels) - set(ignored.get(labels.column, ()))
        if unknown:
            found[labels.column] = unknown
    return found


def _as_text(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    if pa.types.is_floating(values.type):  # 3.0 → "3", as Pipedrive writes option ids
        whole = pc.equal(values, pc.trunc(values))
        as_int = pc.cast(pc.if_else(whole, values, None), pa.int64(), safe=False)
        return pc.if_else(whole, pc.cast(as_int, pa.string()), pc.cast(values, pa.string()))
    return pc.cast(values, pa.string())


def _single(values: pa.Array, labels: OptionLabels) -> pa.Array:
    """One label per id: known ids → their label, unknown ones → the id, null → null."""
    ids = _as_text(values)
    keys = pa.array(list(labels.labels), pa.string())
    names = pa.array(list(labels.labels.values()), pa.string())
    found = pc.take(names, pc.index_in(ids, value_set=keys))
    return pc.coalesce(found, ids)


def _multi(values: pa.Array, labels: OptionLabels) -> pa.Array:
    """A JSON array of labels per JSON array of ids; an empty or null list → null."""

    def named(texts: list[Any]) -> tuple[pa.Array, None]:
        out: list[str | None] = []
        for text in texts:
            ids = _ids(text)
            out.append(
                orjson.dumps([labels.labels.get(i, i) for i in ids]).decode() if ids else None
            )
        return pa.array(out, pa.string()), None

    return per_distinct(named, _as_text(values))[0]


def _ids(text: Any) -> list[str]:
    """Option ids of a JSON array (or a comma-separated text) as text."""
    if text is None:
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = [part for part in str(text).split(",") if part.strip()]
    if not isinstance(value, list):
        value = [value]
    ids = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("id")
        if item is None:
            continue
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        ids.append(str(item).strip())
    return ids


# -- a lead's value -----------------------------------------------------------------------------
LEAD_VALUE_COLUMNS = {"value_amount": "double", "value_currency": "text"}


def add_lead_value(table: pa.Table) -> pa.Table:
    """A lead's `value` ({"amount", "currency"}, JSON) also as `value_amount` and
    `value_currency` columns, right after it."""
    if "value" not in table.column_names:
        return table
    amounts: list[float | None] = []
    currencies: list[str | None] = []
    for text in table["value"].to_pylist():
        value = _object(text)
        amount = value.get("amount")
        if isinstance(amount, int | float) and not isinstance(amount, bool):
            amounts.append(float(amount))
        else:
            amounts.append(None)
        currency = value.get("currency")
        currencies.append(currency if isinstance(currency, str) else None)
    table = table.drop_columns([c for c in LEAD_VALUE_COLUMNS if c in table.column_names])
    position = table.column_names.index("value") + 1
    table = table.add_column(position, "value_currency", pa.array(currencies, pa.string()))
    return table.add_column(position, "value_amount", pa.array(amounts, pa.float64()))


def _object(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str | bytes):
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
