"""The columnar fast path: a v2 list page's bytes → the table `pages.build_table` would build.

`pyarrow.json` parses the page straight into typed columns (in C++, without the GIL, in the
HTTP client's decode thread while the extract thread works on the previous page); standard and
custom-field columns are then taken from those columns with vectorized casts. Where a
vectorized result could differ from the exact path by a hair, the exact converter runs on the column's values, which arrow
gives back unchanged for strings, integers, booleans and lists of them; only columns whose
arrow form loses information (objects, where a missing member and a null look alike) are
converted from the page's parsed records, parsed once with orjson when first needed.

Values of another JSON type than declared are declined per column (`PageSchema`): the page is
read again without their keys, and those columns alone are converted from the parsed records.
A page is declined (`None`) and takes the exact path only for a custom field or option the
definitions do not know yet (the exact path refreshes them) and for odd envelopes. Every value
goes through the one conversion layer, `convert`. Pure: no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from .convert import ARROW_TYPES, VARIANT_SUFFIX, as_text, cast_strings, string_array, typed_column
from .custom_fields import ColumnPlan, FieldPlan, normalize_v2_field, option_ids, v2_holders
from .http.client import LazyItems, peek_envelope

# the JSON type each kind of value is read as (strings are converted by us, never by arrow)
_READ_TYPES: Mapping[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.string(),
    "date": pa.string(),
    "time": pa.string(),
    "enum": pa.int64(),
    "set": pa.list_(pa.int64()),
}
# arrow types whose `to_pylist()` gives back exactly the values orjson would have parsed
_LOSSLESS = (pa.types.is_null, pa.types.is_string, pa.types.is_int64, pa.types.is_boolean)


class Declined(Exception):
    """The fast path cannot reproduce this page exactly."""


def _lossless(data_type: pa.DataType) -> bool:
    if pa.types.is_list(data_type):
        return _lossless(data_type.value_type) and not pa.types.is_null(data_type.value_type)
    return any(check(data_type) for check in _LOSSLESS)


def parse_schema(standard: Mapping[str, str], plan: ColumnPlan | None) -> PageSchema:
    """How `decode_page` reads the pages of one entity (one per entity and plan in a run)."""
    fields = [
        pa.field(name, _READ_TYPES[dtype])
        for name, dtype in standard.items()
        if dtype in _READ_TYPES
    ]
    custom = None
    if plan is not None:
        custom = [f for f in (_custom_read_field(fp) for fp in plan.fields) if f is not None]
    return PageSchema(fields, custom)


def _custom_read_field(fp: FieldPlan) -> pa.Field | None:
    outputs = fp.v2_outputs
    if not outputs:
        return None
    if outputs[0].mode == "raw":
        read_type = _READ_TYPES.get(outputs[0].kind)
        return None if read_type is None else pa.field(fp.field.key, read_type)
    members: dict[str, pa.DataType] = {}
    for out in outputs:
        if out.mode == "unwrap":
            members["value"] = _READ_TYPES[out.kind]
        elif out.mode == "member":
            members[out.member] = _READ_TYPES[out.kind]
        elif out.mode == "address":
            members["value"] = members["formatted_address"] = pa.string()
    return pa.field(fp.field.key, pa.struct(list(members.items())))


@dataclass(frozen=True)
class Reading:
    """How `pyarrow.json` parses a page: with the explicit schema and other keys inferred
    (`infer`), or, once a page held values of another JSON type than declared, without the
    keys that did and ignoring every key the schema does not declare: the records then give
    whatever is not in the arrow columns (`ColumnarPage.fill_from_rows`)."""

    schema: pa.Schema
    infer: bool


class PageSchema:
    """The explicit schema of an entity's pages, narrowed for the rest of the run to leave out
    the keys that held values of another JSON type than declared (messy accounts have them
    on every page): those columns alone then come from the parsed records, by the exact
    converters, instead of the whole page taking the exact path. Shared by decode threads."""

    def __init__(self, fields: list[pa.Field], custom: list[pa.Field] | None) -> None:
        self.fields = fields
        self.custom = custom
        self.messy: frozenset[str] = frozenset()  # standard keys left out
        self.messy_custom: frozenset[str] = frozenset()  # custom field keys left out
        self.reading = Reading(self._schema(fields, custom, envelope=False), infer=True)
        self._lock = threading.Lock()

    @staticmethod
    def _schema(fields: list[pa.Field], custom: list[pa.Field] | None, envelope: bool) -> pa.Schema:
        record = list(fields)
        if custom is not None:
            record.append(pa.field("custom_fields", pa.struct(custom)))
        top = [pa.field("success", pa.bool_())] if envelope else []
        return pa.schema([*top, pa.field("data", pa.list_(pa.struct(record)))])

    def narrowed(self, rows: list[Any]) -> Reading:
        """The reading without every key whose values in `rows` arrow cannot take as declared,
        undeclared keys ignored; remembered for the pages still to come."""
        with self._lock:
            messy = self.messy | {f.name for f in self.fields if not _column_fits(rows, f)}
            messy_custom = self.messy_custom
            if self.custom is not None:
                holders = [row.get("custom_fields") for row in rows]
                if not all(h is None or type(h) is dict for h in holders):
                    messy |= {"custom_fields"}
                else:
                    values = [h or _EMPTY for h in holders]
                    messy_custom |= {f.name for f in self.custom if not _column_fits(values, f)}
            if self.reading.infer or messy != self.messy or messy_custom != self.messy_custom:
                fields = [f for f in self.fields if f.name not in messy]
                custom = None
                if self.custom is not None and "custom_fields" not in messy:
                    custom = [f for f in self.custom if f.name not in messy_custom]
                self.messy, self.messy_custom = messy, messy_custom
                self.reading = Reading(self._schema(fields, custom, envelope=True), infer=False)
            return self.reading


_EMPTY: Mapping[str, Any] = {}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _column_fits(rows: list[Any], field: pa.Field) -> bool:
    """Whether arrow reads every row's value of `field` as its declared type."""
    name, data_type = field.name, field.type
    return all(_fits(row.get(name), data_type) for row in rows)


def _fits(value: Any, data_type: pa.DataType) -> bool:
    if value is None:
        return True
    kind = type(value)
    if pa.types.is_string(data_type):
        return kind is str
    if pa.types.is_int64(data_type):
        return kind is int and _INT64_MIN <= value <= _INT64_MAX
    if pa.types.is_float64(data_type):
        return kind is int or kind is float
    if pa.types.is_boolean(data_type):
        return kind is bool
    if pa.types.is_list(data_type):
        return kind is list and all(_fits(item, data_type.value_type) for item in value)
    if pa.types.is_struct(data_type):
        return kind is dict and all(_fits(value.get(f.name), f.type) for f in data_type)
    return False


class ColumnarPage(LazyItems):
    """Records as one arrow struct array, plus the page bodies for the exact path.

    `fill_from_rows`: the page was read without some keys (`Reading`); every column the arrow
    records lack is then taken from the parsed records.
    """

    def __init__(
        self,
        records: pa.StructArray,
        *contents: bytes,
        reading: Reading | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        self.records = records
        self.contents = contents
        self.reading = reading
        self._rows = rows

    @property
    def fill_from_rows(self) -> bool:
        return self.reading is not None and not self.reading.infer

    def __len__(self) -> int:
        return len(self.records)

    def rows(self) -> list[dict[str, Any]]:
        """The records as orjson parses them (for the exact path), parsed once."""
        if self._rows is None:
            self._rows = [row for body in self.contents for row in orjson.loads(body)["data"]]
        return self._rows

    @classmethod
    def joined(cls, parts: Sequence[LazyItems]) -> ColumnarPage | None:
        """Consecutive pages as one, so that arrow's per-call cost is paid once for all of
        them (converting 10 pages together is about 4 times cheaper than one by one).

        A key only null on some pages is typed null there and takes the other pages' type;
        None when a part is not columnar, the pages were read differently (`Reading`) or the
        types really differ (left to each page).
        """
        pages = [part for part in parts if isinstance(part, ColumnarPage)]
        if len(pages) != len(parts):
            return None
        narrowed = {id(page.reading) for page in pages if page.fill_from_rows}
        if narrowed and (len(narrowed) > 1 or not all(page.fill_from_rows for page in pages)):
            return None  # the records lack different keys
        if len({page.records.type for page in pages}) == 1:
            records = pa.concat_arrays([page.records for page in pages])
        elif narrowed:
            return None  # one narrowed reading gives every page the same type
        else:
            try:
                table = pa.concat_tables(
                    [pa.Table.from_struct_array(page.records) for page in pages],
                    promote_options="default",  # null → the other type, nothing else
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return None
            records = table.to_struct_array().combine_chunks()
        contents = (body for page in pages for body in page.contents)
        return cls(records, *contents, reading=pages[0].reading)


def _read(content: bytes, reading: Reading) -> pa.Table | None:
    try:
        return pa_json.read_json(
            pa.BufferReader(content),  # not a Python file object: parses without the GIL
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(content) + 1),
            parse_options=pa_json.ParseOptions(
                explicit_schema=reading.schema,
                unexpected_field_behavior="infer" if reading.infer else "ignore",
            ),
        )
    except (pa.ArrowException, ValueError):
        return None


def _records(content: bytes) -> list[Any] | None:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    data = body.get("data") if type(body) is dict else None
    if type(data) is not list or not all(type(row) is dict for row in data):
        return None
    return data


def decode_page(content: bytes, schema: PageSchema) -> dict[str, Any] | None:
    """The envelope of a list page with its records as a `ColumnarPage`; None to decline.

    `content` has been through `http.jsonbody.clean` (no lone surrogates, no NUL). A page that
    arrow cannot read as declared is read again without the keys that hold values of another
    JSON type (`PageSchema.narrowed`), and so are the pages after it.
    """
    reading = schema.reading
    rows = None
    table = _read(content, reading)
    if table is None:
        rows = _records(content)
        if rows is None:
            return None
        reading = schema.narrowed(rows)
        table = _read(content, reading)
    if table is None or table.num_rows != 1 or "data" not in table.column_names:
        return None
    body = _envelope(table, content, reading)
    if body is None or body.get("success", True) is not True:
        return None
    data = table.column("data").combine_chunks()
    if data.null_count or not pa.types.is_struct(data.type.value_type):
        return None
    records = data.flatten()
    if records.null_count:
        return None
    body["data"] = ColumnarPage(records, content, reading=reading, rows=rows)
    return body


def _envelope(table: pa.Table, content: bytes, reading: Reading) -> dict[str, Any] | None:
    body: dict[str, Any] = {}
    for name in ("success", "additional_data"):
        if name in table.column_names:
            body[name] = table.column(name).to_pylist()[0]
    if not reading.infer:  # `additional_data` was not parsed: read it from the body's end
        tail = peek_envelope(content)
        if tail is not None:
            body.update(tail)
        elif b'"additional_data"' in content:
            return None  # somewhere else than at the end
    return body


def _struct_children(array: pa.Array) -> dict[str, pa.Array]:
    """Child arrays of a struct array with the parent's nulls applied."""
    if not pa.types.is_struct(array.type):
        return {}
    return {array.type.field(i).name: child for i, child in enumerate(array.flatten())}


def build_columnar(
    page: ColumnarPage,
    standard: Mapping[str, str],
    plan: ColumnPlan | None,
    constants: Mapping[str, Any] | None = None,
    deleted_options: Mapping[str, list[str]] | None = None,
) -> pa.Table | None:
    """The page's table, equal to `pages.build_table(rows, ...)`; None to decline."""
    try:
        return _Builder(page, standard, plan, constants or {}, deleted_options or {}).table()
    except Declined:
        return None


class _Builder:
    def __init__(
        self,
        page: ColumnarPage,
        standard: Mapping[str, str],
        plan: ColumnPlan | None,
        constants: Mapping[str, Any],
        deleted: Mapping[str, list[str]],
    ) -> None:
        self.page = page
        self.n = len(page)
        self.standard = standard
        self.plan = plan
        self.constants = constants
        self.deleted = deleted
        self.columns = _struct_children(page.records)
        self.names: list[str] = []
        self.arrays: list[pa.Array] = []
        self._holders: list[Mapping[str, Any]] | None = None

    def add(self, name: str, array: pa.Array, variant: Any = None) -> None:
        self.names.append(name)
        self.arrays.append(array)
        if variant is not None:
            self.names.append(name + VARIANT_SUFFIX)
            if not isinstance(variant, pa.Array):
                variant = pa.array(variant, pa.string())
            self.arrays.append(variant)

    def from_rows(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.page.rows()]

    def table(self) -> pa.Table:
        for name, dtype in self.standard.items():
            if name not in self.constants:
                self.add(name, *self.standard_column(name, dtype))
        skip = set(self.standard) | set(self.constants) | {"custom_fields"}
        if self.page.fill_from_rows:  # undeclared keys were not parsed by arrow
            rows = self.page.rows()
            for name in sorted(set().union(*rows) - skip if rows else ()):
                self.add(name, string_array([as_text(v) for v in self.from_rows(name)]))
        for name in sorted(set(self.columns) - skip):
            array = self.columns[name]
            if pa.types.is_string(array.type):
                self.add(name, array)
            elif _lossless(array.type):
                self.add(name, string_array([as_text(v) for v in array.to_pylist()]))
            else:
                self.add(name, string_array([as_text(v) for v in self.from_rows(name)]))
        if self.plan is not None:
            self.custom_columns(self.plan)
        for name, value in self.constants.items():
            dtype = self.standard.get(name, "text")
            self.add(name, pa.array([value] * self.n, ARROW_TYPES[dtype]))
        return pa.Table.from_arrays(self.arrays, names=self.names)

    def standard_column(self, name: str, dtype: str) -> tuple[pa.Array, pa.Array | None]:
        array = self.columns.get(name)
        if array is None:
            if self.page.fill_from_rows:  # left out of the reading: the records have it
                return typed_column(self.from_rows(name), dtype)
            return typed_column([None] * self.n, dtype)
        target = ARROW_TYPES[dtype]
        if array.type == target and dtype != "json":  # json columns hold JSON text
            return array, None
        if pa.types.is_null(array.type):
            return pa.nulls(self.n, target), None
        cast = cast_strings(array, dtype)
        if cast is not None:
            return cast, None
        values = array.to_pylist() if _lossless(array.type) else self.from_rows(name)
        return typed_column(values, dtype)

    def custom_columns(self, plan: ColumnPlan) -> None:
        holder = self.columns.get("custom_fields")
        fields = _struct_children(holder) if holder is not None else {}
        present = set(fields)
        if self.page.fill_from_rows:  # the reading ignored keys it does not declare
            present = set().union(*self.custom_holders())
        planned = {fp.field.key for fp in plan.fields}
        if present - planned:
            raise Declined("a custom field the definitions do not know")  # refresh them
        for fp in plan.fields:
            raw = fields.get(fp.field.key)
            if raw is None and self.page.fill_from_rows:
                self.custom_field_from_rows(fp)
            else:
                self.custom_field(fp, raw)

    def custom_holders(self) -> list[Mapping[str, Any]]:
        """Each record's `custom_fields` object (empty where it has none), read once."""
        if self._holders is None:
            self._holders = v2_holders(self.page.rows())
        return self._holders

    def custom_field_from_rows(self, fp: FieldPlan) -> None:
        """A field left out of the reading: the exact converters on its values alone."""
        raw = [cf.get(fp.field.key) for cf in self.custom_holders()]
        if fp.field.field_type in ("enum", "set") and fp.field.is_active:
            known = set(fp.labels) | set(self.deleted.get(fp.field.key, ()))
            present = {option for value in raw if value is not None for option in option_ids(value)}
            if not present <= known:
                raise Declined("an option the definitions do not know")
        exact = normalize_v2_field(fp, raw)
        for out in fp.v2_outputs:
            self.add(out.name, exact[out.name], exact.get(out.name + VARIANT_SUFFIX))

    def custom_field(self, fp: FieldPlan, raw: pa.Array | None) -> None:
        outputs = fp.v2_outputs
        if raw is None or pa.types.is_null(raw.type):
            for out in outputs:
                self.add(out.name, *out.convert([None] * self.n))
            return
        members = _struct_children(raw)
        exact: dict[str, pa.Array] | None = None
        for out in outputs:
            if out.mode == "raw":
                values = raw
            elif out.mode == "unwrap":
                values = members.get("value", pa.nulls(self.n))
            elif out.mode == "member":
                values = members.get(out.member, pa.nulls(self.n))
            else:
                values = pc.coalesce(
                    members.get("value", pa.nulls(self.n, pa.string())),
                    members.get("formatted_address", pa.nulls(self.n, pa.string())),
                )
            if out.kind in ("enum", "set") and fp.field.is_active:
                self.check_options(fp, values)
            converted = _convert(out.kind, values, fp)
            if converted is not None:
                self.add(out.name, converted)
            elif _lossless(values.type) or (
                out.kind == "double" and pa.types.is_float64(values.type)
            ):
                self.add(out.name, *out.convert(values.to_pylist()))
            else:  # only the parsed records hold the exact values
                if exact is None:
                    raw_values = [cf.get(fp.field.key) for cf in self.custom_holders()]
                    exact = normalize_v2_field(fp, raw_values)
                self.add(out.name, exact[out.name], exact.get(out.name + VARIANT_SUFFIX))

    def check_options(self, fp: FieldPlan, values: pa.Array) -> None:
        """Decline a page holding an option id the definitions do not know (as the exact
        path does, to refresh them); ids remembered as deleted options are known."""
        if pa.types.is_list(values.type):
            values = pc.list_flatten(values)
        if pa.types.is_null(values.type):
            return
        if not pa.types.is_int64(values.type):
            raise Declined("option ids that are not integers")  # the exact path parses them
        known = set(fp.labels) | set(self.deleted.get(fp.field.key, ()))
        present = {str(v) for v in pc.unique(values.drop_null()).to_pylist()}
        if present - known:
            raise Declined("an option the definitions do not know")


def _convert(kind: str, values: pa.Array, fp: FieldPlan) -> pa.Array | None:
    """Vectorized conversion where it is exactly what the exact converter gives, else None."""
    if kind in ("text", "double", "bigint", "bool") and values.type == ARROW_TYPES[kind]:
        return values
    if not (values.null_count < len(values)):
        return None  # all null: the exact converter gives the typed nulls cheaply
    if kind in ("date", "time"):
        return cast_strings(values, kind)
    if kind == "enum" and pa.types.is_int64(values.type):
        keys, labels = _option_arrays(fp, lambda label: label)
        found = labels.take(pc.index_in(values, value_set=keys))
        return pc.coalesce(found, values.cast(pa.string()))  # unknown: a deleted option's id
    if kind == "set" and values.type == pa.list_(pa.int64()):
        return _label_lists(values, fp)
    return None


def _option_arrays(fp: FieldPlan, render: Any) -> tuple[pa.Array, pa.Array]:
    """Integer option ids and their rendered labels, first id spelling wins (as `_Labels`)."""
    by_int: dict[int, Any] = {}
    for key, label in fp.labels.items():
        if key.lstrip("-").isdigit():
            by_int.setdefault(int(key), render(label))
    return pa.array(list(by_int), pa.int64()), pa.array(list(by_int.values()), pa.string())


def _label_lists(values: pa.Array, fp: FieldPlan) -> pa.Array | None:
    """A set's ids → the JSON array text of their labels (deleted ids as their text)."""
    flat = pc.list_flatten(values)
    if flat.null_count:
        return None
    try:
        keys, quoted = _option_arrays(fp, lambda label: orjson.dumps(label).decode())
    except orjson.JSONEncodeError:
        return None
    found = quoted.take(pc.index_in(flat, value_set=keys))
    unknown = pc.binary_join_element_wise('"', flat.cast(pa.string()), '"', "")
    items = pc.coalesce(found, unknown)
    lengths = pc.fill_null(pc.list_value_length(values), 0)
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cumulative_sum(lengths).cast(pa.int32())]
    )
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, items), ",")
    text = pc.binary_join_element_wise("[", joined, "]", "")
    return pc.if_else(pc.greater(lengths, 0), text, pa.nulls(len(values), pa.string()))
