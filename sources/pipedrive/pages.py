"""A page of API records → one typed pyarrow table. Pure: no I/O, no dlt.

Standard columns get the types pinned in `schemas/pipedrive.schema.yaml`; custom fields come
from the column plan (`custom_fields.normalize_page`); keys nobody declared yet (Pipedrive adds
fields over time) land as text so a new API field never breaks a run. Values are converted by
`convert`: one that does not fit its column's type becomes null there and keeps its raw text in
a `<column>__v_text` variant column, the way dlt itself handles type conflicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from .convert import ARROW_TYPES, VARIANT_SUFFIX, as_text, string_array, typed_column
from .custom_fields import ColumnPlan, is_custom_key, normalize_page
from .entities import Api

__all__ = ["TableBatcher", "build_table"]


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
        add(name, string_array([as_text(row.get(name)) for row in rows]))

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
