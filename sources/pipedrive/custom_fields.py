"""Pipedrive custom fields: definitions -> column plan -> typed pyarrow arrays, page by page.

Pure module: no I/O, no HTTP, no dlt calls. The hot path is `normalize_page`, which turns a
page of records (dicts parsed from JSON) into one pyarrow array per output column.

Data types are dlt data types. Arrow types emitted (`ARROW_TYPES`): text -> string,
double -> float64, bigint -> int64, bool -> bool_, date -> date32, time -> time64[us],
json -> string holding JSON text (orjson); the warehouse column gets the ``json`` hint through
`ColumnPlan.columns`.

Outputs by Pipedrive ``field_type`` (``<col>`` is the field's column, see `naming`):

=====================================================  =========================================
varchar, varchar_auto, text, phone, varchar_options,    ``<col>`` text
lead
double / int / boolean                                  ``<col>`` double / bigint / bool
user, org, people, deal, project, stage, activity       ``<col>`` bigint (int, numeric string, or
                                                        an object's ``value``, else its ``id``)
monetary                                                ``<col>`` double, ``<col>_currency`` text
date                                                    ``<col>`` date
daterange                                               ``<col>``, ``<col>_until`` date
time                                                    ``<col>`` time, ``<col>_timezone`` text
                                                        (zone *name*, e.g. ``Europe/Berlin``)
timerange                                               ``<col>``, ``<col>_until`` time
enum                                                    ``<col>`` text: the option label; an
                                                        unknown (deleted) option id -> the id
set                                                     ``<col>`` json: array of labels, unknown
                                                        ids kept as id text; empty/null -> null
address                                                 ``<col>`` text (``value``, else
                                                        ``formatted_address``) and
                                                        ``<col>_<component>`` text for
                                                        `ADDRESS_COMPONENTS` plus any extra
                                                        subfield of the definition
anything else (unknown/future types)                    ``<col>`` json: the raw value
=====================================================  =========================================

Value shapes: v2 records nest values in ``row["custom_fields"][hash]`` (objects for compound
types: ``{"value", "currency"}``, ``{"value", "until"}``, ``{"value", "timezone_id",
"timezone_name"}``, address components); v1 records are flat: ``<hash>`` plus ``<hash>_currency``,
``<hash>_until``, ``<hash>_timezone_name``, ``<hash>_<component>``. enum/set values may be ids
(int or numeric string), ``"12,13"`` strings (v1 sets), lists, or ``{"id", "label"}`` objects.

Bad values never fail a run: every output is converted by `convert`, the one conversion layer
(its docstring has the rules). Text outputs take anything (non-strings as their JSON text);
in typed outputs a blank string is null, and a value that does not fit becomes null with its
raw text in the variant column ``<output>__v_text`` (`VARIANT_SUFFIX`), which appears in the
result only when the page actually has such a value - like dlt's own variant columns. Id
references (user, org, people, ...) also take an object's ``value``, else its ``id``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import Any, Final, Literal

import orjson
import pyarrow as pa

from sources.pipedrive.convert import (
    ARROW_TYPES,
    BAD,
    VARIANT_SUFFIX,
    Variants,
    convert,
    json_text,
    parse_bigint,
    string_array,
)
from sources.pipedrive.entities import Api
from sources.pipedrive.naming import assign_column_names, readable_name

__all__ = [
    "ADDRESS_COMPONENTS",
    "ARROW_TYPES",
    "VARIANT_SUFFIX",
    "ColumnPlan",
    "FieldDef",
    "FieldOption",
    "FieldPlan",
    "LabelChange",
    "OutputColumn",
    "V2Output",
    "build_plan",
    "custom_field_key",
    "field_outputs",
    "is_custom_key",
    "known_labels",
    "normalize_page",
    "normalize_v2_field",
    "option_ids",
    "option_label_changes",
    "parse_definitions",
    "renamed_options",
    "v2_holders",
]

ADDRESS_COMPONENTS: Final[tuple[str, ...]] = (
    "street_number",
    "route",
    "sublocality",
    "locality",
    "admin_area_level_1",
    "admin_area_level_2",
    "country",
    "postal_code",
    "subpremise",
    "formatted_address",
)
_MAX_COMPONENT_LENGTH = max(len(c) for c in ADDRESS_COMPONENTS)

_TEXT_TYPES = frozenset({"varchar", "varchar_auto", "text", "phone", "varchar_options", "lead"})
_ID_TYPES = frozenset({"user", "org", "people", "deal", "project", "stage", "activity"})
_SIMPLE_KINDS: Mapping[str, str] = {
    "double": "double",
    "int": "bigint",
    "boolean": "bool",
    "date": "date",
    "enum": "enum",
    "set": "set",
}
# converter kind -> dlt data type
_KIND_TYPES: Mapping[str, str] = {
    "text": "text",
    "enum": "text",
    "double": "double",
    "bigint": "bigint",
    "bool": "bool",
    "date": "date",
    "time": "time",
    "set": "json",
    "json": "json",
}

_HASH_RE = re.compile(r"[0-9a-fA-F]{40}")
_HASH_PREFIX_RE = re.compile(r"[0-9a-fA-F]{40}(?:_|$)")


def is_custom_key(key: str) -> bool:
    """True if `key` is a custom field hash or one of its v1 suffix keys (``<hash>_currency``)."""
    return _HASH_PREFIX_RE.match(key) is not None


def custom_field_key(key: str) -> str | None:
    """The field hash of a custom key (`is_custom_key`): ``<hash>_currency`` -> ``<hash>``."""
    return key[:40] if _HASH_PREFIX_RE.match(key) is not None else None


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class FieldOption:
    id: int | str
    label: str


@dataclass(frozen=True)
class FieldDef:
    key: str
    name: str
    field_type: str
    options: tuple[FieldOption, ...]
    is_custom: bool
    is_active: bool = True
    subfields: tuple[str, ...] = ()  # subfield suffixes: ("currency",), address components

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        """Suffix of every output column, ``""`` (the field's column itself) first."""
        return tuple(p.suffix for p in _layout(self))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, e.g. to remember definitions of fields that may get deleted."""
        return {
            "key": self.key,
            "name": self.name,
            "field_type": self.field_type,
            "options": [{"id": o.id, "label": o.label} for o in self.options],
            "is_custom": self.is_custom,
            "is_active": self.is_active,
            "subfields": list(self.subfields),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldDef:
        """Inverse of `to_dict`."""
        return cls(
            key=str(data["key"]),
            name=str(data.get("name") or ""),
            field_type=str(data.get("field_type") or ""),
            options=tuple(
                FieldOption(o["id"], str(o.get("label") or "")) for o in data.get("options") or ()
            ),
            is_custom=bool(data.get("is_custom", True)),
            is_active=bool(data.get("is_active", True)),
            subfields=tuple(str(s) for s in data.get("subfields") or ()),
        )


def _parse_options(raw: Any) -> tuple[FieldOption, ...]:
    if not isinstance(raw, list):
        return ()
    options = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        oid = item.get("id")
        if oid is None or isinstance(oid, bool) or not isinstance(oid, int | str):
            continue
        label = item.get("label")
        options.append(FieldOption(oid, str(oid) if label is None else str(label)))
    return tuple(options)


def _parse_subfields(raw: Any, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    out: list[str] = []
    for item in raw:
        if isinstance(item, Mapping):
            code = item.get("field_code") or item.get("key")
        elif isinstance(item, str):
            code = item
        else:
            continue
        if not isinstance(code, str) or not code:
            continue
        if code.startswith(key + "_"):
            code = code[len(key) + 1 :]
        if code and code != key and code not in out:
            out.append(code)
    return tuple(out)


def parse_definitions(raw: Sequence[Mapping[str, Any]], api: Api) -> list[FieldDef]:
    """Parse a *Fields endpoint's ``data`` list (v1 or v2 shape) into `FieldDef`s.

    Items without a key are skipped; other missing or null members get defaults. A field is
    custom if v2 says ``is_custom_field`` (v1: if its key is a 40-hex hash; v2 falls back to that
    test when the flag is missing). ``active_flag: false`` or ``is_deleted: true`` -> inactive.
    ``options_deleted`` (v1) is ignored: ids of deleted options are emitted as id text.
    """
    defs: list[FieldDef] = []
    v2 = api == Api.V2
    for item in raw or ():
        if not isinstance(item, Mapping):
            continue
        key = item.get("field_code") if v2 else item.get("key")
        if v2 and not key:
            key = item.get("key")
        if not isinstance(key, str) or not key:
            continue
        name = item.get("field_name") if v2 else item.get("name")
        if name is None:
            name = item.get("name") if v2 else item.get("field_name")
        flag = item.get("is_custom_field") if v2 else None
        is_custom = flag if isinstance(flag, bool) else _HASH_RE.fullmatch(key) is not None
        is_active = item.get("active_flag") is not False and item.get("is_deleted") is not True
        defs.append(
            FieldDef(
                key=key,
                name="" if name is None else str(name),
                field_type=str(item.get("field_type") or ""),
                options=_parse_options(item.get("options")),
                is_custom=is_custom,
                is_active=is_active,
                subfields=_parse_subfields(item.get("subfields"), key),
            )
        )
    return defs


# --------------------------------------------------------------------------- layout

# How one output column is read: v2 mode / member, v1 key suffix.
_RAW, _UNWRAP, _ADDRESS, _MEMBER = "raw", "unwrap", "address", "member"


@dataclass(frozen=True)
class _Part:
    suffix: str  # output column suffix ("" for the field's column)
    kind: str  # converter kind, see _KIND_TYPES
    v2_mode: str
    member: str = ""  # v2 object member for _MEMBER
    v1_suffix: str = ""  # v1: the value lives at row[key + v1_suffix]


def _layout(fd: FieldDef) -> tuple[_Part, ...]:
    ft = fd.field_type
    if ft in _TEXT_TYPES:
        return (_Part("", "text", _RAW),)
    if ft in _ID_TYPES:
        return (_Part("", "bigint", _RAW),)
    if ft in _SIMPLE_KINDS:
        return (_Part("", _SIMPLE_KINDS[ft], _RAW),)
    if ft == "monetary":
        return (
            _Part("", "double", _UNWRAP),
            _Part("_currency", "text", _MEMBER, "currency", "_currency"),
        )
    if ft in ("daterange", "timerange"):
        kind = "date" if ft == "daterange" else "time"
        return (_Part("", kind, _UNWRAP), _Part("_until", kind, _MEMBER, "until", "_until"))
    if ft == "time":
        return (
            _Part("", "time", _UNWRAP),
            _Part("_timezone", "text", _MEMBER, "timezone_name", "_timezone_name"),
        )
    if ft == "address":
        parts = [_Part("", "text", _ADDRESS)]
        seen = {""}
        for comp in (*ADDRESS_COMPONENTS, *fd.subfields):
            if comp == "value":
                continue
            suffix = readable_name(comp)[:_MAX_COMPONENT_LENGTH].rstrip("_")
            if not suffix or suffix in seen:
                continue
            seen.add(suffix)
            parts.append(_Part("_" + suffix, "text", _MEMBER, comp, "_" + comp))
        return tuple(parts)
    return (_Part("", "json", _RAW),)


def _v1_extra_suffixes(fd: FieldDef) -> tuple[str, ...]:
    if fd.field_type in ("time", "timerange"):
        return ("_timezone_id", "_timezone_name")
    return ()


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class OutputColumn:
    name: str
    data_type: str


@dataclass(frozen=True)
class FieldPlan:
    field: FieldDef
    column: str
    outputs: tuple[OutputColumn, ...]
    labels: Mapping[str, str]  # option id as str -> label

    @cached_property
    def _compiled(self) -> _Compiled:
        return _Compiled.of(self)

    @cached_property
    def v2_outputs(self) -> tuple[V2Output, ...]:
        """How each output is found in a v2 `custom_fields` value and converted."""
        return tuple(
            V2Output(part.name, layout.kind, part.v2_mode, part.member, part.convert)
            for part, layout in zip(self._compiled.parts, _layout(self.field), strict=False)
        )


@dataclass(frozen=True)
class ColumnPlan:
    fields: tuple[FieldPlan, ...]

    def columns(self) -> dict[str, dict[str, Any]]:
        """dlt column hints for every output column (inactive pinned fields included)."""
        return {
            o.name: {"name": o.name, "data_type": o.data_type, "nullable": True}
            for fp in self.fields
            for o in fp.outputs
        }

    def v1_keys(self) -> frozenset[str]:
        """Every top-level key a v1 record uses for the planned custom fields."""
        keys: set[str] = set()
        for fp in self.fields:
            fd = fp.field
            keys.add(fd.key)
            keys.update(fd.key + p.v1_suffix for p in _layout(fd) if p.v1_suffix)
            keys.update(fd.key + s for s in _v1_extra_suffixes(fd))
            keys.update(f"{fd.key}_{s}" for s in fd.subfields)
        return frozenset(keys)


def _plan_field(fd: FieldDef, column: str) -> FieldPlan:
    labels: dict[str, str] = {}
    for o in fd.options:
        labels.setdefault(str(o.id), o.label)
    outputs = tuple(OutputColumn(column + p.suffix, _KIND_TYPES[p.kind]) for p in _layout(fd))
    return FieldPlan(field=fd, column=column, outputs=outputs, labels=labels)


def field_outputs(fd: FieldDef, column: str) -> tuple[OutputColumn, ...]:
    """The output columns (names and dlt data types) `fd` writes as `column`."""
    return _plan_field(fd, column).outputs


def build_plan(
    definitions: Sequence[FieldDef],
    reserved: AbstractSet[str],
    pinned: Mapping[str, str],
    *,
    previous: Iterable[FieldDef] = (),
    taken: AbstractSet[str] = frozenset(),
) -> tuple[ColumnPlan, dict[str, str]]:
    """Plan the columns of the custom fields in `definitions` (non-custom ones are ignored).

    Returns the plan and the updated pins (old pins + new fields) to store for the next run.
    Plan order: custom definitions in definition order (first wins for duplicate keys), then
    pinned fields missing from `definitions` (deleted fields) in pin order. A deleted field is
    planned from its definition in `previous` (e.g. stored with `FieldDef.to_dict`) with
    ``is_active=False``, so its columns stay in `ColumnPlan.columns` and only get nulls. Without a
    previous definition its type is unknown: it is listed with ``field_type=""``,
    ``is_active=False`` and *no* outputs (no type is declared for its existing column).
    New fields never take a name in `taken` (e.g. columns keeping a retyped field's history) nor
    any output name of a deleted field.
    """
    custom: dict[str, FieldDef] = {}
    for d in definitions:
        if d.is_custom:
            custom.setdefault(d.key, d)
    prev = {d.key: d for d in previous}
    # every output column of a deleted field keeps its history: no new field may take one
    retired = {
        o.name
        for key, column in pinned.items()
        if key not in custom and key in prev
        for o in field_outputs(prev[key], column)
    }
    names = assign_column_names(list(custom.values()), reserved, pinned, taken | retired)

    plans = [_plan_field(d, names[d.key]) for d in custom.values()]
    for key, column in pinned.items():
        if key in custom:
            continue
        if key in prev:
            plans.append(_plan_field(replace(prev[key], is_active=False), column))
        else:
            ghost = FieldDef(key, column, "", (), is_custom=True, is_active=False)
            plans.append(FieldPlan(field=ghost, column=column, outputs=(), labels={}))
    return ColumnPlan(tuple(plans)), names


# --------------------------------------------------------------------------- label changes


@dataclass(frozen=True)
class LabelChange:
    column: str
    field_type: Literal["enum", "set"]
    old_label: str
    new_label: str


def known_labels(plan: ColumnPlan) -> dict[str, dict[str, str]]:
    """field key -> {option id -> label} for every enum/set field, to store for the next run."""
    return {
        fp.field.key: dict(fp.labels)
        for fp in plan.fields
        if fp.field.field_type in ("enum", "set")
    }


def option_label_changes(
    previous: Mapping[str, Mapping[str, str]], plan: ColumnPlan
) -> list[LabelChange]:
    """Options of enum/set fields whose label changed since `previous` (see `known_labels`).

    A change (option id kept, label changed) is reported only when it is unambiguous, so that
    rewriting stored values ``old_label -> new_label`` is safe in any order:

    * the old label belonged to exactly one option in `previous`,
    * no other option carries the old label now, and
    * no other option carried the new label in `previous` (rules out swaps and chains).

    Options added or deleted since are not changes. Order: plan order, then option order.
    """
    changes: list[LabelChange] = []
    for fp in plan.fields:
        ft = fp.field.field_type
        if ft not in ("enum", "set"):
            continue
        kind: Literal["enum", "set"] = "enum" if ft == "enum" else "set"
        changes.extend(renamed_options(fp.column, kind, previous.get(fp.field.key), fp.labels))
    return changes


def renamed_options(
    column: str,
    kind: Literal["enum", "set"],
    old: Mapping[str, str] | None,
    new: Mapping[str, str],
) -> list[LabelChange]:
    """The unambiguous label changes of one label column (rules: `option_label_changes`)."""
    if not old:
        return []
    old_counts = Counter(old.values())
    changes: list[LabelChange] = []
    for oid, new_label in new.items():
        old_label = old.get(oid)
        if old_label is None or old_label == new_label or old_counts[old_label] > 1:
            continue
        if any(lbl == old_label for k, lbl in new.items() if k != oid):
            continue
        if any(lbl == new_label for k, lbl in old.items() if k != oid):
            continue
        changes.append(LabelChange(column, kind, old_label, new_label))
    return changes


def option_ids(value: Any) -> list[str]:
    """Option ids held by an enum or set value in either API shape ("12", 12, "12,13", [12])."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        value = value.get("id", value.get("value"))
    if isinstance(value, list):
        return [str(v.get("id") if isinstance(v, dict) else v) for v in value if v is not None]
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(value)]


# --------------------------------------------------------------------------- conversion

_NONE = type(None)
_KEY_OK = frozenset({int, str, _NONE})
_EMPTY: Mapping[str, Any] = {}
_MISS: Any = object()
_ID_RE = re.compile(r"[+-]?\d+")
_STRING = pa.string()


def _parse_reference(v: Any) -> Any:
    """An id: an integer as `convert` reads it, or an object's ``value``, else its ``id``."""
    if type(v) is not dict:
        return parse_bigint(v)
    inner = v.get("value")
    if inner is None:
        inner = v.get("id")
    if inner is None:
        return None if ("value" in v or "id" in v) else BAD
    return BAD if type(inner) is dict else parse_bigint(inner)


class _Labels:
    """Option lookup by int or str id, or by ``{"id", "label"}`` object."""

    __slots__ = ("by_id",)

    def __init__(self, labels: Mapping[str, str]) -> None:
        by_id: dict[Any, str] = {}
        for k, label in labels.items():
            by_id[k] = label
            if _ID_RE.fullmatch(k):
                by_id.setdefault(int(k), label)
        self.by_id = by_id

    def label(self, v: Any) -> str:
        """Label of one option value (never None): unknown ids -> their text."""
        t = type(v)
        if t is int or t is str:
            found = self.by_id.get(v)
            if found is not None:
                return found
            return str(v) if t is int else v
        if t is float and v.is_integer():
            return self.label(int(v))
        if t is dict:
            oid = v.get("id")
            if oid is None:
                oid = v.get("value")
            if (type(oid) is int or type(oid) is str) and oid in self.by_id:
                return self.by_id[oid]
            label = v.get("label")
            if type(label) is str:
                return label
            if oid is not None:
                return self.label(oid)
        return json_text(v)


def _conv_enum(vals: list[Any], labels: _Labels) -> tuple[pa.Array, Variants]:
    types = set(map(type, vals))
    if types <= _KEY_OK:
        get = labels.by_id.get
        out = [get(v, v) for v in vals]
        if int in types:
            out = [str(v) if type(v) is int else v for v in out]
        return string_array(out), None
    lab = labels.label
    return string_array([None if v is None else lab(v) for v in vals]), None


def _set_text(v: Any, labels: _Labels) -> str | None:
    if type(v) is str:
        items: Iterable[Any] = [p.strip() for p in v.split(",")]
    elif type(v) is list or type(v) is tuple:
        items = v
    else:
        items = (v,)
    lab = labels.label
    out = [lab(x) for x in items if x is not None and x != ""]
    return json_text(out) if out else None


def _conv_set(vals: list[Any], labels: _Labels) -> tuple[pa.Array, Variants]:
    by_id = labels.by_id
    dumps = orjson.dumps
    out: list[str | None] = []
    memo: dict[str, str | None] = {}  # v1 "12,13" strings repeat across a page
    for v in vals:
        if v is None:
            out.append(None)
        elif type(v) is list:
            try:  # common v2 case: a list of known int ids
                out.append(dumps([by_id[x] for x in v]).decode() if v else None)
            except (KeyError, TypeError):  # unknown ids, objects, unencodable labels
                out.append(_set_text(v, labels))
        elif type(v) is str:
            text = memo.get(v, _MISS)
            if text is _MISS:
                text = memo[v] = _set_text(v, labels)
            out.append(text)
        else:
            out.append(_set_text(v, labels))
    return string_array(out), None


_CONVERTERS: Mapping[str, Callable[[list[Any]], tuple[pa.Array, Variants]]] = {
    "text": partial(convert, data_type="text"),
    "json": partial(convert, data_type="json"),
    "double": partial(convert, data_type="double"),
    "bigint": partial(convert, data_type="bigint", parse=_parse_reference),
    "bool": partial(convert, data_type="bool"),
    "date": partial(convert, data_type="date"),
    "time": partial(convert, data_type="time"),
}


@dataclass(frozen=True)
class _CompiledPart:
    name: str
    convert: Callable[[list[Any]], tuple[pa.Array, Variants]]
    v2_mode: str
    member: str
    v1_key: str


@dataclass(frozen=True)
class _Compiled:
    key: str
    parts: tuple[_CompiledPart, ...]
    v1_address_fallback: str

    @classmethod
    def of(cls, fp: FieldPlan) -> _Compiled:
        fd = fp.field
        labels = _Labels(fp.labels)
        parts = []
        for part, out in zip(_layout(fd), fp.outputs, strict=False):
            convert: Callable[[list[Any]], tuple[pa.Array, Variants]]
            if part.kind == "enum":
                convert = partial(_conv_enum, labels=labels)
            elif part.kind == "set":
                convert = partial(_conv_set, labels=labels)
            else:
                convert = _CONVERTERS[part.kind]
            parts.append(
                _CompiledPart(out.name, convert, part.v2_mode, part.member, fd.key + part.v1_suffix)
            )
        return cls(fd.key, tuple(parts), fd.key + "_formatted_address")

    def values(
        self, part: _CompiledPart, rows: Sequence[Mapping[str, Any]], raw: list[Any] | None
    ) -> list[Any]:
        """Raw values of one output: v2 when `raw` (the field's values) is given, else v1."""
        if raw is not None:
            mode = part.v2_mode
            if mode == _RAW:
                return raw
            if mode == _UNWRAP:
                return [v.get("value") if type(v) is dict else v for v in raw]
            if mode == _MEMBER:
                m = part.member
                return [v.get(m) if type(v) is dict else None for v in raw]
            return [_address_value(v) if type(v) is dict else v for v in raw]
        k = part.v1_key
        vals = [r.get(k) for r in rows]
        if part.v2_mode == _ADDRESS:
            fb = self.v1_address_fallback
            vals = [rows[i].get(fb) if v is None else v for i, v in enumerate(vals)]
        return vals


def _address_value(v: dict[str, Any]) -> Any:
    full = v.get("value")
    return v.get("formatted_address") if full is None else full


def normalize_page(
    rows: Sequence[Mapping[str, Any]], plan: ColumnPlan, shape: Api
) -> dict[str, pa.Array]:
    """One array per output column (plan order), each ``len(rows)`` long.

    A variant column ``<output>__v_text`` follows its output only when some value of the page
    could not be converted. Rows whose ``custom_fields`` (v2) is missing, null or not an object
    give nulls.
    """
    result: dict[str, pa.Array] = {}
    v2 = shape == Api.V2
    holders = v2_holders(rows) if v2 else []
    for fp in plan.fields:
        raw = [cf.get(fp.field.key) for cf in holders] if v2 else None
        result.update(_normalize_field(fp, rows, raw))
    return result


def v2_holders(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each v2 record's ``custom_fields`` object (an empty one where it is missing or odd)."""
    return [
        cf if type(cf) is dict or isinstance(cf, Mapping) else _EMPTY
        for cf in (r.get("custom_fields") for r in rows)
    ]


def normalize_v2_field(fp: FieldPlan, raw: list[Any]) -> dict[str, pa.Array]:
    """`normalize_page` for one field of v2 records, from its values (one per record)."""
    return _normalize_field(fp, (), raw)


def _normalize_field(
    fp: FieldPlan, rows: Sequence[Mapping[str, Any]], raw: list[Any] | None
) -> dict[str, pa.Array]:
    result: dict[str, pa.Array] = {}
    comp = fp._compiled
    for part in comp.parts:
        arr, variants = part.convert(comp.values(part, rows, raw))
        result[part.name] = arr
        if variants is not None:
            result[part.name + VARIANT_SUFFIX] = pa.array(variants, _STRING)
    return result


@dataclass(frozen=True)
class V2Output:
    """One output column of a planned field, as the columnar path (`columnar`) reads it."""

    name: str
    kind: str  # converter kind: text, double, bigint, bool, date, time, enum, set, json
    mode: str  # where the value sits in a v2 record: raw, unwrap, member, address
    member: str  # the object member for mode "member"
    convert: Callable[[list[Any]], tuple[pa.Array, Variants]]  # the exact converter
