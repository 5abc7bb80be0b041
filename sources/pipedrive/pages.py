"""A page of API records → one typed pyarrow table. Pure: no I/O, no dlt.

Standard columns get the types pinned in `schemas/pipedrive.schema.yaml`; custom fields come
from the column plan (`custom_fields.normalize_page`); keys nobody declared yet (Pipedrive adds
fields over time) land as text so a new API field never breaks a run. A value that does not fit
its column's type becomes null there and keeps its raw text in a `<column>__v_text` variant
column, the way dlt itself handles type conflicts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
import pyarrow as pa

from .custom_fields import ColumnPlan, is_custom_key, normalize_page
from .entities import Api

TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES: Mapping[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TIMESTAMP,
    "date": pa.date32(),
    "time": pa.time64("us"),
    "json": pa.string(),
}
VARIANT_SUFFIX = "__v_text"


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value).decode()


def as_text(value: Any) -> str | None:
    """A value for a text column: strings as they are, anything else as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(value, default=str)


def _parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(value)
    parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    if parsed.tzinfo is None:  # v1 writes "YYYY-MM-DD HH:MM:SS", which Pipedrive means as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _parse_date(value: Any) -> date:
    if not isinstance(value, str):
        raise TypeError(value)
    return date.fromisoformat(value.strip()[:10])


def _parse_time(value: Any) -> time:
    if not isinstance(value, str):
        raise TypeError(value)
    return time.fromisoformat(value.strip())


_INT64 = range(-(2**63), 2**63)


def _parse_number(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, str):
            value = float(value)
        if not isinstance(value, int | float):
            raise TypeError(value)
        if kind is not int:
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)  # also inf and nan
        number = int(value)
        if number not in _INT64:
            raise OverflowError(value)
        return number

    return parse


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1"):
        return bool(int(value))
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError(value)


_PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "bigint": _parse_number(int),
    "double": _parse_number(float),
    "bool": _parse_bool,
    "timestamp": _parse_timestamp,
    "date": _parse_date,
    "time": _parse_time,
}


def _slow_column(values: list[Any], data_type: str) -> tuple[pa.Array, pa.Array | None]:
    """Value-by-value conversion: the typed column plus a variant column for what did not fit."""
    parse = _PARSERS[data_type]
    typed: list[Any] = []
    variants: list[str | None] = []
    for value in values:
        if value is None:
            typed.append(None)
            variants.append(None)
            continue
        try:
            typed.append(parse(value))
            variants.append(None)
        except (TypeError, ValueError, OverflowError):
            typed.append(None)
            variants.append(as_text(value))
    variant = None
    if any(v is not None for v in variants):
        variant = pa.array(variants, pa.string())
    return pa.array(typed, ARROW_TYPES[data_type]), variant


def typed_column(values: list[Any], data_type: str) -> tuple[pa.Array, pa.Array | None]:
    """Convert one column's values; returns (typed array, variant array or None)."""
    if data_type == "json":
        return pa.array([_json_text(v) for v in values], pa.string()), None
    if data_type == "text":
        try:
            return pa.array(values, pa.string()), None
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([as_text(v) for v in values], pa.string()), None
    target = ARROW_TYPES[data_type]
    if data_type in ("timestamp", "date"):
        try:
            raw = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return _slow_column(values, data_type)
        if raw.type == pa.null():
            return pa.nulls(len(values), target), None
        if pa.types.is_string(raw.type):
            try:
                return raw.cast(target), None
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        return _slow_column(values, data_type)
    if data_type == "time":
        return _slow_column(values, data_type)
    try:
        return pa.array(values, target), None
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _slow_column(values, data_type)


def build_table(
    rows: Sequence[Mapping[str, Any]],
    standard: Mapping[str, str],
    plan: ColumnPlan | None,
    shape: Api,
    constants: Mapping[str, Any] | None = None,
) -> pa.Table:
    """One pyarrow table for a page: standard, then undeclared, then custom-field columns.

    `standard` maps column name → dlt data type; `constants` are columns set to one value
    (e.g. `is_archived` for the archived-deals stream).
    """
    names: list[str] = []
    arrays: list[pa.Array] = []
    constants = constants or {}

    def add(name: str, array: pa.Array, variant: pa.Array | None = None) -> None:
        names.append(name)
        arrays.append(array)
        if variant is not None:
            names.append(name + VARIANT_SUFFIX)
            arrays.append(variant)

    for name, data_type in standard.items():
        if name in constants:
            continue
        add(name, *typed_column([row.get(name) for row in rows], data_type))

    skip = set(standard) | set(constants) | {"custom_fields"}
    seen: set[str] = set().union(*rows) if rows else set()
    if shape is Api.V1:  # flat custom-field keys (and fields unknown to the plan) are not columns
        skip |= {key for key in seen if is_custom_key(key)}
    for name in sorted(seen - skip):
        add(name, pa.array([as_text(row.get(name)) for row in rows], pa.string()))

    if plan is not None:
        for name, array in normalize_page(rows, plan, shape).items():
            add(name, array)

    for name, value in constants.items():
        data_type = standard.get(name, "text")
        add(name, pa.array([value] * len(rows), ARROW_TYPES[data_type]))

    return pa.Table.from_arrays(arrays, names=names)


class TableBatcher:
    """Collects page tables into bigger ones: dlt's cost per yielded item is high and fixed."""

    def __init__(self, max_rows: int = 10_000) -> None:
        self.max_rows = max_rows
        self._tables: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> pa.Table | None:
        """Add a page; returns a batch when enough rows have accumulated."""
        self._tables.append(table)
        self._rows += table.num_rows
        return self.flush() if self._rows >= self.max_rows else None

    def flush(self) -> pa.Table | None:
        """Everything collected so far as one table (None if nothing)."""
        if not self._tables:
            return None
        tables, self._tables, self._rows = self._tables, [], 0
        if len(tables) == 1:
            return tables[0]
        return pa.concat_tables(tables, promote_options="default")
