"""The columnar fast path: a v2 list page's bytes → the table `pages.build_table` would build.

`pyarrow.json` parses the page straight into typed columns (in C++, without the GIL, in the
HTTP client's decode thread while the extract thread works on the previous page); standard and
custom-field columns are then taken from those columns with vectorized casts. Where a
vectorized result could differ from the exact path by a hair, the exact converter runs on the column's values, which arrow
gives back unchanged for strings, integers, booleans and lists of them; only columns whose
arrow form loses information (objects, where a missing member and a null look alike) are
converted from the page's parsed records, parsed once with orjson when first needed.

Values of another JSON type than declared are declined per column (`PageSchema`): the page is
read again without their keys, and those columns alone are converted from their values, which
msgspec cuts out of the page as raw JSON (skipping everything else in C) and orjson parses
column by column (`LeftOut`); the page is parsed whole only when that cannot give what the
parsed records would.
A page is declined (`None`) and takes the exact path only for a custom field or option the
definitions do not know yet (the exact path refreshes them) and for odd envelopes. Every value
goes through the one conversion layer, `convert`. Pure: no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from types import GenericAlias
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from .convert import (
    ARROW_TYPES,
    VARIANT_SUFFIX,
    as_text,
    cast_strings,
    convert,
    per_distinct,
    string_array,
    typed_column,
)
from .custom_fields import ColumnPlan, FieldPlan, normalize_v2_field, option_ids, v2_holders
from .http.client import PageItems, peek_envelope

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
    planned = None
    if plan is not None:
        custom = [f for f in (_custom_read_field(fp) for fp in plan.fields) if f is not None]
        planned = tuple(fp.field.key for fp in plan.fields)
    return PageSchema(fields, custom, tuple(standard), planned)


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
    keys that did and ignoring every key the schema does not declare: `left_out` then reads
    whatever is not in the arrow columns from the page (`ColumnarPage.left_out`)."""

    schema: pa.Schema
    infer: bool
    left_out: LeftOut | None = None


@dataclass
class RecordValues:
    """What a narrowed reading leaves out of the arrow columns, one value per record, as the
    parsed records hold it (None where a key is missing): the standard keys arrow did not
    read, the planned custom fields it did not read, the undeclared keys some record has,
    and whether a record holds a custom field the plan does not know."""

    count: int
    standard: dict[str, list[Any]]
    custom: dict[str, list[Any]]
    undeclared: dict[str, list[Any]] = field(default_factory=dict)
    unknown_custom: bool = False

    @classmethod
    def concat(cls, parts: Sequence[RecordValues]) -> RecordValues:
        """The values of consecutive pages read with one `LeftOut`, as one."""
        undeclared = sorted({name for part in parts for name in part.undeclared})
        return cls(
            sum(part.count for part in parts),
            _concat(parts, "standard", parts[0].standard),
            _concat(parts, "custom", parts[0].custom),
            _concat(parts, "undeclared", undeclared),
            any(part.unknown_custom for part in parts),
        )


def _concat(
    parts: Sequence[RecordValues], member: str, names: Iterable[str]
) -> dict[str, list[Any]]:
    joined: dict[str, list[Any]] = {}
    for name in names:
        values: list[Any] = []
        for part in parts:
            values += getattr(part, member).get(name) or [None] * part.count
        joined[name] = values
    return joined


_MISSING = msgspec.Raw(b"")  # a key the record does not have
_NULL = b"null"


class LeftOut:
    """Reads the values of the keys a narrowed reading leaves out (`RecordValues`) from a
    page's bytes: msgspec skips every other value in C and keeps each wanted value's raw
    JSON, and orjson parses them a column at a time, so that they are exactly what parsing
    the page gives. Every key a record may hold is declared (a raw value is cheap), so that an
    undeclared key or a custom field the plan does not know is noticed: such a page, a
    `custom_fields` that is not an object and anything else msgspec rejects are parsed whole
    instead (`from_rows`). Keys are declared in `order` (the order a record of the entity's
    pages holds them), which msgspec matches fastest; any order reads the same values."""

    def __init__(
        self,
        standard: Sequence[str],
        declared: Sequence[str],
        custom: Sequence[str] | None,
        planned: Sequence[str] | None,
        undeclared: Iterable[str] = (),
        order: KeyOrder | None = None,
    ) -> None:
        order = order or KeyOrder()
        self.standard = tuple(standard)  # read from the records
        self.custom = tuple(custom or ())
        self.declared = frozenset(declared) | {"custom_fields"}
        self.planned = None if planned is None else frozenset(planned)
        self.undeclared = tuple(sorted(set(undeclared) - self.declared))
        self.record_keys = record_keys = order.arrange(
            [*self.declared, *self.undeclared], order.record
        )
        holder: Any = msgspec.Raw
        self.custom_keys = custom_keys = order.arrange(self.planned or (), order.custom)
        if planned is not None:
            holder = _struct("CustomFields", custom_keys) | None
        record = _struct("Record", record_keys, {"custom_fields": holder})
        page = msgspec.defstruct("Page", [("data", GenericAlias(list, (record,)))])
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(page)
        self._holder = attrgetter(_attr(record_keys, "custom_fields"))
        self._standard = [(key, attrgetter(_attr(record_keys, key))) for key in self.standard]
        self._undeclared = [(key, attrgetter(_attr(record_keys, key))) for key in self.undeclared]
        self._custom = [(key, attrgetter(_attr(custom_keys, key))) for key in self.custom]

    def read(self, content: bytes, count: int) -> RecordValues | None:
        """The values from the page's bytes; None where only the parsed records give them."""
        try:
            records = self._decoder.decode(content).data
        except msgspec.DecodeError:
            return None
        if len(records) != count:
            return None
        holders = list(map(self._holder, records))
        try:
            standard = {key: _parsed(map(get, records)) for key, get in self._standard}
            custom = {
                key: _parsed(_NULL if h is None else get(h) for h in holders)
                for key, get in self._custom
            }
            undeclared = {}
            for key, get in self._undeclared:
                raws = list(map(get, records))
                if any(raws):
                    undeclared[key] = _parsed(raws)
        except orjson.JSONDecodeError:
            return None
        return RecordValues(count, standard, custom, undeclared)

    def from_rows(self, rows: list[dict[str, Any]]) -> RecordValues:
        """The values from the page's parsed records."""
        holders = v2_holders(rows) if self.planned is not None else []
        present = set().union(*holders) if holders else set()
        undeclared = sorted(set().union(*rows) - self.declared) if rows else []
        return RecordValues(
            len(rows),
            {key: [row.get(key) for row in rows] for key in self.standard},
            {key: [h.get(key) for h in holders] for key in self.custom},
            {key: [row.get(key) for row in rows] for key in undeclared},
            self.planned is not None and not present <= self.planned,
        )


def _keys(rows: list[Any], declared: Iterable[str]) -> frozenset[str]:
    """The keys of `rows` outside `declared` (and `custom_fields`)."""
    return (
        frozenset(set().union(*rows) - set(declared) - {"custom_fields"}) if rows else frozenset()
    )


def _attr(keys: Sequence[str], key: str) -> str:
    return f"k{keys.index(key)}"


def _struct(name: str, keys: Sequence[str], kinds: Mapping[str, Any] | None = None) -> Any:
    """A msgspec struct of the values of `keys`, in that order, every other key refused: raw
    JSON (empty where missing), or the type `kinds` gives a key (None where missing)."""
    kinds = kinds or {}
    fields: list[tuple[str, Any, Any]] = [
        (f"k{i}", kinds[key], None) if key in kinds else (f"k{i}", msgspec.Raw, _MISSING)
        for i, key in enumerate(keys)
    ]
    rename = {f"k{i}": key for i, key in enumerate(keys)}
    return msgspec.defstruct(name, fields, rename=rename, forbid_unknown_fields=True, gc=False)


@dataclass(frozen=True)
class KeyOrder:
    """The order of a record's keys and of its custom fields, as a page held them."""

    record: tuple[str, ...] = ()
    custom: tuple[str, ...] = ()

    @classmethod
    def of(cls, rows: Sequence[Any]) -> KeyOrder:
        """The order of the fullest record, and of the fullest custom fields object."""
        records = [row for row in rows if type(row) is dict]
        holders = [row.get("custom_fields") for row in records]
        fullest = max(records, key=len, default={})
        custom = max((h for h in holders if type(h) is dict), key=len, default={})
        return cls(tuple(fullest), tuple(custom))

    @staticmethod
    def arrange(keys: Iterable[str], order: Sequence[str]) -> list[str]:
        """`keys` in `order`, those it lacks after them (sorted)."""
        wanted = set(keys)
        first = [key for key in order if key in wanted]
        return first + sorted(wanted.difference(first))


def _parsed(raws: Iterable[Any]) -> list[Any]:
    """Raw JSON values (empty for missing) → their values, in one orjson call."""
    return orjson.loads(b"[" + b",".join([raw or _NULL for raw in raws]) + b"]")


class PageSchema:
    """The explicit schema of an entity's pages, narrowed for the rest of the run to leave out
    the keys that held values of another JSON type than declared (messy accounts have them
    on every page): those columns alone then come from the records' values (`LeftOut`), by
    the exact converters, instead of the whole page taking the exact path. Shared by decode
    threads."""

    def __init__(
        self,
        fields: list[pa.Field],
        custom: list[pa.Field] | None,
        standard: Sequence[str] = (),
        planned: Sequence[str] | None = None,
    ) -> None:
        self.fields = fields
        self.custom = custom
        self.standard = tuple(standard) or tuple(f.name for f in fields)
        self.planned = planned
        self.messy: frozenset[str] = frozenset()  # standard keys left out
        self.messy_custom: frozenset[str] = frozenset()  # custom field keys left out
        self.undeclared: frozenset[str] = frozenset()  # keys seen outside the schema
        self.order = KeyOrder()  # of the keys in the records that narrowed the reading
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
            undeclared = self.undeclared | _keys(rows, self.standard)
            if (
                self.reading.infer
                or messy != self.messy
                or messy_custom != self.messy_custom
                or undeclared != self.undeclared
            ):
                self.messy, self.messy_custom = messy, messy_custom
                self.undeclared = undeclared
                self.order = KeyOrder.of(rows)
                self.reading = self._narrowed_reading()
            return self.reading

    def learn_undeclared(self, reading: Reading, keys: Iterable[str]) -> None:
        """Keys outside the schema that `reading`'s records held: the pages after it read
        them with the rest of what arrow leaves out, instead of being parsed whole."""
        with self._lock:
            undeclared = self.undeclared | set(keys)
            if reading is self.reading and undeclared != self.undeclared:
                self.undeclared = undeclared
                self.reading = self._narrowed_reading()

    def _narrowed_reading(self) -> Reading:
        fields = [f for f in self.fields if f.name not in self.messy]
        custom = None
        if self.custom is not None and "custom_fields" not in self.messy:
            custom = [f for f in self.custom if f.name not in self.messy_custom]
        read = {f.name for f in fields} | {"custom_fields"}
        custom_read = {f.name for f in custom or ()}
        left_out = LeftOut(
            [name for name in self.standard if name not in read],
            self.standard,
            None if self.planned is None else [k for k in self.planned if k not in custom_read],
            self.planned,
            self.undeclared,
            self.order,
        )
        return Reading(self._schema(fields, custom, envelope=True), infer=False, left_out=left_out)


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


class ColumnarPage(PageItems):
    """Records as one arrow struct array, plus the page bodies for the exact path.

    `fill_from_rows`: the page was read without some keys (`Reading`); every column the arrow
    records lack is then taken from `left_out`, the records' values of those keys.
    """

    def __init__(
        self,
        records: pa.StructArray,
        *contents: bytes,
        reading: Reading | None = None,
        rows: list[dict[str, Any]] | None = None,
        left_out: RecordValues | None = None,
    ) -> None:
        self.records = records
        self.contents = contents
        self.reading = reading
        self._rows = rows
        self._left_out = left_out

    @property
    def fill_from_rows(self) -> bool:
        return self.reading is not None and not self.reading.infer

    @property
    def left_out(self) -> RecordValues:
        """The values of the keys the reading left out (parsing the records if need be)."""
        if self._left_out is None:
            assert self.reading is not None and self.reading.left_out is not None
            self._left_out = self.reading.left_out.from_rows(self.rows())
        return self._left_out

    @property
    def parsed(self) -> bool:
        """Whether the records have been parsed whole (`rows`)."""
        return self._rows is not None

    def __len__(self) -> int:
        return len(self.records)

    def rows(self) -> list[dict[str, Any]]:
        """The records as orjson parses them (for the exact path), parsed once."""
        if self._rows is None:
            self._rows = [row for body in self.contents for row in orjson.loads(body)["data"]]
        return self._rows

    @classmethod
    def joined(cls, parts: Sequence[PageItems]) -> ColumnarPage | None:
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
        left_out = RecordValues.concat([page.left_out for page in pages]) if narrowed else None
        return cls(records, *contents, reading=pages[0].reading, left_out=left_out)


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
    JSON type (`PageSchema.narrowed`), and so are the pages after it; the values of the keys
    left out are read here too (`LeftOut`), in the decode thread.
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
    left_out = None
    if reading.left_out is not None:
        left_out = reading.left_out.read(content, len(records)) if rows is None else None
        if left_out is None:  # only the parsed records give them
            rows = rows if rows is not None else _records(content)
            if rows is None or len(rows) != len(records):
                return None
            left_out = reading.left_out.from_rows(rows)
            schema.learn_undeclared(reading, left_out.undeclared)
    body["data"] = ColumnarPage(records, content, reading=reading, rows=rows, left_out=left_out)
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
        """A standard key's values as the parsed records hold them."""
        if self.page.fill_from_rows and name in self.page.left_out.standard:
            return self.page.left_out.standard[name]
        return [row.get(name) for row in self.page.rows()]

    def table(self) -> pa.Table:
        for name, dtype in self.standard.items():
            if name not in self.constants:
                self.add(name, *self.standard_column(name, dtype))
        skip = set(self.standard) | set(self.constants) | {"custom_fields"}
        if self.page.fill_from_rows:  # undeclared keys were not parsed by arrow
            undeclared = self.page.left_out.undeclared
            for name in sorted(set(undeclared) - skip):
                self.add(name, string_array([as_text(v) for v in undeclared[name]]))
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
        if pa.types.is_string(array.type):
            return per_distinct(partial(convert, data_type=dtype), array)
        values = array.to_pylist() if _lossless(array.type) else self.from_rows(name)
        return typed_column(values, dtype)

    def custom_columns(self, plan: ColumnPlan) -> None:
        holder = self.columns.get("custom_fields")
        fields = _struct_children(holder) if holder is not None else {}
        planned = {fp.field.key for fp in plan.fields}
        reading = self.page.reading
        if reading is not None and reading.left_out is not None:  # undeclared keys ignored
            if reading.left_out.planned == planned:
                unknown = self.page.left_out.unknown_custom
            else:  # read for other definitions than these
                unknown = not set().union(*self.custom_holders()) <= planned
        else:
            unknown = not set(fields) <= planned
        if unknown:
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
        raw = self.page.left_out.custom.get(fp.field.key)
        if raw is None:  # not left out by the plan the page was read for
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
            elif pa.types.is_string(values.type):
                self.add(out.name, *per_distinct(out.convert, values))
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
